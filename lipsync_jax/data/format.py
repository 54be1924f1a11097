"""On-disk dataset format: ArrayRecord shards + a JSON index + split lists.

Layout of a dataset directory ``DATA_DIR``::

  DATA_DIR/
    index.json                 # DatasetIndex: format, img_size, codec, clips
                               # (+ "split": how data_prep made the splits)
    shards/*.array_record      # packed clips (random access by record index)
    splits/{train,val,test}.txt  # one clip id per line, or ``id@start:stop``
                               # for the frames start..stop-1 of a clip
                               # (``--split-by time``)
    report.json                # preprocessing report (data_prep only)

Each clip occupies a contiguous run of records in one ArrayRecord file::

  offset + 0                      clip metadata, JSON utf-8 (ClipMeta, incl.
                                  the smoothed box track (T, 4))
  offset + 1 .. + n_mel_blocks    mel, float16, blocks of (80, MEL_BLOCK)
                                  columns (the last block may be narrower),
                                  C-order bytes
  offset + 1 + n_mel_blocks + i   frame i: the (S, S, 3) BGR uint8 face crop,
                                  encoded with the dataset codec ("jpeg",
                                  "png" or "raw"); an empty record where no
                                  face was found (found[i] is False)

The metadata record makes a shard self-describing (the index can be rebuilt
from the shards); ``index.json`` repeats the fields the sampler needs (frame
count, found mask, mel width, record offsets) so that loading the index never
touches the shards. Mel is stored in blocks so that a sample reads at most two
small records however long the clip is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import re
from typing import Any, Iterable, Sequence

import cv2
import numpy as np

from array_record.python import array_record_module as arm

from lipsync_jax.io.files import atomic_write_text  # noqa: F401  (fmt.atomic_write_text)

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
SHARDS_DIR = "shards"
SPLITS_DIR = "splits"
SPLITS = ("train", "val", "test")
MEL_BLOCK = 80  # mel columns per record (one second at 80 steps/s)
N_MELS = 80
CODECS = ("jpeg", "png", "raw")
_WRITER_OPTIONS = "group_size:1"  # one record per chunk: cheapest random reads


# The sample kinds a dataset serves (`data.make_loader(kind=...)`).
KINDS = ("syncnet", "generator", "lips")

class DatasetFormatError(ValueError):
  """A dataset directory is missing, incomplete or of an unknown format."""


@dataclasses.dataclass
class ClipMeta:
  """Metadata of one packed clip.

  Attributes:
    clip_id: unique id, the relative source path without extension, '/'-joined.
    speaker_id: speaker (defaults to the clip's parent folder).
    source: source path as given to the preprocessor.
    fps: frame rate of the stored frames.
    num_frames: T, number of frame records.
    found: (T,) bool, a face was found in frame t (False -> empty record).
    boxes: (T, 4) float32 x1, y1, x2, y2 crop boxes in source pixels (after
      smoothing and padding); rows of frames without a face are interpolated.
    detector: name of the face detector.
    mel_cols: N, number of mel columns (80 per second).
    notes: human-readable notes from preprocessing (e.g. "2 faces seen").
    file: shard path relative to the dataset directory.
    offset: record index of the metadata record in ``file``.
    span: (start, stop) when a time split confines the clip to frames
      start..stop-1 (``restrict_to_span``; not stored), else None.
    words: timed words as (first, stop, word) frame spans, where the source
      came with them (GRID's `.align` files, ``data/grid.py``), else None.
  """

  clip_id: str
  speaker_id: str
  source: str
  fps: float
  num_frames: int
  found: np.ndarray
  boxes: np.ndarray
  detector: str
  mel_cols: int
  notes: list[str] = dataclasses.field(default_factory=list)
  file: str = ""
  offset: int = 0
  span: tuple[int, int] | None = None
  words: list[tuple[int, int, str]] | None = None

  @property
  def n_mel_blocks(self) -> int:
    return -(-self.mel_cols // MEL_BLOCK)

  @property
  def num_records(self) -> int:
    return 1 + self.n_mel_blocks + self.num_frames

  def frame_record(self, t: int) -> int:
    return self.offset + 1 + self.n_mel_blocks + t

  def to_json(self, with_boxes: bool = True) -> dict[str, Any]:
    d = {
        "clip_id": self.clip_id,
        "speaker_id": self.speaker_id,
        "source": self.source,
        "fps": float(self.fps),
        "num_frames": int(self.num_frames),
        "found": "".join("1" if f else "0" for f in self.found),
        "detector": self.detector,
        "mel_cols": int(self.mel_cols),
        "notes": list(self.notes),
        "file": self.file,
        "offset": int(self.offset),
    }
    if with_boxes:
      d["boxes"] = np.round(np.asarray(self.boxes, np.float64), 2).tolist()
    if self.words is not None:
      d["words"] = [[int(a), int(b), str(w)] for a, b, w in self.words]
    return d

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> ClipMeta:
    found = np.frombuffer(d["found"].encode(), np.uint8) == ord("1")
    boxes = np.asarray(d.get("boxes", np.zeros((0, 4))), np.float32)
    return cls(clip_id=d["clip_id"], speaker_id=d["speaker_id"],
               source=d["source"], fps=float(d["fps"]),
               num_frames=int(d["num_frames"]), found=found,
               boxes=boxes.reshape(-1, 4), detector=d["detector"],
               mel_cols=int(d["mel_cols"]), notes=list(d.get("notes", [])),
               file=d.get("file", ""), offset=int(d.get("offset", 0)),
               words=([(int(a), int(b), str(w)) for a, b, w in d["words"]]
                      if d.get("words") is not None else None))


# ----------------------------------------------------------------------------
# Frame codecs.


def encode_frame(img: np.ndarray, codec: str, quality: int = 95) -> bytes:
  """Encodes a (S, S, 3) BGR uint8 crop to bytes."""
  img = np.ascontiguousarray(img, np.uint8)
  if codec == "raw":
    return img.tobytes()
  if codec == "jpeg":
    ok, buf = cv2.imencode(".jpg", img, [
        cv2.IMWRITE_JPEG_QUALITY, quality,
        cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444])
  elif codec == "png":
    ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, 1])
  else:
    raise DatasetFormatError(f"unknown frame codec {codec!r}, expected one of "
                             f"{', '.join(CODECS)}")
  if not ok:
    raise DatasetFormatError(f"could not encode a frame as {codec}")
  return buf.tobytes()


def decode_frame(data: bytes, codec: str, img_size: int) -> np.ndarray:
  """Decodes a frame record to a (S, S, 3) BGR uint8 array."""
  if codec == "raw":
    return np.frombuffer(data, np.uint8).reshape(img_size, img_size, 3)
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if img is None:
    raise DatasetFormatError("corrupt frame record")
  return img


# ----------------------------------------------------------------------------
# Writing.


def clip_records(meta: ClipMeta, mel: np.ndarray,
                 frames: Iterable[np.ndarray | None],
                 codec: str, quality: int = 95) -> Iterable[bytes]:
  """Yields the records of one clip, in storage order (see module doc).

  Args:
    meta: clip metadata (num_frames, found, mel_cols must be consistent).
    mel: (80, N) mel spectrogram, N == meta.mel_cols.
    frames: T crops (S, S, 3) BGR uint8, or None where no face was found.
    codec: frame codec.
    quality: JPEG quality.
  """
  mel = np.asarray(mel)
  if mel.shape != (N_MELS, meta.mel_cols):
    raise DatasetFormatError(f"mel has shape {mel.shape}, expected "
                             f"({N_MELS}, {meta.mel_cols})")
  yield json.dumps(meta.to_json(with_boxes=True)).encode()
  mel16 = mel.astype(np.float16)
  for b in range(meta.n_mel_blocks):
    yield np.ascontiguousarray(
        mel16[:, b * MEL_BLOCK:(b + 1) * MEL_BLOCK]).tobytes()
  n = 0
  for t, img in enumerate(frames):
    if bool(meta.found[t]) != (img is not None):
      raise DatasetFormatError(f"frame {t} of {meta.clip_id}: found mask and "
                               "frames disagree")
    yield b"" if img is None else encode_frame(img, codec, quality)
    n += 1
  if n != meta.num_frames:
    raise DatasetFormatError(f"{meta.clip_id}: got {n} frames, metadata says "
                             f"{meta.num_frames}")


class ShardWriter:
  """Writes records to an ArrayRecord file atomically (temp name + rename).

  Usage::

    with ShardWriter(path) as w:
      offset = w.write_clip(meta, mel, frames, codec)
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
    self._writer = arm.ArrayRecordWriter(str(self._tmp), _WRITER_OPTIONS)
    self.num_records = 0

  def write(self, record: bytes) -> None:
    self._writer.write(record)
    self.num_records += 1

  def write_clip(self, meta: ClipMeta, mel: np.ndarray, frames: Any,
                 codec: str, quality: int = 95) -> int:
    """Writes one clip; sets meta.offset; returns it."""
    meta.offset = self.num_records
    for rec in clip_records(meta, mel, frames, codec, quality):
      self.write(rec)
    return meta.offset

  def close(self) -> None:
    self._writer.close()
    os.replace(self._tmp, self.path)

  def abort(self) -> None:
    self._writer.close()
    if self._tmp.exists():
      self._tmp.unlink()

  def __enter__(self) -> ShardWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self.abort()


def write_index(data_dir: str | os.PathLike[str], clips: Sequence[ClipMeta],
                *, img_size: int, codec: str, fps: float,
                extra: dict[str, Any] | None = None) -> pathlib.Path:
  """Writes ``index.json`` atomically (clips without their box tracks)."""
  data = {
      "format": FORMAT_VERSION,
      "img_size": int(img_size),
      "codec": codec,
      "fps": float(fps),
      "mel_block": MEL_BLOCK,
      "clips": [c.to_json(with_boxes=False) for c in clips],
      **(extra or {}),
  }
  path = pathlib.Path(data_dir) / INDEX_NAME
  atomic_write_text(path, json.dumps(data))
  return path


# ----------------------------------------------------------------------------
# Splits.


def _check_ratios(ratios: Sequence[float]) -> np.ndarray:
  """The three ratios, normalised to sum 1."""
  if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
    raise ValueError(f"split ratios must be 3 non-negative numbers, got "
                     f"{tuple(ratios)}")
  return np.asarray(ratios, np.float64) / float(sum(ratios))


def split_of(key: str, ratios: Sequence[float] = (0.9, 0.05, 0.05)) -> str:
  """Deterministic split of a clip or speaker key from a SHA-1 hash."""
  r = _check_ratios(ratios)
  u = int(hashlib.sha1(key.encode()).hexdigest()[:12], 16) / float(1 << 48)
  return SPLITS[int(np.searchsorted(np.cumsum(r)[:-1], u, side="right"))]


SPLIT_BY = ("clip", "speaker", "time")
SPAN_SEP = "@"
_SPAN_RE = re.compile(rf"^(.+){re.escape(SPAN_SEP)}(\d+):(\d+)$")
SPAN_GAP = 5  # frames left out between time spans (a mel window spans 5 frames)


def time_spans(num_frames: int, ratios: Sequence[float] = (0.9, 0.05, 0.05),
               gap: int = SPAN_GAP) -> dict[str, tuple[int, int]]:
  """Contiguous frame spans [start, stop) of one clip for train, val, test.

  The clip is cut in time order (train first) in the given ratios; ``gap``
  frames before each later span belong to no split, so that no audio window
  of one span (16 mel columns = 5 frames past its start) covers frames of
  the next. Empty spans (ratio 0, or shorter than the gap) are left out.
  """
  r = _check_ratios(ratios)
  bounds = np.round(np.concatenate([[0.0], np.cumsum(r)]) * num_frames)
  bounds = bounds.astype(np.int64)
  out = {}
  for i, name in enumerate(SPLITS):
    start, stop = int(bounds[i]) + (gap if i else 0), int(bounds[i + 1])
    if name == SPLITS[-1]:
      stop = num_frames
    if stop > start and r[i] > 0:
      out[name] = (start, stop)
  return out


def assign_splits(clips: Sequence[ClipMeta], by: str = "clip",
                  ratios: Sequence[float] = (0.9, 0.05, 0.05)
                  ) -> dict[str, list[str]]:
  """Assigns clips to train/val/test.

  ``by="clip"`` or ``"speaker"`` hashes the clip or speaker id (unseen clips
  or unseen speakers in val/test). ``by="time"`` puts every clip in every
  split, each with its own time span (``time_spans``), as ``id@start:stop``
  entries: same speakers, unseen moments, for datasets too small to hold
  out whole speakers.
  """
  if by not in SPLIT_BY:
    raise ValueError(f"split-by must be one of {SPLIT_BY}, got {by!r}")
  out: dict[str, list[str]] = {s: [] for s in SPLITS}
  for c in sorted(clips, key=lambda c: c.clip_id):
    if by == "time":
      for name, (a, b) in time_spans(c.num_frames, ratios).items():
        out[name].append(f"{c.clip_id}{SPAN_SEP}{a}:{b}")
    else:
      out[split_of(c.clip_id if by == "clip" else c.speaker_id, ratios)].append(
          c.clip_id)
  return out


MIN_CARVED_SPAN = 25  # frames (1 s): the shortest val/test span carve_splits cuts


def carve_splits(clips: Sequence[ClipMeta],
                 ratios: Sequence[float] = (0.9, 0.05, 0.05),
                 gap: int = SPAN_GAP, min_span: int = MIN_CARVED_SPAN
                 ) -> dict[str, list[str]]:
  """A time split for too few clips to hash: val and test cut from clip ends.

  val and test (those with a non-zero ratio) each get ratio x all frames, at
  least ``min_span``, cut from the last frames of the longest clips (longest
  first, ties by id); a clip gives at most half its frames, gaps included.
  Cut clips are laid out by ``time_spans`` (train, then val, then test, a
  ``gap`` before each later span) as ``id@start:stop`` entries; every other
  clip is train as a whole. A split for which no clip has room stays empty.
  """
  r = _check_ratios(ratios)
  total = sum(int(c.num_frames) for c in clips)
  need = {name: max(int(round(r[i] * total)), min_span) if r[i] > 0 else 0
          for i, name in enumerate(SPLITS) if i}
  out: dict[str, list[str]] = {s: [] for s in SPLITS}
  for c in sorted(clips, key=lambda c: (-int(c.num_frames), c.clip_id)):
    room = int(c.num_frames) // 2
    take = {}
    for name in SPLITS[1:]:
      n = min(max(need[name], min_span), room - gap)
      if need[name] > 0 and n >= min_span:
        take[name] = n
        need[name] -= n
        room -= n + gap
    if not take:
      out["train"].append(c.clip_id)
      continue
    t = int(c.num_frames)
    held = {name: take.get(name, 0) + (gap if name in take else 0)
            for name in SPLITS[1:]}
    clip_ratios = (t - sum(held.values()), held["val"], held["test"])
    for name, (a, b) in time_spans(t, clip_ratios, gap).items():
      out[name].append(f"{c.clip_id}{SPAN_SEP}{a}:{b}")
  for name in SPLITS:
    out[name].sort()
  return out


def split_frames(clips: Sequence[ClipMeta], entries: Sequence[str]) -> int:
  """Frames covered by split entries (a whole clip, or its time span)."""
  table = {c.clip_id: c for c in clips}
  n = 0
  for entry in entries:
    clip_id, span = parse_split_entry(entry)
    n += table[clip_id].num_frames if span is None else span[1] - span[0]
  return int(n)


def _empty_splits(splits: dict[str, list[str]],
                  ratios: Sequence[float]) -> list[str]:
  """Splits with a non-zero ratio and no entry."""
  r = _check_ratios(ratios)
  return [name for i, name in enumerate(SPLITS)
          if r[i] > 0 and not splits.get(name)]


def assign_splits_or_carve(clips: Sequence[ClipMeta], by: str = "clip",
                           ratios: Sequence[float] = (0.9, 0.05, 0.05)
                           ) -> tuple[dict[str, list[str]], str, str]:
  """``assign_splits``, falling back to ``carve_splits`` for too few clips.

  The rule: when hashing (by clip or speaker) leaves train, val or test
  empty although its ratio is not 0, the splits are carved in time instead
  (``carve_splits``), unless the clips are too short for that to do better
  (better: val filled, the split training evaluates on; else fewer empty
  splits).

  Returns:
    (splits, used, note): the split lists; how they were made (``by``, or
    "carved"); a one-line note for the user when a split with a non-zero
    ratio came out empty or the fallback was used, else "".
  """
  splits = assign_splits(clips, by, ratios)
  empty = _empty_splits(splits, ratios)
  if not clips or not empty:
    return splits, by, ""
  if by != "time":
    carved = carve_splits(clips, ratios)
    still = _empty_splits(carved, ratios)
    if ("val" in still, len(still)) < ("val" in empty, len(empty)):
      cut = [s for s in SPLITS[1:] if carved[s]]
      note = (f"hashing {len(clips)} clip(s) by {by} left "
              f"{' and '.join(empty)} empty, so {' and '.join(cut)} "
              f"{'were' if len(cut) > 1 else 'was'} cut in time from the "
              "ends of the longest clips instead (the same speakers at "
              "unseen moments)")
      if still:
        note += (f"; {' and '.join(still)} stays empty: no clip has room for "
                 f"another {MIN_CARVED_SPAN}-frame span")
      return carved, "carved", note
  return splits, by, (f"split by {by}: {' and '.join(empty)} came out empty "
                      f"({len(clips)} clip(s), too few or too short); "
                      "training needs a val split")


def parse_split_entry(entry: str) -> tuple[str, tuple[int, int] | None]:
  """'clip_id' -> (clip_id, None); 'clip_id@a:b' -> (clip_id, (a, b))."""
  m = _SPAN_RE.match(entry)
  if m is None:
    return entry, None
  a, b = int(m.group(2)), int(m.group(3))
  if a >= b:
    raise DatasetFormatError(f"bad split entry {entry!r}: empty span")
  return m.group(1), (a, b)


def restrict_to_span(clip: ClipMeta, start: int, stop: int) -> ClipMeta:
  """A copy of ``clip`` whose frames outside [start, stop) count as faceless.

  Every window sampler and scorer only uses windows whose frames all have a
  face, so this confines a clip to its span without touching the shards
  (frame and mel indices stay those of the whole clip).
  """
  found = np.asarray(clip.found, bool).copy()
  found[:start] = False
  found[stop:] = False
  return dataclasses.replace(clip, found=found, span=(start, stop))


def write_splits(data_dir: str | os.PathLike[str],
                 splits: dict[str, Sequence[str]]) -> None:
  for name in SPLITS:
    ids = splits.get(name, [])
    atomic_write_text(pathlib.Path(data_dir) / SPLITS_DIR / f"{name}.txt",
                       "".join(f"{i}\n" for i in ids))


# ----------------------------------------------------------------------------
# Reading.


@dataclasses.dataclass
class DatasetIndex:
  """The parsed ``index.json`` of a dataset directory."""

  data_dir: pathlib.Path
  img_size: int
  codec: str
  fps: float
  clips: list[ClipMeta]

  def by_id(self) -> dict[str, ClipMeta]:
    return {c.clip_id: c for c in self.clips}

  def split(self, name: str) -> list[ClipMeta]:
    """Clips of a split ('train', 'val', 'test' or 'all'), in file order.

    Entries with a time span (``id@start:stop``) come back restricted to it
    (``restrict_to_span``), under their clip id.
    """
    if name == "all":
      return list(self.clips)
    path = self.data_dir / SPLITS_DIR / f"{name}.txt"
    if not path.is_file():
      raise DatasetFormatError(f"no split list {path}")
    entries = [parse_split_entry(l.strip())
               for l in path.read_text().splitlines() if l.strip()]
    table = self.by_id()
    missing = [i for i, _ in entries if i not in table]
    if missing:
      raise DatasetFormatError(f"split {name} lists {len(missing)} clip(s) not "
                               f"in the index, e.g. {missing[0]!r}")
    return [table[i] if span is None else restrict_to_span(table[i], *span)
            for i, span in entries]


def load_index(data_dir: str | os.PathLike[str]) -> DatasetIndex:
  """Reads ``DATA_DIR/index.json``; raises DatasetFormatError one-liners."""
  data_dir = pathlib.Path(data_dir)
  path = data_dir / INDEX_NAME
  if not path.is_file():
    raise DatasetFormatError(f"{data_dir} is not a lipsync dataset (no "
                             f"{INDEX_NAME}); create one with "
                             "data_prep/preprocess.py")
  try:
    d = json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise DatasetFormatError(f"{path} is not valid JSON: {e}") from None
  if d.get("format") != FORMAT_VERSION:
    raise DatasetFormatError(f"{path} has format {d.get('format')!r}, "
                             f"expected {FORMAT_VERSION}")
  return DatasetIndex(data_dir=data_dir, img_size=int(d["img_size"]),
                      codec=d["codec"], fps=float(d["fps"]),
                      clips=[ClipMeta.from_json(c) for c in d["clips"]])


class ClipReader:
  """Random access to clips' frames and mel; lazily opens shard readers.

  Picklable (readers are reopened in each process), so it can live inside
  grain transforms running in worker processes.
  """

  def __init__(self, data_dir: str | os.PathLike[str], codec: str,
               img_size: int):
    self.data_dir = str(data_dir)
    self.codec = codec
    self.img_size = img_size
    self._readers: dict[str, Any] = {}

  def __getstate__(self) -> dict[str, Any]:
    d = dict(self.__dict__)
    d["_readers"] = {}
    return d

  def _reader(self, file: str) -> Any:
    r = self._readers.get(file)
    if r is None:
      path = os.path.join(self.data_dir, file)
      if not os.path.isfile(path):
        raise DatasetFormatError(f"missing shard {path}")
      r = arm.ArrayRecordReader(path, "readahead_buffer_size:0")
      self._readers[file] = r
    return r

  def read_records(self, file: str, indices: Sequence[int]) -> list[bytes]:
    return self._reader(file).read(list(indices))

  def frames(self, clip: ClipMeta, start: int, length: int) -> np.ndarray:
    """Returns (length, S, S, 3) uint8 frames start..start+length-1."""
    if not clip.found[start:start + length].all():
      raise DatasetFormatError(f"{clip.clip_id}: window at {start} spans a "
                               "frame without a face")
    recs = self.read_records(
        clip.file, [clip.frame_record(t) for t in range(start, start + length)])
    return np.stack([decode_frame(r, self.codec, self.img_size) for r in recs])

  def mel(self, clip: ClipMeta, start: int, stop: int) -> np.ndarray:
    """Returns mel columns [start, stop) as (80, stop-start) float32."""
    if not 0 <= start <= stop <= clip.mel_cols:
      raise DatasetFormatError(f"{clip.clip_id}: mel columns [{start}, {stop})"
                               f" outside [0, {clip.mel_cols})")
    b0, b1 = start // MEL_BLOCK, max(start, stop - 1) // MEL_BLOCK
    recs = self.read_records(
        clip.file, [clip.offset + 1 + b for b in range(b0, b1 + 1)])
    blocks = []
    for b, r in zip(range(b0, b1 + 1), recs):
      width = min(MEL_BLOCK, clip.mel_cols - b * MEL_BLOCK)
      blocks.append(np.frombuffer(r, np.float16).reshape(N_MELS, width))
    full = np.concatenate(blocks, axis=1)
    s = start - b0 * MEL_BLOCK
    return full[:, s:s + stop - start].astype(np.float32)

  def meta(self, file: str, offset: int) -> ClipMeta:
    """Reads a clip's full metadata record (with its box track)."""
    d = json.loads(self.read_records(file, [offset])[0])
    return ClipMeta.from_json(d)

  def full_mel(self, clip: ClipMeta) -> np.ndarray:
    return self.mel(clip, 0, clip.mel_cols)


def scan_shard(path: str | os.PathLike[str]) -> list[ClipMeta]:
  """Rebuilds clip metadata (with file/offset) by walking a shard."""
  r = arm.ArrayRecordReader(str(path))
  try:
    n = r.num_records()
    out = []
    i = 0
    while i < n:
      meta = ClipMeta.from_json(json.loads(r.read([i])[0]))
      meta.offset = i
      out.append(meta)
      i += meta.num_records
    return out
  finally:
    r.close()
