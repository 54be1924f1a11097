"""Sample transforms and grain loaders (see the package docstring)."""

from __future__ import annotations

import os
from typing import Any

import grain.python as grain
import numpy as np

from lipsync_jax.data import augment as augment_lib
from lipsync_jax.data import format as fmt
from lipsync_jax.data.format import KINDS
from lipsync_jax.data import sources
DEFAULT_MIN_OFFSET = 5      # syncnet negatives: |g - f| >= 5 frames (0.2 s)
DEFAULT_REF_MIN_OFFSET = 1  # generator reference window != target window
# The share of a clip's frames with lips that count as closed-mouth for the
# renderer's rest reference: audio_to_lips.closed_frames' default, which
# picks inference's references (data does not import the models).
CLOSED_FRACTION = 0.2


def _windows(reader: fmt.ClipReader, clip: fmt.ClipMeta, start: int,
             count: int) -> np.ndarray:
  """(count, 80, 16, 1) float32 mel windows of frames start..start+count-1."""
  first = sources.mel_start(start, clip.fps)
  last = sources.mel_start(start + count - 1, clip.fps)
  block = reader.mel(clip, first, last + sources.MEL_WINDOW)
  out = np.stack([
      block[:, s - first:s - first + sources.MEL_WINDOW]
      for s in (sources.mel_start(start + k, clip.fps) for k in range(count))
  ])
  return out[..., None]


def _stand_ins(starts: list[np.ndarray], what: str) -> dict[int, int]:
  """Clip index -> the clip sampled in its place: itself when it has a
  window start, else one of the clips that have (in turn), so that every
  record of the sampler stays valid. No clip with a start is a one-line
  DatasetFormatError ("no `what` with lips found by FaceMesh ...")."""
  good = [i for i, s in enumerate(starts) if len(s)]
  if not good:
    raise fmt.DatasetFormatError(f"no {what} with lips found by FaceMesh in this split")
  return {i: (i if len(s) else good[i % len(good)]) for i, s in enumerate(starts)}


class _SampleBase(grain.RandomMapTransform):
  """Holds the split's clips and a lazily-opened shard reader."""

  def __init__(self, index: fmt.DatasetIndex, clips: list[fmt.ClipMeta],
               with_meta: bool):
    self.clips = clips
    self.windows = [sources.clip_windows(c) for c in clips]
    self.reader = fmt.ClipReader(index.data_dir, index.codec, index.img_size)
    self.with_meta = with_meta


class SyncNetSample(_SampleBase):
  """{"clip": i} -> a SyncNet sample (contract 5).

  With probability 1/2 (seeded coin) the face window starts at the audio
  window's frame f (label 1); otherwise at a face-valid g of the same clip
  with |g - f| >= min_offset (label 0). No window spans a frame without a
  face; the audio window is always [int(80 f / fps), +16). With ``augment``,
  the faces and the mel get one random transform each (``augment.py``).
  """

  def __init__(self, index, clips, min_offset: int = DEFAULT_MIN_OFFSET,
               with_meta: bool = False, augment: bool = False):
    super().__init__(index, clips, with_meta)
    if min_offset < 1:
      raise ValueError(f"min_offset must be >= 1, got {min_offset}")
    self.min_offset = min_offset
    self.augment = augment
    self.audio_starts = [sources.syncnet_audio_starts(w, min_offset)
                         for w in self.windows]

  def random_map(self, element: dict[str, int],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    ci = element["clip"]
    clip, w = self.clips[ci], self.windows[ci]
    f = int(rng.choice(self.audio_starts[ci]))
    positive = bool(rng.random() < 0.5)
    if positive:
      g = f
    else:
      cands = w.face[np.abs(w.face - f) >= self.min_offset]
      g = int(rng.choice(cands))
    a0 = sources.mel_start(f, clip.fps)
    out = {
        "faces": self.reader.frames(clip, g, sources.WINDOW),
        "audio": self.reader.mel(clip, a0, a0 + sources.MEL_WINDOW)[..., None],
        "label": np.float32(positive),
    }
    if self.augment:
      out["faces"] = augment_lib.augment_faces(out["faces"], rng)
      out["audio"] = augment_lib.augment_mel(out["audio"], rng)
    if self.with_meta:
      out.update(clip_index=np.int32(ci), face_start=np.int32(g),
                 audio_start=np.int32(f))
    return out


class GeneratorSample(_SampleBase):
  """{"clip": i} -> a generator sample (contract 5).

  target: frames f..f+4; reference: frames r..r+4 of the same clip with
  |r - f| >= ref_min_offset; audio: per-frame windows [int(80 (f+k) / fps),
  +16) for k = 0..4; sync_audio: [int(80 f / fps), +16) (equal to audio[0]
  under the shared alignment convention).
  context_frames c > 0 adds context: frames f-c..f+4+c (5+2c, all with a
  face; SyncTalkFace's 9 frames at c = 2). with_aus adds aus (5, K) float32
  presence and au_valid (5,) float32 of the target frames, from the labels
  of ``data_prep/au_labels.py``. with_lips adds lips (5, 40, 2) float32,
  the target frames' FaceMesh lips (``data_prep/lip_tracks.py``), and takes
  only targets whose 5 frames all have lips. rest_reference p (with_lips
  only): with probability p the reference is instead a closed-mouth frame,
  repeated 5 times: of the clip's `CLOSED_FRACTION` most closed frames
  outside the target window, the nearest in time to the window's middle
  frame (the earlier on a tie). The two-stage model's inference gives each
  frame the same (`audio_to_lips.rest_frames`, `InferenceOptions.reference`):
  a closed mouth in about the frame's head pose, so the renderer draws every
  opening from the lips alone, and on a long clip whose head turns the
  reference is not from another pose.
  """

  def __init__(self, index, clips, ref_min_offset: int = DEFAULT_REF_MIN_OFFSET,
               with_meta: bool = False, context_frames: int = 0,
               with_aus: bool = False, with_lips: bool = False,
               rest_reference: float = 0.0):
    super().__init__(index, clips, with_meta)
    if not 0.0 <= rest_reference <= 1.0:
      raise ValueError(f"rest_reference must be a probability in [0, 1], got {rest_reference}")
    if rest_reference and not with_lips:
      raise ValueError("rest_reference needs with_lips (the mouth's opening picks the frame)")
    self.rest_reference = float(rest_reference)
    if ref_min_offset < 1:
      raise ValueError(f"ref_min_offset must be >= 1, got {ref_min_offset}")
    if context_frames < 0:
      raise ValueError(f"context_frames must be >= 0, got {context_frames}")
    self.ref_min_offset = ref_min_offset
    self.context = int(context_frames)
    self.starts = [sources.generator_starts(w, ref_min_offset, self.context)
                   for w in self.windows]
    self.aus = None
    if with_aus:
      from lipsync_jax.data import au_store  # pylint: disable=g-import-not-at-top
      labels = [au_store.load_clip_labels(index.data_dir, c) for c in clips]
      if len({l.aus for l in labels}) > 1:
        raise fmt.DatasetFormatError("the clips' AU labels have different AU columns")
      self.aus = [(l.presence.astype(np.float32), l.valid.astype(np.float32))
                  for l in labels]
    self.lips = None
    if with_lips:
      # Only targets whose 5 frames all have lips: the renderer draws them.
      from lipsync_jax.data import lip_store  # pylint: disable=g-import-not-at-top
      tracks = [lip_store.load_clip_lips(index.data_dir, c) for c in clips]
      self.lips = [lips for lips, _ in tracks]
      # Frames with a face and lips, most closed mouth first.
      from lipsync_jax.vision import lip_landmarks  # pylint: disable=g-import-not-at-top
      self.closed_first = []
      for (lips, ok), c in zip(tracks, clips):
        has = ok & np.asarray(c.found, bool)
        gap = np.where(has, lip_landmarks.inner_gap(lips), np.inf)
        self.closed_first.append(np.argsort(gap, kind="stable")[:int(has.sum())])
      for i, (_, ok) in enumerate(tracks):
        self.starts[i] = np.asarray([f for f in self.starts[i]
                                     if ok[f:f + sources.WINDOW].all()], np.int64)
      self.remap = _stand_ins(self.starts, "target window of 5 frames")

  def nearest_closed(self, ci: int, f: int) -> int | None:
    """The rest reference of the target window f..f+4 of clip `ci`: of the
    clip's `CLOSED_FRACTION` most closed frames outside the window, the
    nearest in time to frame f + 2 (the earlier on a tie); None when every
    frame with lips is inside the window."""
    closed_first = self.closed_first[ci]
    k = max(1, int(round(CLOSED_FRACTION * len(closed_first))))
    inside = (closed_first >= f) & (closed_first < f + sources.WINDOW)
    candidates = closed_first[:k][~inside[:k]]
    if not len(candidates):   # all of them in the window: the most closed outside it
      candidates = closed_first[~inside][:1]
    if not len(candidates):
      return None
    mid = f + sources.WINDOW // 2
    return int(min(candidates, key=lambda c: (abs(int(c) - mid), int(c))))

  def random_map(self, element: dict[str, int],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    ci = element["clip"]
    if self.lips is not None:
      ci = self.remap[ci]
    clip, w = self.clips[ci], self.windows[ci]
    f = int(rng.choice(self.starts[ci]))
    r = int(rng.choice(w.face[np.abs(w.face - f) >= self.ref_min_offset]))
    reference = None
    if self.rest_reference and rng.random() < self.rest_reference:
      r_rest = self.nearest_closed(ci, f)
      if r_rest is not None:
        r = r_rest
        reference = np.repeat(self.reader.frames(clip, r, 1), sources.WINDOW, axis=0)
    audio = _windows(self.reader, clip, f, sources.WINDOW)
    out = {
        "target": self.reader.frames(clip, f, sources.WINDOW),
        "reference": (self.reader.frames(clip, r, sources.WINDOW) if reference is None
                      else reference),
        "audio": audio,
        "sync_audio": audio[0].copy(),
    }
    if self.context:
      out["context"] = self.reader.frames(clip, f - self.context,
                                          sources.WINDOW + 2 * self.context)
    if self.aus is not None:
      pres, valid = self.aus[ci]
      out["aus"] = pres[f:f + sources.WINDOW]
      out["au_valid"] = valid[f:f + sources.WINDOW]
    if self.lips is not None:
      out["lips"] = self.lips[ci][f:f + sources.WINDOW]
    if self.with_meta:
      out.update(clip_index=np.int32(ci), target_start=np.int32(f),
                 reference_start=np.int32(r))
    return out


class LipsSample(_SampleBase):
  """{"clip": i} -> an audio-to-lips sample: `num_frames` consecutive frames
  f..f+T-1, all with FaceMesh lips (``data_prep/lip_tracks.py``).

    mel         (T, 80, C, 1) float32  mel context of each frame
                                       (``audio_to_lips.mel_context``)
    sync_audio  (T-4, 80, 16, 1)       the Wav2Lip window of each 5-frame
                                       window f+k..f+k+4 (the expert's input)
    lips        (T, 40, 2)             the frames' lips (targets)
    neutral     (T, 40, 2)             the clip's rest shape at each frame's
                                       anchor (``audio_to_lips.neutral_lips``)

  With probability `single_frame_rest`, the rest shape is one random frame's
  mouth instead of the clip's mean, as for a still photo at inference.
  """

  def __init__(self, index, clips, num_frames: int = 9, context: int = 32,
               single_frame_rest: float = 0.25, with_meta: bool = False):
    from lipsync_jax.data import lip_store  # pylint: disable=g-import-not-at-top
    from lipsync_jax.models import audio_to_lips  # pylint: disable=g-import-not-at-top
    super().__init__(index, clips, with_meta)
    if num_frames < sources.WINDOW:
      raise ValueError(f"num_frames must be >= {sources.WINDOW}, got {num_frames}")
    self.t, self.context, self.single = int(num_frames), int(context), float(single_frame_rest)
    self.a2l = audio_to_lips
    self.tracks, self.starts = [], []
    for c in clips:
      lips, ok = lip_store.load_clip_lips(index.data_dir, c)
      n = len(ok) - self.t + 1
      run = np.ones((max(n, 0),), bool)
      for k in range(self.t):
        run &= ok[k:k + max(n, 0)]
      starts = np.nonzero(run)[0]
      # The last sync window must fit in the mel.
      last = sources.mel_starts(starts + self.t - sources.WINDOW, c.fps)
      starts = starts[last + sources.MEL_WINDOW <= c.mel_cols]
      self.starts.append(starts)
      anchor = audio_to_lips.anchor_track(lips, ok) if ok.any() else None
      rest = audio_to_lips.rest_shape(lips, ok) if ok.any() else None
      self.tracks.append((lips, ok, anchor, rest))
    self.remap = _stand_ins(self.starts, f"run of {self.t} consecutive frames")

  def random_map(self, element: dict[str, int],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    ci = self.remap[element["clip"]]
    clip = self.clips[ci]
    lips, ok, anchor, rest = self.tracks[ci]
    f = int(rng.choice(self.starts[ci]))
    frames = np.arange(f, f + self.t)
    if rng.random() < self.single:
      r = int(rng.choice(np.nonzero(ok)[0]))
      rest = lips[r] - lips[r].mean(axis=0, keepdims=True)
    mel = self.reader.mel(clip, 0, clip.mel_cols)
    starts = sources.mel_starts(frames, clip.fps)
    out = {
        "mel": self.a2l.mel_context(mel, starts, self.context),
        "sync_audio": np.stack([mel[:, s:s + sources.MEL_WINDOW]
                                for s in starts[:self.t - sources.WINDOW + 1]])[..., None],
        "lips": lips[f:f + self.t].astype(np.float32),
        "neutral": (anchor[f:f + self.t, None, :] + rest[None]).astype(np.float32),
    }
    if self.with_meta:
      out.update(clip_index=np.int32(ci), target_start=np.int32(f))
    return out


def _ensure_absl_flags_parsed() -> None:
  """grain's worker processes read absl flags; outside an absl app (scripts,
  pytest) nobody parsed them, so mark the defaults as parsed."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def _shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
  if shard_index is None or shard_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    shard_index = jax.process_index() if shard_index is None else shard_index
    shard_count = jax.process_count() if shard_count is None else shard_count
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard_index {shard_index} not in [0, {shard_count})")
  return shard_index, shard_count


def _build(data_dir: str | os.PathLike[str], split: str, kind: str,
           global_batch_size: int, seed: int, *, shuffle: bool,
           num_epochs: int | None, worker_count: int,
           shard_index: int | None, shard_count: int | None,
           drop_remainder: bool, windows_per_clip: int = 1,
           min_offset: int = DEFAULT_MIN_OFFSET,
           ref_min_offset: int = DEFAULT_REF_MIN_OFFSET,
           with_meta: bool = False,
           context_frames: int = 0,
           with_aus: bool = False,
           augment: bool = False,
           with_lips: bool = False,
           rest_reference: float = 0.0,
           lip_frames: int = 9,
           lip_context: int = 32,
           single_frame_rest: float = 0.25,
           worker_buffer_size: int = 2,
           read_threads: int = 2) -> grain.DataLoader:
  if kind not in KINDS:
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
  shard_index, shard_count = _shard(shard_index, shard_count)
  if global_batch_size <= 0 or global_batch_size % shard_count:
    raise ValueError(f"global_batch_size {global_batch_size} must be a "
                     f"positive multiple of the process count {shard_count}")
  index = fmt.load_index(data_dir)
  if kind == "syncnet" and (context_frames or with_aus or with_lips):
    raise ValueError("context_frames, with_aus and with_lips are generator sample options")
  if kind != "syncnet" and augment:
    raise ValueError("augment is a syncnet sample option")
  listed = index.split(split)
  if not listed:
    raise fmt.DatasetFormatError(
        f"split {split!r} of {data_dir} is empty ({fmt.SPLITS_DIR}/{split}.txt "
        "lists no clip): add clips, or rerun data_prep/preprocess.py with "
        "the same --output (it rewrites the splits, cutting val and test in "
        "time out of the clips when there are too few to hash), or with "
        "--split-by time")
  clips = sources.eligible_clips(listed, "generator" if kind == "lips" else kind,
                                 min_offset, ref_min_offset, context_frames)
  if not clips:
    need = (sources.WINDOW + min_offset if kind == "syncnet" else
            sources.WINDOW + ref_min_offset + 2 * context_frames)
    raise fmt.DatasetFormatError(
        f"split {split!r} of {data_dir}: all {len(listed)} of its clips (or "
        f"time spans) are too short for a {kind} sample, which needs "
        f"{need}+ consecutive frames with a face; add longer clips or give "
        "this split a larger share (data_prep/preprocess.py --split-ratios)")
  if shuffle:
    # An endless stream needs a record per process each epoch: with fewer
    # clips than processes, each clip gives several windows per epoch.
    windows_per_clip = max(windows_per_clip, -(-shard_count // len(clips)))
  source = sources.ClipSource(len(clips), windows_per_clip)
  if worker_count > 0:
    _ensure_absl_flags_parsed()
  if kind == "syncnet":
    transform = SyncNetSample(index, clips, min_offset, with_meta, augment)
  elif kind == "lips":
    transform = LipsSample(index, clips, lip_frames, lip_context, single_frame_rest,
                           with_meta)
  else:
    transform = GeneratorSample(index, clips, ref_min_offset, with_meta,
                                context_frames, with_aus, with_lips, rest_reference)
  shard_options = grain.ShardOptions(shard_index, shard_count,
                                     drop_remainder=drop_remainder)
  sampler = sources.EpochSampler(
      num_records=len(source), shard_options=shard_options, shuffle=shuffle,
      num_epochs=num_epochs, seed=seed)
  return grain.DataLoader(
      data_source=source, sampler=sampler,
      operations=[transform,
                  grain.Batch(global_batch_size // shard_count,
                              drop_remainder=drop_remainder)],
      worker_count=worker_count, worker_buffer_size=worker_buffer_size,
      shard_options=shard_options,
      read_options=grain.ReadOptions(num_threads=read_threads,
                                     prefetch_buffer_size=4 * read_threads))


def make_loader(data_dir: str | os.PathLike[str], split: str, kind: str,
                global_batch_size: int, seed: int, *,
                num_epochs: int | None = None, worker_count: int = 0,
                shard_index: int | None = None, shard_count: int | None = None,
                **sample_options: Any) -> grain.DataLoader:
  """Training loader: shuffled, seeded, resumable, sharded by process.

  Args:
    data_dir: dataset directory (index.json, shards/, splits/).
    split: 'train', 'val', 'test' or 'all'.
    kind: 'syncnet' or 'generator' (batch layouts in the package docstring).
    global_batch_size: batch over all processes; each process yields
      global_batch_size // shard_count samples per batch.
    seed: seeds the epoch permutation and every window choice.
    num_epochs: None for an endless stream.
    worker_count: grain worker processes (0 = in-process).
    shard_index, shard_count: default jax.process_index()/process_count().
    **sample_options: windows_per_clip (1: records per clip per epoch),
      min_offset (5), ref_min_offset (1), with_meta (False: add clip_index and
      window starts to the batch), context_frames (0: generator batches get
      context (B,5+2c,S,S,3), frames f-c..f+4+c), with_aus (False: generator
      batches get aus (B,5,K) and au_valid (B,5) from the stored AU labels),
      augment (False: syncnet samples get a random flip, zoom, shift,
      contrast, brightness and mel gain, ``augment.py``), with_lips
      (False: generator batches get lips (B,5,40,2) of the target frames),
      rest_reference (0: with probability p a generator sample's reference
      is its clip's most closed-mouth frame, see ``GeneratorSample``),
      lip_frames (9), lip_context (32), single_frame_rest (0.25): the
      ``LipsSample`` of kind 'lips',
      worker_buffer_size (2), read_threads (2:
      reader threads per process/worker).

  Returns:
    A grain DataLoader; ``iter(loader)`` has get_state()/set_state().
  """
  return _build(data_dir, split, kind, global_batch_size, seed, shuffle=True,
                num_epochs=num_epochs, worker_count=worker_count,
                shard_index=shard_index, shard_count=shard_count,
                drop_remainder=True, **sample_options)


def make_eval_loader(data_dir: str | os.PathLike[str], split: str, kind: str,
                     global_batch_size: int, seed: int = 0, *,
                     worker_count: int = 0, shard_index: int | None = None,
                     shard_count: int | None = None,
                     drop_remainder: bool = False,
                     **sample_options: Any) -> grain.DataLoader:
  """Evaluation loader: one pass over the split in clip order, finite.

  Deterministic: the same windows for the same seed on every call. The last
  batch is partial unless drop_remainder=True. Options as ``make_loader``.
  """
  return _build(data_dir, split, kind, global_batch_size, seed, shuffle=False,
                num_epochs=1, worker_count=worker_count,
                shard_index=shard_index, shard_count=shard_count,
                drop_remainder=drop_remainder, **sample_options)
