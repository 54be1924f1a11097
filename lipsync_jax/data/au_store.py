"""Per-frame AU labels stored beside a packed dataset (the ``au_tcn`` variant).

Layout: ``DATA_DIR/au_labels/<key>.npz`` per clip, one row per stored frame
(the clip's ``num_frames``), written atomically, so an interrupted labelling
run keeps every finished clip and a rerun only labels the rest::

  aus        (K,) int32     AU numbers, the column order
  presence   (T, K) uint8   1 = AU present (OpenFace ``_c``)
  intensity  (T, K) float16 0-5 (OpenFace ``_r`` scale)
  valid      (T,) uint8     0 where no face / no landmarks
  source     ()  str        label source name ("facemesh_proxy", "openface")

and one ``DATA_DIR/au_labels/meta.json`` written by ``label_dataset`` when it
finishes: ``{"format": 1, "aus": [...], "clips": [clip ids]}``. The trainer
checks the AU columns against it at start-up (one small file), so the
per-clip labels are read once, by the loader.

Sources (``label_dataset``):
  * "facemesh": MediaPipe FaceMesh on the dataset's own face crops, then the
    geometric proxies of ``lipsync_jax.vision.au_proxies`` (per-clip baselines), so
    the labels are aligned with the stored frames by construction.
  * "openface": OpenFace 2.x CSVs, one per source video (``<stem>.csv`` in a
    folder), frame t of the CSV = stored frame t (same fps; the dataset's
    preprocessing must not have resampled the video).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
from typing import Callable, Optional, Sequence

import numpy as np

from lipsync_jax.data import format as fmt
from lipsync_jax.io import files

AU_DIR = "au_labels"
META_FILE = "meta.json"
META_FORMAT = 1


def label_path(data_dir: str | os.PathLike[str], clip_id: str) -> pathlib.Path:
  """``DATA_DIR/au_labels/<key>.npz``; the key is a readable, collision-free
  file name for a '/'-joined clip id."""
  safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in clip_id)
  digest = hashlib.sha1(clip_id.encode()).hexdigest()[:8]
  return pathlib.Path(data_dir) / AU_DIR / f"{safe[-80:]}-{digest}.npz"


def save_clip_labels(data_dir, clip_id: str, labels) -> pathlib.Path:
  """Writes an ``au_proxies.AULabels`` atomically; returns the path."""
  path = label_path(data_dir, clip_id)
  buf = io.BytesIO()
  np.savez(buf, aus=np.asarray(labels.aus, np.int32),
           presence=np.asarray(labels.presence, np.uint8),
           intensity=np.asarray(labels.intensity, np.float16),
           valid=np.asarray(labels.valid, np.uint8),
           source=np.asarray(labels.source))
  files.atomic_write_bytes(path, buf.getvalue())
  return path


def load_clip_labels(data_dir, clip: fmt.ClipMeta):
  """The clip's ``AULabels`` (presence as bool), padded/truncated to
  ``clip.num_frames`` (padded rows invalid). Raises DatasetFormatError."""
  from lipsync_jax.vision.au_proxies import AULabels  # pylint: disable=g-import-not-at-top
  path = label_path(data_dir, clip.clip_id)
  if not path.is_file():
    raise fmt.DatasetFormatError(
        f"no AU labels for clip {clip.clip_id!r} in {data_dir}; run "
        f"python data_prep/au_labels.py --data {data_dir}")
  with np.load(path) as z:
    aus = tuple(int(a) for a in z["aus"])
    pres, inten, valid = z["presence"], z["intensity"], z["valid"]
    source = str(z["source"])
  t = clip.num_frames
  def fit(x, fill=0):
    out = np.full((t,) + x.shape[1:], fill, x.dtype)
    out[:min(t, len(x))] = x[:t]
    return out
  return AULabels(aus, fit(inten).astype(np.float32), fit(pres).astype(bool),
                  fit(valid).astype(bool), None, source)


def write_meta(data_dir, aus: Sequence[int], clip_ids: Sequence[str]) -> pathlib.Path:
  """Writes ``au_labels/meta.json`` (the columns and the labelled clips)."""
  path = pathlib.Path(data_dir) / AU_DIR / META_FILE
  meta = {"format": META_FORMAT, "aus": [int(a) for a in aus], "clips": sorted(clip_ids)}
  files.atomic_write_bytes(path, json.dumps(meta, indent=1).encode())
  return path


def read_meta(data_dir) -> dict | None:
  """``au_labels/meta.json`` as a dict, or None where there is none."""
  path = pathlib.Path(data_dir) / AU_DIR / META_FILE
  if not path.is_file():
    return None
  try:
    meta = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise fmt.DatasetFormatError(f"cannot read {path}: {e}") from None
  if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
    raise fmt.DatasetFormatError(f"{path} is not a format-{META_FORMAT} AU label index")
  return meta


def stored_aus(data_dir, clips: Sequence[fmt.ClipMeta]) -> tuple[int, ...]:
  """The AU columns of the clips' labels, from ``au_labels/meta.json``.

  Raises DatasetFormatError when a clip has no labels. Datasets labelled
  before the meta file existed are read clip by clip (their columns must agree).
  """
  meta = read_meta(data_dir)
  if meta is None:
    seen = {load_clip_labels(data_dir, c).aus for c in clips}
    if len(seen) != 1:
      raise fmt.DatasetFormatError(f"AU labels in {data_dir} have different AU "
                                   f"columns: {sorted(seen)}")
    return seen.pop()
  labelled = set(meta["clips"])
  missing = [c.clip_id for c in clips if c.clip_id not in labelled]
  if missing:
    raise fmt.DatasetFormatError(
        f"no AU labels for clip {missing[0]!r} ({len(missing)} clips) in {data_dir}; run "
        f"python data_prep/au_labels.py --data {data_dir}")
  return tuple(int(a) for a in meta["aus"])


def facemesh_clip_labels(reader: fmt.ClipReader, clip: fmt.ClipMeta, mesh,
                         config, min_presence: float = 0.5):
  """FaceMesh proxies of one clip, computed on its stored face crops."""
  from lipsync_jax.vision import au_proxies  # pylint: disable=g-import-not-at-top
  t = clip.num_frames
  lms = np.full((t, 468, 3), np.nan, np.float32)
  valid = np.zeros((t,), bool)
  idx = np.nonzero(clip.found)[0]
  s = reader.img_size
  for b in range(0, len(idx), 64):
    chunk = idx[b:b + 64]
    frames = [reader.frames(clip, int(i), 1)[0] for i in chunk]
    # The crop is already the padded face box: its whole extent is the box.
    out, presence = mesh.run(frames, [(0, 0, s, s)] * len(frames))
    lms[chunk] = out
    valid[chunk] = presence >= min_presence
  if not valid.any():
    return au_proxies.AULabels(tuple(config.aus), np.zeros((t, len(config.aus)), np.float32),
                               np.zeros((t, len(config.aus)), bool), valid, None,
                               "facemesh_proxy")
  return au_proxies.compute_proxies(lms, config, valid)


def label_dataset(data_dir, source: str = "facemesh", *, csv_dir=None,
                  aus: Sequence[int] | None = None, overwrite: bool = False,
                  progress: Optional[Callable[[int], None]] = None) -> dict[str, int]:
  """Labels every clip of the dataset that has no labels yet.

  Args:
    data_dir: a packed dataset.
    source: "facemesh" or "openface".
    csv_dir: OpenFace CSV folder (source "openface"): ``<stem>.csv`` of each
      clip's source video.
    aus: AU columns (default: the speech AUs 10, 14, 20, 25, 26).
    overwrite: relabel clips that already have labels.
    progress: called with 1 after each clip.
  Returns:
    {"labelled": n, "skipped": n_existing}.
  """
  from lipsync_jax.vision import au_proxies  # pylint: disable=g-import-not-at-top
  index = fmt.load_index(data_dir)
  aus = tuple(aus or au_proxies.DEFAULT_AUS)
  reader = fmt.ClipReader(index.data_dir, index.codec, index.img_size)
  if source == "facemesh":
    from lipsync_jax.vision import face_mesh  # pylint: disable=g-import-not-at-top
    mesh = face_mesh.FaceMesh(batch_size=1)
    config = au_proxies.ProxyConfig(aus=aus)
  elif source == "openface":
    if csv_dir is None or not os.path.isdir(csv_dir):
      raise fmt.DatasetFormatError(f"--csv-dir {csv_dir} is not a folder of OpenFace CSVs")
    openface = au_proxies.OpenFaceCSVSource(csv_dir, aus)
  else:
    raise ValueError(f"source must be 'facemesh' or 'openface', got {source!r}")
  done = skipped = 0
  columns: dict[str, tuple[int, ...]] = {}
  for clip in index.clips:
    path = label_path(data_dir, clip.clip_id)
    if not overwrite and path.is_file():
      with np.load(path) as z:
        columns[clip.clip_id] = tuple(int(a) for a in z["aus"])
      skipped += 1
    else:
      if source == "facemesh":
        labels = facemesh_clip_labels(reader, clip, mesh, config)
      else:
        csv = openface.csv_path(clip.source)
        if not csv.is_file():
          raise fmt.DatasetFormatError(f"no OpenFace CSV {csv} for clip {clip.clip_id!r}")
        labels = openface.labels(csv)
      save_clip_labels(data_dir, clip.clip_id, labels)
      columns[clip.clip_id] = tuple(int(a) for a in labels.aus)
      done += 1
    if progress is not None:
      progress(1)
  kinds = set(columns.values())
  if len(kinds) > 1:
    raise fmt.DatasetFormatError(
        f"AU labels in {data_dir} have different AU columns {sorted(kinds)}: relabel "
        "with --overwrite")
  write_meta(data_dir, kinds.pop() if kinds else aus, list(columns))
  return {"labelled": done, "skipped": skipped}
