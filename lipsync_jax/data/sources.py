"""grain data source and per-clip window bookkeeping.

The data source is deliberately light: record ``i`` is clip ``i % num_clips``
of the split (so an epoch of ``num_clips * windows_per_clip`` records visits
every clip ``windows_per_clip`` times). The seeded random transforms in
``pipeline.py`` pick the windows inside the clip and read frames and mel from
the shards.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any

import numpy as np

from lipsync_jax.data import format as fmt

WINDOW = 5       # frames per window (Wav2Lip T)
MEL_WINDOW = 16  # mel columns per window
MEL_STEPS_PER_SECOND = 80


def mel_start(frame: int, fps: float) -> int:
  """Mel column where frame ``frame``'s window starts: int(80 * frame / fps).

  The alignment convention shared by training and inference (no upstream -1
  shift): frame i's per-frame window is columns [int(80 i / fps), +16); the
  5-frame sync window starting at frame f starts at int(80 f / fps) too.
  """
  return int(MEL_STEPS_PER_SECOND * frame / fps)


def mel_starts(frames: np.ndarray, fps: float) -> np.ndarray:
  """Vectorised ``mel_start`` for an int array of frames."""
  return (np.asarray(frames, np.int64) * MEL_STEPS_PER_SECOND / fps).astype(
      np.int64)


@dataclasses.dataclass
class ClipWindows:
  """Valid window starts of one clip.

  Attributes:
    face: starts f whose frames f..f+4 all have a face.
    sync: starts in ``face`` whose sync mel window fits in the clip.
    gen: starts in ``face`` whose 5 per-frame mel windows fit in the clip.
  """

  face: np.ndarray
  sync: np.ndarray
  gen: np.ndarray


def clip_windows(clip: fmt.ClipMeta) -> ClipWindows:
  t = clip.num_frames - WINDOW + 1
  if t <= 0:
    e = np.zeros((0,), np.int64)
    return ClipWindows(e, e, e)
  found = np.asarray(clip.found, bool)
  run = np.ones((t,), bool)
  for k in range(WINDOW):
    run &= found[k:k + t]
  face = np.nonzero(run)[0]
  starts = mel_starts(face, clip.fps)
  sync = face[starts + MEL_WINDOW <= clip.mel_cols]
  last = mel_starts(face + WINDOW - 1, clip.fps)
  gen = face[last + MEL_WINDOW <= clip.mel_cols]
  return ClipWindows(face=face, sync=sync, gen=gen)


def syncnet_audio_starts(w: ClipWindows, min_offset: int) -> np.ndarray:
  """Sync starts f that have a negative face window g, |g - f| >= min_offset."""
  if len(w.face) == 0 or len(w.sync) == 0:
    return w.sync
  lo, hi = w.face.min(), w.face.max()
  return w.sync[(w.sync - lo >= min_offset) | (hi - w.sync >= min_offset)]


def generator_starts(w: ClipWindows, ref_min_offset: int,
                     context: int = 0) -> np.ndarray:
  """Target starts f that have a reference window r, |r - f| >= offset.

  With ``context`` c > 0, also frames f - c .. f + 4 + c all have a face
  (the 5 + 2c frames of a SyncTalkFace sample: a lip window centred on every
  target frame).
  """
  if len(w.face) == 0 or len(w.gen) == 0:
    return w.gen
  lo, hi = w.face.min(), w.face.max()
  out = w.gen[(w.gen - lo >= ref_min_offset) | (hi - w.gen >= ref_min_offset)]
  if context > 0:
    # Window starts s in `face` cover frames s..s+4; f-c..f+4+c is covered
    # by the windows starting at f-c .. f+c.
    face = set(w.face.tolist())
    keep = [f for f in out.tolist()
            if all(s in face for s in range(f - context, f + context + 1))]
    out = np.asarray(keep, np.int64)
  return out


def eligible_clips(clips: list[fmt.ClipMeta], kind: str, min_offset: int,
                   ref_min_offset: int, context: int = 0) -> list[fmt.ClipMeta]:
  """Clips that can give at least one sample of ``kind``; logs the others."""
  out, dropped = [], []
  for c in clips:
    w = clip_windows(c)
    starts = (syncnet_audio_starts(w, min_offset) if kind == "syncnet" else
              generator_starts(w, ref_min_offset, context))
    (out if len(starts) else dropped).append(c)
  if dropped:
    logging.warning("%d clip(s) too short for a %s sample, left out: %s",
                    len(dropped), kind,
                    ", ".join(c.clip_id for c in dropped[:5]) +
                    (" ..." if len(dropped) > 5 else ""))
  return out


class ClipSource:
  """Record i -> {"clip": i % num_clips}; len = num_clips * windows_per_clip.

  A grain RandomAccessDataSource (the protocol: __len__ and __getitem__).
  """

  def __init__(self, num_clips: int, windows_per_clip: int = 1):
    if num_clips <= 0:
      raise fmt.DatasetFormatError("no usable clips in this split")
    if windows_per_clip < 1:
      raise ValueError(f"windows_per_clip must be >= 1, got {windows_per_clip}")
    self.num_clips = num_clips
    self.windows_per_clip = windows_per_clip

  def __len__(self) -> int:
    return self.num_clips * self.windows_per_clip

  def __getitem__(self, record_key: int) -> dict[str, int]:
    return {"clip": int(record_key) % self.num_clips}

  def __repr__(self) -> str:
    return (f"ClipSource(num_clips={self.num_clips}, "
            f"windows_per_clip={self.windows_per_clip})")


class EpochSampler:
  """A grain Sampler: a fresh seeded permutation of all records every epoch.

  Global stream position ``index`` (the DataLoader of process ``s`` asks for
  s, s + shard_count, ...) maps to epoch e = (index // shard_count) // m and
  position p = (index // shard_count) % m, where m is the per-process epoch
  length; the record is ``perm_e[shard_index * m + p]``, so in every epoch the
  processes read disjoint slices of one global permutation (records beyond
  ``m * shard_count`` are left out of that epoch when drop_remainder). The
  per-record rng is Philox(seed + index), as in grain's IndexSampler.
  (grain's IndexSampler is avoided because its index_shuffle costs ~30 ms per
  record on small datasets, and it shuffles within a fixed shard.)
  """

  def __init__(self, num_records: int, shard_options: Any,
               shuffle: bool, num_epochs: int | None, seed: int):
    if num_records <= 0:
      raise ValueError("num_records must be positive")
    self.num_records = num_records
    self.shard_options = shard_options
    self.shuffle = shuffle
    self.num_epochs = num_epochs
    self.seed = int(seed)
    n, k, s = num_records, shard_options.shard_count, shard_options.shard_index
    if shard_options.drop_remainder:
      self._m = [n // k] * k
    else:
      self._m = [n // k + (i < n % k) for i in range(k)]
    if self._m[s] == 0:
      raise ValueError(f"{n} record(s) are too few for {k} processes")
    self._start = int(sum(self._m[:s]))
    self._cache: dict[int, np.ndarray] = {}

  def __len__(self) -> int:
    if self.num_epochs is None:
      return sys.maxsize
    k = self.shard_options.shard_count
    s = self.shard_options.shard_index
    # The DataLoader reads len // k records of this shard, at global indices
    # s, s + k, ...
    return self._m[s] * self.num_epochs * k

  def _perm(self, epoch: int) -> np.ndarray:
    p = self._cache.get(epoch)
    if p is None:
      if self.shuffle:
        p = np.random.default_rng([self.seed, epoch]).permutation(
            self.num_records)
      else:
        p = np.arange(self.num_records)
      if len(self._cache) > 2:
        self._cache.clear()
      self._cache[epoch] = p
    return p

  def __getitem__(self, index: int) -> Any:
    import grain.python as grain  # pylint: disable=g-import-not-at-top
    if index < 0 or index >= len(self):
      raise IndexError(f"sampler index {index} out of range")
    m = self._m[self.shard_options.shard_index]
    epoch, pos = divmod(index // self.shard_options.shard_count, m)
    key = int(self._perm(epoch)[self._start + pos])
    rng = np.random.Generator(np.random.Philox(key=self.seed + index))
    return grain.RecordMetadata(index=index, record_key=key, rng=rng)

  def __repr__(self) -> str:
    return (f"EpochSampler(num_records={self.num_records}, "
            f"shard_options={self.shard_options!r}, shuffle={self.shuffle}, "
            f"num_epochs={self.num_epochs}, seed={self.seed})")
