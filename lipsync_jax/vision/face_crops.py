"""Face crops of a video, as the sync scorers see them.

`video_face_crops` finds the face in every frame (any detector of
`face_detection`), smooths the box track as `infer.py` does, and crops the
longest run of frames with a face, at the scoring frame rate. `evaluate
--videos`, the landmark expert's lip tracks and the benches share it.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from lipsync_jax.io import video as video_lib
from lipsync_jax.vision import blending
from lipsync_jax.vision import face_detection

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".mpg", ".mpeg", ".webm")
SCORING_FPS = 25.0  # SyncNets' frame rate: 5 frames = one 0.2 s audio window


class FaceCropError(ValueError):
  """A video gives no usable face crops; the message is the one-line reason."""


def longest_run(found: np.ndarray) -> tuple[int, int]:
  """[start, stop) of the longest run of True in a (T,) mask; (0, 0) if none."""
  best, start = (0, 0), None
  for t, f in enumerate(list(np.asarray(found, bool)) + [False]):
    if f and start is None:
      start = t
    elif not f and start is not None:
      if t - start > best[1] - best[0]:
        best = (start, t)
      start = None
  return best


def video_face_crops(path: str, size: int, detector: Any, pads=(0, 10, 0, 0),
                     smooth_window: int = 5, min_frames: int = 25,
                     batch_size: int = 16, fps: float = SCORING_FPS
                     ) -> tuple[np.ndarray, int, float, list[str]]:
  """Face crops of a video's longest run of frames with a face, at `fps`.

  Two streaming passes (detect, then crop), so only the crops stay in memory.
  Returns (crops (n, size, size, 3) uint8, first frame, fps, notes).
  """
  info = video_lib.probe(path)
  if not info.has_video:
    raise FaceCropError("no video stream")
  if not info.has_audio:
    raise FaceCropError("no audio stream")
  # SyncNets are trained at 25 fps (5 frames = one 0.2 s audio window):
  # other rates, and variable ones, are resampled by timestamp.
  resample = None if (abs(info.fps - fps) < 1e-3 and not info.is_vfr) else fps
  per_frame: list = []
  batch: list[np.ndarray] = []
  shape = None
  for frame in video_lib.iter_frames(path, fps=resample):
    shape = frame.shape
    batch.append(frame)
    if len(batch) == batch_size:
      per_frame.extend(detector.detect(batch))
      batch = []
  if batch:
    per_frame.extend(detector.detect(batch))
  if not per_frame:
    raise FaceCropError("no frames could be decoded")
  boxes, found, notes = face_detection.select_track(per_frame)
  boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
  found = np.asarray(found, bool)
  for t in np.flatnonzero(found):
    boxes[t] = face_detection.pad_and_clip(boxes[t], pads, shape)[:4]
  boxes = face_detection.smooth_track(boxes, found, smooth_window)
  start, stop = longest_run(found)
  if stop == start:
    raise FaceCropError(f"no face found in any of {len(found)} frames")
  if stop - start < min_frames:
    raise FaceCropError(f"too short: longest run of frames with a face is "
                       f"{stop - start} (< --min-frames {min_frames})")
  notes = list(notes)
  if resample is not None:
    notes.append(f"resampled from {info.fps:.2f} fps{' (variable)' if info.is_vfr else ''} "
                 f"to {fps:g} fps")
  if stop - start < len(found):
    notes.append(f"scored frames {start}..{stop - 1} of {len(found)} (longest run with a face)")
  crops = []
  for t, frame in enumerate(video_lib.iter_frames(path, fps=resample)):
    if t >= stop:
      break
    if t < start:
      continue
    box = blending.clip_box(boxes[t], frame.shape)
    if box is None:
      raise FaceCropError(f"empty face box at frame {t}")
    x1, y1, x2, y2 = box
    crops.append(cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA))
  return np.stack(crops), start, fps, notes
