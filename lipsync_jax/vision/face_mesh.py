"""MediaPipe FaceMesh landmarks (468 points) run with ``ai-edge-litert``.

The model is ``mediapipe/modules/face_landmark/face_landmark.tflite`` from the
``mediapipe==0.10.21`` wheel (installed with ``--no-deps``; mediapipe itself
is never imported, the file is located with ``importlib.util.find_spec``, as
in ``face_detection``):

* input ``(N, 192, 192, 3)`` RGB float32 in [0, 1];
* outputs ``(N, 1, 1, 1404)`` = 468 x (x, y, z) in input pixels, and
  ``(N, 1, 1, 1)`` a face-presence logit.

Cropping (spec/variants.md B5, MediaPipe's face_landmark graph): a square ROI
``roi_scale`` (1.5) times the longer side of the face box, centred on it, is
warped to 192x192 (replicated border) and the landmarks are mapped back to
image pixels. With ``refine=True`` (default) a second pass re-crops from the
first pass's landmarks, as MediaPipe's tracking loop does: the square ROI is
1.5x the landmarks' extent, rotated so that the eye line (points 33 -> 263)
is horizontal, which makes the landmarks robust to loose boxes and head roll.

x and y come back in image pixels; z is MediaPipe's relative depth (smaller
= closer to the camera, roughly 0 at the head centre) scaled by the same
factor as x and y, so it is in (approximately) image pixels too.

``video_landmarks`` runs detection, a smoothed face track and FaceMesh over a
video.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import math
import os
import pathlib
from typing import Optional, Sequence, Union

import cv2
import numpy as np

PathLike = Union[str, os.PathLike]

NUM_LANDMARKS = 468
INPUT_SIZE = 192
_INSTALL_HINT = ("install them with `pip install --no-deps mediapipe==0.10.21 "
                 "ai-edge-litert backports.strenum flatbuffers`")

# Eye outer corners (subject's right eye shows on the image's left).
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


class FaceMeshError(ValueError):
  """FaceMesh cannot be created (missing runtime or weights) or run."""


def model_path() -> pathlib.Path:
  """Path of ``face_landmark.tflite`` inside the installed mediapipe wheel.

  Raises:
    FaceMeshError: mediapipe is not installed or the file is missing.
  """
  spec = importlib.util.find_spec("mediapipe")  # does not import mediapipe
  if spec is None or not spec.submodule_search_locations:
    raise FaceMeshError(f"FaceMesh weights not found: {_INSTALL_HINT}")
  root = pathlib.Path(list(spec.submodule_search_locations)[0])
  path = root / "modules" / "face_landmark" / "face_landmark.tflite"
  if not path.is_file():
    raise FaceMeshError(f"FaceMesh weights not found at {path}; "
                        f"{_INSTALL_HINT}")
  return path


@dataclasses.dataclass(frozen=True)
class Roi:
  """A square, possibly rotated, crop of an image.

  Attributes:
    cx, cy: centre in image pixels (continuous coordinates: the top-left
      corner of the image is (0, 0), pixel (i, j) covers [j, j+1) x [i, i+1)).
    size: side length in image pixels.
    angle: rotation in radians; the crop's +x axis points along
      (cos angle, sin angle) in image coordinates (y down).
  """
  cx: float
  cy: float
  size: float
  angle: float = 0.0

  def crop_to_image(self, n: int = INPUT_SIZE) -> np.ndarray:
    """(2, 3) affine map from crop pixels (continuous, [0, n]) to image."""
    c, s = math.cos(self.angle), math.sin(self.angle)
    k = self.size / n
    rot = np.array([[c, -s], [s, c]]) * k
    t = np.array([self.cx, self.cy]) - rot @ np.array([n / 2, n / 2])
    return np.concatenate([rot, t[:, None]], 1)


def roi_from_box(box: Sequence[float], scale: float = 1.5,
                 angle: float = 0.0) -> Roi:
  """Square ROI ``scale`` x the longer side of box (x1, y1, x2, y2, ...)."""
  x1, y1, x2, y2 = (float(v) for v in box[:4])
  return Roi((x1 + x2) / 2, (y1 + y2) / 2, scale * max(x2 - x1, y2 - y1),
             angle)


def roi_from_landmarks(landmarks: np.ndarray, scale: float = 1.5) -> Roi:
  """Square ROI around (468, 2+) image-pixel landmarks, rotated to the eyes.

  The rotation makes the eye line (33 -> 263) the crop's x axis; the ROI is
  ``scale`` x the longer side of the landmarks' extent in that rotated frame
  (MediaPipe's face_landmark_landmarks_to_roi).
  """
  xy = np.asarray(landmarks, np.float64)[:, :2]
  d = xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]
  angle = math.atan2(d[1], d[0])
  c, s = math.cos(angle), math.sin(angle)
  rot = np.array([[c, s], [-s, c]])  # image -> crop axes
  local = xy @ rot.T
  lo, hi = local.min(0), local.max(0)
  centre = rot.T @ ((lo + hi) / 2)
  return Roi(float(centre[0]), float(centre[1]),
             float(scale * max(hi - lo)), angle)


class FaceMesh:
  """MediaPipe FaceMesh under ai-edge-litert.

  ``landmarks(image, box)`` -> (468, 3); ``run(images, boxes)`` does a batch
  and also returns the face-presence probabilities. The interpreter runs
  ``batch_size`` crops per invoke (the graph accepts a batch; results equal
  single-crop runs); on CPU a batch of 1 costs ~2-3 ms, batching barely
  helps, so the default is 1.

  Args:
    batch_size: crops per interpreter call.
    roi_scale: ROI side / face-box side (and / landmark extent on refine).
    refine: re-crop from the first pass's landmarks (rotated ROI) and run
      again (2x the cost).
    num_threads: interpreter threads.

  Raises:
    FaceMeshError: ai-edge-litert or the model file is missing.
  """

  def __init__(self, batch_size: int = 1, roi_scale: float = 1.5,
               refine: bool = True, num_threads: int = 1):
    try:
      from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise FaceMeshError(f"FaceMesh needs ai-edge-litert ({e}); "
                          f"{_INSTALL_HINT}") from None
    self.batch_size = int(batch_size)
    self.roi_scale = roi_scale
    self.refine = refine
    self._interp = Interpreter(model_path=str(model_path()),
                               num_threads=num_threads)
    self._in = self._interp.get_input_details()[0]["index"]
    self._interp.resize_tensor_input(
        self._in, [self.batch_size, INPUT_SIZE, INPUT_SIZE, 3])
    self._interp.allocate_tensors()
    outs = sorted(self._interp.get_output_details(),
                  key=lambda d: -int(d["shape"][-1]))
    self._lm, self._score = outs[0]["index"], outs[1]["index"]

  # --------------------------------------------------------------------------

  @staticmethod
  def _warp(image: np.ndarray, roi: Roi) -> np.ndarray:
    """(192, 192, 3) RGB float32 [0, 1] crop of a BGR uint8 image."""
    a = roi.crop_to_image()
    # cv2 works in pixel-index coordinates (centres at integers): shift by
    # half a pixel on both sides of the continuous map.
    m = a.copy()
    m[:, 2] += a[:, :2] @ np.array([0.5, 0.5]) - 0.5
    crop = cv2.warpAffine(image, m, (INPUT_SIZE, INPUT_SIZE),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0

  def _invoke(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """crops (N, 192, 192, 3) -> landmarks (N, 468, 3) crop px, scores (N,)."""
    n = len(crops)
    lms = np.empty((n, NUM_LANDMARKS, 3), np.float32)
    scores = np.empty((n,), np.float32)
    for b in range(0, n, self.batch_size):
      chunk = crops[b:b + self.batch_size]
      x = np.zeros((self.batch_size, INPUT_SIZE, INPUT_SIZE, 3), np.float32)
      x[:len(chunk)] = chunk
      self._interp.set_tensor(self._in, x)
      self._interp.invoke()
      lm = self._interp.get_tensor(self._lm).reshape(self.batch_size, -1, 3)
      sc = self._interp.get_tensor(self._score).reshape(self.batch_size)
      lms[b:b + len(chunk)] = lm[:len(chunk)]
      scores[b:b + len(chunk)] = 1.0 / (1.0 + np.exp(-np.clip(
          sc[:len(chunk)], -80.0, 80.0)))
    return lms, scores

  def _pass(self, images: Sequence[np.ndarray], rois: Sequence[Roi]
            ) -> tuple[np.ndarray, np.ndarray]:
    crops = np.stack([self._warp(im, r) for im, r in zip(images, rois)])
    lms, scores = self._invoke(crops)
    out = np.empty_like(lms)
    for i, roi in enumerate(rois):
      a = roi.crop_to_image()
      out[i, :, :2] = lms[i, :, :2] @ a[:, :2].T + a[:, 2]
      out[i, :, 2] = lms[i, :, 2] * (roi.size / INPUT_SIZE)
    return out, scores

  def run(self, images: Sequence[np.ndarray], boxes: Sequence[Sequence[float]]
          ) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of one face per image.

    Args:
      images: N BGR uint8 (H, W, 3) images (sizes may differ).
      boxes: N face boxes (x1, y1, x2, y2[, score]) in image pixels.

    Returns:
      landmarks (N, 468, 3) float32: x, y in image pixels, z relative depth
      in the same scale; presence (N,) float32 face-presence probability.
    """
    if len(images) != len(boxes):
      raise FaceMeshError(f"got {len(images)} images but {len(boxes)} boxes")
    if not len(images):
      return (np.zeros((0, NUM_LANDMARKS, 3), np.float32),
              np.zeros((0,), np.float32))
    for im in images:
      if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
        raise FaceMeshError("images must be BGR uint8 (H, W, 3), got "
                            f"{im.dtype} {im.shape}")
    rois = [roi_from_box(b, self.roi_scale) for b in boxes]
    lms, scores = self._pass(images, rois)
    if self.refine:
      rois = [roi_from_landmarks(lm, self.roi_scale) for lm in lms]
      lms, scores = self._pass(images, rois)
    return lms, scores

  def landmarks(self, image_bgr: np.ndarray,
                box: Sequence[float]) -> np.ndarray:
    """(468, 3) landmarks (x, y image pixels; z relative depth) of one face.

    Args:
      image_bgr: BGR uint8 (H, W, 3).
      box: face box (x1, y1, x2, y2[, score]) in pixels, e.g. from
        ``face_detection``.
    """
    return self.run([image_bgr], [box])[0][0]


# ----------------------------------------------------------------------------
# Videos.


@dataclasses.dataclass
class VideoLandmarks:
  """FaceMesh over (a subsample of) a video's frames.

  Attributes:
    frame_indices: (T,) int indices of the frames used (at ``fps``).
    landmarks: (T, 468, 3) float32 image-pixel landmarks.
    presence: (T,) FaceMesh face-presence probabilities.
    detected: (T,) whether the face detector found the face on that frame
      (others use an interpolated box).
    fps: frame rate of the indices.
    num_frames: frames in the (resampled) video.
    detector: name of the detector used.
  """
  frame_indices: np.ndarray
  landmarks: np.ndarray
  presence: np.ndarray
  detected: np.ndarray
  fps: float
  num_frames: int
  detector: str


def video_landmarks(path: PathLike, mesh: Optional[FaceMesh] = None,
                    detector=None, step: int = 1, fps: Optional[float] = 25.0,
                    max_frames: Optional[int] = None,
                    smooth: int = 5) -> VideoLandmarks:
  """Detects the face, tracks and smooths its box, and runs FaceMesh.

  Args:
    path: a video file.
    mesh: a FaceMesh (created when None).
    detector: a ``face_detection.FaceDetector`` (default: the library's
      default, BlazeFace). If it finds no face on any used frame, the Haar
      cascade is tried, then the whole frame is used as the box.
    step: use every ``step``-th frame.
    fps: resample the video to this rate first (None: decoded frames).
    max_frames: stop after this many (resampled) frames.
    smooth: moving-average window of the box track (in used frames).

  Returns:
    VideoLandmarks.
  """
  from lipsync_jax.vision import face_detection as fd  # pylint: disable=g-import-not-at-top
  from lipsync_jax.io import video  # pylint: disable=g-import-not-at-top
  mesh = mesh or FaceMesh()
  detector = detector or fd.create_detector("default")
  it = video.iter_frames(path, fps=fps)
  if max_frames is not None:
    it = itertools.islice(it, max_frames)
  frames, idx, n = [], [], 0
  for i, f in enumerate(it):
    n = i + 1
    if i % step == 0:
      frames.append(f)
      idx.append(i)
  if not frames:
    raise FaceMeshError(f"no frames in {path}")
  name = detector.name
  dets = detector.detect(frames)
  if not any(dets):
    haar = fd.create_detector("haar")
    dets, name = haar.detect(frames), haar.name
  if any(dets):
    boxes, found, _ = fd.select_track(dets)
    boxes = fd.smooth_boxes(boxes, smooth)
  else:
    h, w = frames[0].shape[:2]
    boxes = np.tile(np.array([[0, 0, w, h]], np.float32), (len(frames), 1))
    found, name = np.zeros((len(frames),), bool), "whole_frame"
  lms, pres = mesh.run(frames, boxes)
  return VideoLandmarks(np.asarray(idx), lms, pres, found,
                        float(fps) if fps else float(video.probe(path).fps),
                        n, name)
