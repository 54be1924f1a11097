"""Per-frame FaceMesh lip tracks stored beside a packed dataset.

The two-stage model trains on them: the renderer draws the target frame's
true lips, the audio-to-lips model regresses them. They are measured on the
dataset's own face crops (`lip_landmarks.crop_lips`, the whole crop as the
face box), the same crops the renderer sees and the same way inference
measures the face video's lips, so training and inference agree on where
the lips are.

Layout: ``DATA_DIR/lips/<key>.npz`` per clip (the key as ``au_store``'s),
written atomically, so an interrupted run keeps every finished clip and a
rerun measures only the rest::

  lips   (T, 40, 2) float32   lip points in crop units (0 where not valid)
  valid  (T,) bool            a face was stored and FaceMesh found lips
"""

from __future__ import annotations

import io
import os
import pathlib
from typing import Callable, Optional

import numpy as np

from lipsync_jax.data import au_store
from lipsync_jax.data import format as fmt
from lipsync_jax.io import files

LIPS_DIR = "lips"


def lips_path(data_dir: str | os.PathLike[str], clip_id: str) -> pathlib.Path:
  """``DATA_DIR/lips/<key>.npz``."""
  return pathlib.Path(data_dir) / LIPS_DIR / au_store.label_path(data_dir, clip_id).name


def save_clip_lips(data_dir, clip_id: str, lips: np.ndarray, valid: np.ndarray) -> pathlib.Path:
  path = lips_path(data_dir, clip_id)
  buf = io.BytesIO()
  np.savez(buf, lips=np.asarray(lips, np.float32), valid=np.asarray(valid, bool))
  path.parent.mkdir(parents=True, exist_ok=True)
  files.atomic_write_bytes(path, buf.getvalue())
  return path


def load_clip_lips(data_dir, clip: fmt.ClipMeta) -> tuple[np.ndarray, np.ndarray]:
  """(lips (T, 40, 2), valid (T,)) of a clip; one-line error when missing."""
  path = lips_path(data_dir, clip.clip_id)
  if not path.is_file():
    raise fmt.DatasetFormatError(
        f"no lip track for clip {clip.clip_id!r} in {data_dir}; run "
        f"python data_prep/lip_tracks.py --data {data_dir}")
  with np.load(path) as z:
    lips, valid = z["lips"], z["valid"]
  if len(lips) != clip.num_frames:
    raise fmt.DatasetFormatError(
        f"the lip track of clip {clip.clip_id!r} has {len(lips)} frames, the clip "
        f"{clip.num_frames}: rerun python data_prep/lip_tracks.py --data {data_dir} "
        "--overwrite")
  return lips, valid & np.asarray(clip.found, bool)


def measure_clip(reader: fmt.ClipReader, clip: fmt.ClipMeta, mesh, batch: int = 64
                 ) -> tuple[np.ndarray, np.ndarray]:
  """FaceMesh lips of one clip's stored crops: (lips (T, 40, 2), valid (T,))."""
  from lipsync_jax.vision import lip_landmarks  # pylint: disable=g-import-not-at-top
  t = clip.num_frames
  lips = np.zeros((t, lip_landmarks.NUM_LIP_POINTS, 2), np.float32)
  valid = np.zeros((t,), bool)
  idx = np.nonzero(clip.found)[0]
  for b in range(0, len(idx), batch):
    chunk = idx[b:b + batch]
    crops = np.stack([reader.frames(clip, int(i), 1)[0] for i in chunk])
    pts, presence = lip_landmarks.crop_lips(mesh, crops, batch)
    lips[chunk] = pts
    valid[chunk] = presence >= lip_landmarks.MIN_PRESENCE
  return lips, valid


def track_dataset(data_dir, overwrite: bool = False,
                  progress: Optional[Callable[[int], None]] = None) -> dict[str, int]:
  """Measures the lips of every clip that has no track yet.

  Returns {"measured": n, "skipped": n_existing, "frames": n_valid_frames}.
  """
  from lipsync_jax.vision import face_mesh  # pylint: disable=g-import-not-at-top
  index = fmt.load_index(data_dir)
  reader = fmt.ClipReader(index.data_dir, index.codec, index.img_size)
  mesh = None
  done = skipped = frames = 0
  for clip in index.clips:
    path = lips_path(data_dir, clip.clip_id)
    if not overwrite and path.is_file():
      skipped += 1
    else:
      mesh = mesh or face_mesh.FaceMesh()
      lips, valid = measure_clip(reader, clip, mesh)
      save_clip_lips(data_dir, clip.clip_id, lips, valid)
      frames += int(valid.sum())
      done += 1
    if progress is not None:
      progress(1)
  return {"measured": done, "skipped": skipped, "frames": frames}
