"""Face crops of a video, as the sync scorers see them.

`video_face_crops` finds the face in every frame (any detector of
`face_detection`), smooths the box track as `infer.py` does, and crops the
longest run of frames with a face, at the scoring frame rate. `evaluate
--videos`, the landmark expert's lip tracks and the benches share it.
`face_track` and `crops_along` are its two passes, for cropping a re-synced
video along its source's track.
"""

from __future__ import annotations

import dataclasses
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


@dataclasses.dataclass(frozen=True)
class FaceTrack:
  """Where the face is in a video, frame by frame, at the scoring frame rate.

  boxes: (T, 4) float64 (x1, y1, x2, y2) pixel boxes of every frame, padded
    and smoothed as `infer.py` pads and smooths them.
  start, stop: the longest run of frames with a face, [start, stop).
  fps: the frame rate the boxes index (frames are resampled to it when the
    video's own rate differs).
  resample: the rate handed to the frame reader, None for the video's own.
  notes: what was done that a user should know (resampling, a shorter span).
  """
  boxes: np.ndarray
  start: int
  stop: int
  fps: float
  resample: float | None
  notes: tuple[str, ...]


def face_track(path: str, detector: Any, pads=(0, 10, 0, 0), smooth_window: int = 5,
               min_frames: int = 25, batch_size: int = 16, fps: float = SCORING_FPS
               ) -> FaceTrack:
  """The face's box in every frame of a video (one streaming detection pass).

  Raises FaceCropError (one line) for a video with no video or audio stream,
  no face, or a longest run with a face under `min_frames`.
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
  return FaceTrack(np.asarray(boxes, np.float64), start, stop, fps, resample, tuple(notes))


def crops_along(path: str, track: FaceTrack, size: int) -> np.ndarray:
  """(<= stop - start, size, size, 3) uint8 crops of a video along a face track.

  The video may be another one than the track was found in: a re-synced copy
  cropped along its source's track gives crops that match the source's pixel
  for pixel where the two agree, which is what PSNR and SSIM against the
  source must compare (boxes found anew on the copy move by a pixel or two
  with its new mouth). The video is read at the track's frame rate, so it
  must share its source's frame timeline, as a re-synced copy does. A video
  that ends early gives fewer crops (a re-synced copy is as long as its
  audio); FaceCropError if it ends before the track starts.
  """
  crops = []
  for t, frame in enumerate(video_lib.iter_frames(path, fps=track.resample)):
    if t >= track.stop:
      break
    if t < track.start:
      continue
    box = blending.clip_box(track.boxes[t], frame.shape)
    if box is None:
      raise FaceCropError(f"empty face box at frame {t}")
    x1, y1, x2, y2 = box
    crops.append(cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA))
  if not crops:
    raise FaceCropError(f"{path} ends before frame {track.start}, where the face track "
                        "starts")
  return np.stack(crops)


def video_face_crops(path: str, size: int, detector: Any, pads=(0, 10, 0, 0),
                     smooth_window: int = 5, min_frames: int = 25,
                     batch_size: int = 16, fps: float = SCORING_FPS
                     ) -> tuple[np.ndarray, int, float, list[str]]:
  """Face crops of a video's longest run of frames with a face, at `fps`.

  Two streaming passes (`face_track`, then `crops_along`), so only the crops
  stay in memory. Returns (crops (n, size, size, 3) uint8, first frame, fps,
  notes).
  """
  track = face_track(path, detector, pads, smooth_window, min_frames, batch_size, fps)
  return crops_along(path, track, size), track.start, track.fps, list(track.notes)
