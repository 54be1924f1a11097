"""Offline face detection, box tracks, smoothing and padding.

Detectors implement the small ``FaceDetector`` protocol: a ``name`` and a
batched ``detect(frames)`` returning, per frame, a list of boxes
``(x1, y1, x2, y2, score)`` in pixels. Built in:

* ``blazeface`` (the default when available): MediaPipe BlazeFace short-range
  (128x128 input, faces within ~2 m, i.e. talking heads), run with
  ``ai-edge-litert``; the ``.tflite`` weights are read from the
  ``mediapipe==0.10.21`` wheel (installed with ``--no-deps``; mediapipe itself
  is never imported).
* ``blazeface_full``: BlazeFace full-range (192x192, small/far faces).
* ``haar``: OpenCV's frontal-face Haar cascade (no extra dependency); the
  fallback for ``default`` when the BlazeFace weights are missing.

Another detector (e.g. S3FD, given its weights) plugs in with
``register_detector(name, factory)``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pathlib
from typing import Callable, Protocol, Sequence

import cv2
import numpy as np

Box = tuple[float, float, float, float, float]


class FaceDetectionError(ValueError):
  """A detector cannot be created (unknown name, missing weights)."""


class FaceDetector(Protocol):
  name: str

  def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
    """frames: BGR uint8 (H, W, 3) images -> per frame, boxes in pixels."""


# ----------------------------------------------------------------------------
# Haar cascade.


class HaarDetector:
  """OpenCV frontal-face Haar cascade; score = the cascade's level weight."""

  name = "haar"

  def __init__(self, min_size_frac: float = 0.08, scale_factor: float = 1.1,
               min_neighbors: int = 5):
    path = os.path.join(cv2.data.haarcascades,
                        "haarcascade_frontalface_default.xml")
    self._cascade = cv2.CascadeClassifier(path)
    if self._cascade.empty():
      raise FaceDetectionError(f"cannot load the Haar cascade {path} (needs "
                               "opencv-python-headless<5)")
    self.min_size_frac = min_size_frac
    self.scale_factor = scale_factor
    self.min_neighbors = min_neighbors

  def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
    out = []
    for img in frames:
      gray = cv2.equalizeHist(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
      m = max(16, int(self.min_size_frac * min(gray.shape)))
      rects, _, weights = self._cascade.detectMultiScale3(
          gray, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors,
          minSize=(m, m), outputRejectLevels=True)
      out.append([(float(x), float(y), float(x + w), float(y + h), float(s))
                  for (x, y, w, h), s in zip(rects, np.ravel(weights))])
    return out


# ----------------------------------------------------------------------------
# BlazeFace.


def _mediapipe_model(file: str) -> pathlib.Path:
  spec = importlib.util.find_spec("mediapipe")  # does not import mediapipe
  if spec is None or not spec.submodule_search_locations:
    raise FaceDetectionError(
        "BlazeFace weights not found: install them with `pip install --no-deps "
        "mediapipe==0.10.21 ai-edge-litert backports.strenum flatbuffers`, or "
        "use --detector haar")
  root = pathlib.Path(list(spec.submodule_search_locations)[0])
  path = root / "modules" / "face_detection" / file
  if not path.is_file():
    raise FaceDetectionError(f"BlazeFace weights not found at {path}")
  return path


def _ssd_anchors(size: int, strides: Sequence[int],
                 per_cell: Sequence[int]) -> np.ndarray:
  """(A, 2) anchor centres in [0, 1] (MediaPipe SsdAnchorsCalculator, fixed
  anchor size)."""
  out = []
  for stride, n in zip(strides, per_cell):
    g = -(-size // stride)
    yy, xx = np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g,
                         indexing="ij")
    c = np.stack([xx.ravel(), yy.ravel()], -1)
    out.append(np.repeat(c, n, axis=0))
  return np.concatenate(out).astype(np.float32)


_BLAZEFACE = {
    # name: (file, input size, strides, anchors per cell per stride)
    "blazeface": ("face_detection_short_range.tflite", 128, (8, 16), (2, 6)),
    "blazeface_full": ("face_detection_full_range_sparse.tflite", 192, (4,),
                       (1,)),
}


class BlazeFaceDetector:
  """MediaPipe BlazeFace under ai-edge-litert, batched.

  Frames are letterboxed to a square (so vertical/wide video keeps its
  aspect), resized to the model input, RGB in [-1, 1]. Boxes are decoded from
  the SSD anchors, thresholded at ``min_score`` and NMS-ed at ``nms_iou``.
  ``detect`` takes any number of frames; the interpreter runs ``batch_size``
  at a time. Keep batch_size=1: the short-range graph reshapes with a batch of
  1 baked in (batched results are wrong), and under XNNPACK on CPU a batch of
  16 is slower per frame than single frames anyway (measured).
  """

  def __init__(self, variant: str = "blazeface", batch_size: int = 1,
               min_score: float = 0.7, nms_iou: float = 0.3,
               num_threads: int = 1):
    try:
      from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise FaceDetectionError(
          f"BlazeFace needs ai-edge-litert ({e}); install it with `pip install"
          " --no-deps mediapipe==0.10.21 ai-edge-litert backports.strenum "
          "flatbuffers`, or use --detector haar") from None
    file, self.size, strides, per_cell = _BLAZEFACE[variant]
    self.name = variant
    self.batch_size = batch_size
    self.min_score = min_score
    self.nms_iou = nms_iou
    self._interp = Interpreter(model_path=str(_mediapipe_model(file)),
                               num_threads=num_threads)
    inp = self._interp.get_input_details()[0]
    self._in = inp["index"]
    self._interp.resize_tensor_input(self._in,
                                     [batch_size, self.size, self.size, 3])
    self._interp.allocate_tensors()
    outs = sorted(self._interp.get_output_details(),
                  key=lambda d: -int(d["shape"][-1]))
    self._reg, self._cls = outs[0]["index"], outs[1]["index"]
    self._anchors = _ssd_anchors(self.size, strides, per_cell)

  def _letterbox(self, img: np.ndarray) -> tuple[np.ndarray, float, int, int]:
    h, w = img.shape[:2]
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    sq = cv2.copyMakeBorder(img, top, s - h - top, left, s - w - left,
                            cv2.BORDER_CONSTANT, value=0)
    x = cv2.resize(sq, (self.size, self.size), interpolation=cv2.INTER_AREA)
    x = cv2.cvtColor(x, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0
    return x, s / self.size, left, top

  def _decode(self, reg: np.ndarray, cls: np.ndarray, scale: float, left: int,
              top: int) -> list[Box]:
    score = 1.0 / (1.0 + np.exp(-np.clip(cls[:, 0], -80.0, 80.0)))
    keep = score >= self.min_score
    if not keep.any():
      return []
    r, a, sc = reg[keep], self._anchors[keep], score[keep]
    cx = r[:, 0] / self.size + a[:, 0]
    cy = r[:, 1] / self.size + a[:, 1]
    w, h = r[:, 2] / self.size, r[:, 3] / self.size
    px = self.size * scale
    x1, y1 = (cx - w / 2) * px - left, (cy - h / 2) * px - top
    x2, y2 = (cx + w / 2) * px - left, (cy + h / 2) * px - top
    rects = [[float(a), float(b), float(c - a), float(d - b)]
             for a, b, c, d in zip(x1, y1, x2, y2)]
    idx = cv2.dnn.NMSBoxes(rects, sc.tolist(), self.min_score, self.nms_iou)
    return [(float(x1[i]), float(y1[i]), float(x2[i]), float(y2[i]),
             float(sc[i])) for i in np.ravel(idx)]

  def detect(self, frames: Sequence[np.ndarray]) -> list[list[Box]]:
    out: list[list[Box]] = []
    for b in range(0, len(frames), self.batch_size):
      chunk = frames[b:b + self.batch_size]
      prep = [self._letterbox(f) for f in chunk]
      x = np.zeros((self.batch_size, self.size, self.size, 3), np.float32)
      x[:len(prep)] = np.stack([p[0] for p in prep])
      self._interp.set_tensor(self._in, x)
      self._interp.invoke()
      # The graph folds the batch into the anchor axis: (1, B * A, 16).
      reg = self._interp.get_tensor(self._reg).reshape(self.batch_size, -1, 16)
      cls = self._interp.get_tensor(self._cls).reshape(self.batch_size, -1, 1)
      for i, (_, scale, left, top) in enumerate(prep):
        out.append(self._decode(reg[i], cls[i], scale, left, top))
    return out


# ----------------------------------------------------------------------------
# Registry.

_FACTORIES: dict[str, Callable[..., FaceDetector]] = {
    "haar": HaarDetector,
    "blazeface": lambda **kw: BlazeFaceDetector("blazeface", **kw),
    "blazeface_full": lambda **kw: BlazeFaceDetector("blazeface_full", **kw),
}


def register_detector(name: str, factory: Callable[..., FaceDetector]) -> None:
  """Makes ``create_detector(name)`` call ``factory(**kwargs)``."""
  _FACTORIES[name] = factory


def available_detectors() -> list[str]:
  return ["default", *sorted(_FACTORIES)]


def create_detector(name: str = "default", **kwargs) -> FaceDetector:
  """Creates a detector by name; 'default' is BlazeFace, else Haar."""
  if name == "default":
    try:
      return _FACTORIES["blazeface"](**kwargs)
    except FaceDetectionError as e:
      logging.warning("BlazeFace unavailable (%s); using the Haar cascade", e)
      return _FACTORIES["haar"]()
  if name not in _FACTORIES:
    raise FaceDetectionError(f"unknown face detector {name!r}, expected one "
                             f"of: {', '.join(available_detectors())}")
  return _FACTORIES[name](**kwargs)


# ----------------------------------------------------------------------------
# Tracks.


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """IoU of box a (4,) with boxes b (N, 4)."""
  x1 = np.maximum(a[0], b[:, 0])
  y1 = np.maximum(a[1], b[:, 1])
  x2 = np.minimum(a[2], b[:, 2])
  y2 = np.minimum(a[3], b[:, 3])
  inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
  area = lambda z: (z[..., 2] - z[..., 0]) * (z[..., 3] - z[..., 1])
  return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def select_track(per_frame_boxes: Sequence[Sequence[Box]],
                 min_iou: float = 0.3
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
  """Picks one face per frame: the largest, then the one that follows it.

  Starting from the largest box of the first frame with a face, each frame
  takes the box overlapping the previous choice most (IoU >= min_iou), else
  its largest box (counted as a track jump). Frames without a detection get
  boxes linearly interpolated from their neighbours and found = False.

  Returns:
    boxes (T, 4) float32 x1, y1, x2, y2; found (T,) bool; notes (list of
    human-readable remarks, e.g. several faces seen).
  """
  t = len(per_frame_boxes)
  boxes = np.zeros((t, 4), np.float32)
  found = np.zeros((t,), bool)
  prev = None
  multi = jumps = 0
  for i, cands in enumerate(per_frame_boxes):
    if not cands:
      continue
    c = np.asarray([b[:4] for b in cands], np.float32)
    multi += len(c) > 1
    largest = int(np.argmax((c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])))
    k = largest
    if prev is not None:
      ious = _iou(prev, c)
      if ious.max() >= min_iou:
        k = int(np.argmax(ious))
      else:
        jumps += 1
    boxes[i], found[i], prev = c[k], True, c[k]
  notes = []
  if multi:
    notes.append(f"several faces in {multi} frame(s): kept the largest "
                 "consistent track")
  if jumps:
    notes.append(f"face track jumped {jumps} time(s)")
  if found.any() and not found.all():
    idx = np.nonzero(found)[0]
    for j in range(4):
      boxes[:, j] = np.interp(np.arange(t), idx, boxes[idx, j])
  return boxes, found, notes


def smooth_boxes(track: np.ndarray, window: int = 5) -> np.ndarray:
  """Centred moving average of a (T, 4) box track (edges use fewer boxes).

  Upstream averages the next 5 boxes (a forward-looking window); a centred
  window removes that lag.
  """
  track = np.asarray(track, np.float32)
  if window <= 1 or len(track) == 0:
    return track.copy()
  half = window // 2
  csum = np.concatenate([np.zeros((1, track.shape[1])),
                         np.cumsum(track, axis=0, dtype=np.float64)])
  i = np.arange(len(track))
  lo, hi = np.maximum(i - half, 0), np.minimum(i + half + 1, len(track))
  return ((csum[hi] - csum[lo]) / (hi - lo)[:, None]).astype(np.float32)


def pad_and_clip(box: np.ndarray | Sequence[float],
                 pads: Sequence[int] = (0, 10, 0, 0),
                 frame_shape: Sequence[int] = ()) -> np.ndarray:
  """Pads (top, bottom, left, right) pixels and clips to the frame.

  Args:
    box: (4,) or (T, 4) x1, y1, x2, y2 (a trailing score column is dropped).
    pads: pixels added above, below, left and right (upstream default: 10
      below).
    frame_shape: (H, W, ...) of the frame.

  Returns:
    int32 boxes of the same leading shape, 0 <= x1 < x2 <= W, 0 <= y1 < y2
    <= H.
  """
  b = np.asarray(box, np.float64)[..., :4]
  top, bottom, left, right = pads
  h, w = int(frame_shape[0]), int(frame_shape[1])
  x1 = np.clip(np.round(b[..., 0] - left), 0, w - 1)
  y1 = np.clip(np.round(b[..., 1] - top), 0, h - 1)
  x2 = np.clip(np.round(b[..., 2] + right), x1 + 1, w)
  y2 = np.clip(np.round(b[..., 3] + bottom), y1 + 1, h)
  return np.stack([x1, y1, x2, y2], -1).astype(np.int32)


def crop_faces(frame: np.ndarray, box: Sequence[int], size: int) -> np.ndarray:
  """(size, size, 3) crop of frame[y1:y2, x1:x2] (INTER_AREA resize)."""
  x1, y1, x2, y2 = (int(v) for v in box)
  return cv2.resize(frame[y1:y2, x1:x2], (size, size),
                    interpolation=cv2.INTER_AREA)


def smooth_track(boxes: np.ndarray, found: np.ndarray, window: int) -> np.ndarray:
  """Smooths (T, 4) boxes over each run of consecutive found frames."""
  out = boxes.astype(np.float64).copy()
  t = 0
  n = len(found)
  while t < n:
    if not found[t]:
      t += 1
      continue
    end = t
    while end < n and found[end]:
      end += 1
    out[t:end] = smooth_boxes(out[t:end], window=window)
    t = end
  return out


def fill_gaps(boxes: np.ndarray, found: np.ndarray, max_gap: int
              ) -> tuple[np.ndarray, np.ndarray]:
  """Bridges short detection misses inside a face track.

  A run of at most `max_gap` frames without a detection *between* two found
  frames is a miss of the detector, not an absent face: those frames get boxes
  interpolated linearly from the neighbours. Longer gaps and the frames before
  the first / after the last detection stay faceless (passed through).

  Args:
    boxes: (T, 4) x1, y1, x2, y2; rows of not-found frames are ignored.
    found: (T,) bool.
  Returns:
    boxes (T, 4) float64 and usable (T,) bool, usable = found or bridged.
  """
  boxes = np.asarray(boxes, np.float64).copy()
  found = np.asarray(found, bool)
  usable = found.copy()
  idx = np.flatnonzero(found)
  for a, b in zip(idx[:-1], idx[1:]):
    gap = b - a - 1
    if 0 < gap <= max_gap:
      w = (np.arange(1, gap + 1) / (gap + 1))[:, None]
      boxes[a + 1:b] = (1 - w) * boxes[a] + w * boxes[b]
      usable[a + 1:b] = True
  return boxes, usable
