"""Speech-related facial action units (AUs): geometric proxies and labels.

OpenFace and pre-trained AU classifiers are not available offline, so the AU
labels of the ``au_tcn`` variant come, by default, from geometric proxies on
MediaPipe FaceMesh landmarks (spec/variants.md B5; an [assumed] design whose
thresholds are starting points to calibrate). Everything here is pure numpy on
``(T, 468, 3)`` landmark arrays of ONE clip (x, y in image pixels, z relative
depth, as ``face_mesh.FaceMesh`` returns them).

Measures (all distances in the image plane divided by the inter-ocular
distance ``IOD = |p33 - p263|`` of the same frame):

* AU25 lips part: inner-lip gap ``g = |p13 - p14|``; activation ``g`` (no
  baseline); present if ``> 0.03``.
* AU26 jaw drop: ``j = |p2 - p152|``; activation ``j - P5(j)``; present if
  ``> 0.05`` and AU25 is present.
* AU20 lip stretcher: width ``w = |p61 - p291|``; activation ``w - P50(w)``;
  present if ``> 0.02`` and the corner height ``h <= P50(h) + 0.01``.
* AU10 upper lip raiser: ``u = |p2 - p0|``; activation ``P50(u) - u``;
  present if ``> 0.012``.
* AU14 dimpler: corner depth ``d = mean z(61, 291) - mean z(0, 17)`` (/IOD);
  activation ``au14_sign * (P50(d) - d)``; present if ``> 0.008``.
* AU12 / AU15 (extended set): activation ``h - P50(h)`` (raised) /
  ``P50(h) - h`` (lowered); present if ``> 0.015``.
* AU17 (extended): ``c = |p17 - p152|``; activation ``P50(c) - c``; present if
  ``> 0.02``.
* AU23 (extended): lip thickness ``t = |p0 - p13| + |p14 - p17|``; activation
  ``P20(t) - t``; present if ``> 0`` while AU25 is off.

``h`` (corner height) is the height of the lip centre line ``(p0 + p17) / 2``
above the mean of the corners 61 and 291, measured along the face's vertical
axis (perpendicular to the eye line, so head roll does not leak into it);
positive = corners raised.

``Pq(x)`` is the q-th percentile of x over the clip: the per-clip baseline.
Speaking clips always contain closed, neutral mouths, so P5 is a neutral
reference for the jaw; P50 is used for measures that move both ways. This
needs a clip of speech (tens of frames or more); on a single frame every
baseline-relative activation is 0.

Intensity on OpenFace's 0-5 scale: ``clip(5 * activation / P95, 0, 5)``,
where P95 is the 95th percentile of the activation over the DATASET
(``dataset_p95`` over many clips); without it, the clip's own P95 is used.

AU14 sign: the spec writes the activation as ``P50 - d``. Under MediaPipe's z
convention (smaller z = closer to the camera) a dimpler, which pulls the lip
corners back into the cheeks, makes ``d`` larger, i.e. the spec's sign marks
the opposite movement. ``ProxyConfig.au14_sign`` (default +1 = the spec's
formula) flips it; the spec rates AU14 "low reliability, validate or drop".

``align=True`` first rigidly aligns (rotation, translation and scale) each
frame's 3-D landmarks to the clip's median shape on the stable points 33,
133, 362, 263, 1, 168, 10 (spec B5, for strong head rotation).

Label sources (``AULabelSource``): ``FaceMeshProxySource`` (the proxies, from
a video or from landmarks) and ``OpenFaceCSVSource`` (OpenFace 2.x
``AUxx_r`` / ``AUxx_c`` columns), so real OpenFace labels plug in unchanged.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
from typing import (Mapping, Optional, Protocol, Sequence, Union,
                    runtime_checkable)

import numpy as np

PathLike = Union[str, os.PathLike]

DEFAULT_AUS = (10, 14, 20, 25, 26)
EXTENDED_AUS = (10, 12, 14, 15, 17, 20, 23, 25, 26)
SUPPORTED_AUS = EXTENDED_AUS

# Presence thresholds on the activation, in IOD units (spec B5 "start").
DEFAULT_THRESHOLDS: Mapping[int, float] = {
    10: 0.012, 12: 0.015, 14: 0.008, 15: 0.015, 17: 0.02, 20: 0.02, 23: 0.0,
    25: 0.03, 26: 0.05,
}

# Landmark indices (MediaPipe canonical mesh; spec B5).
UPPER_LIP_OUTER, UPPER_LIP_INNER = 0, 13
LOWER_LIP_INNER, LOWER_LIP_OUTER = 14, 17
MOUTH_CORNERS = (61, 291)
SUBNASALE, CHIN = 2, 152
EYE_OUTER = (33, 263)
STABLE_POINTS = (33, 133, 362, 263, 1, 168, 10)


class AUError(ValueError):
  """Bad AU configuration or label input."""


@dataclasses.dataclass(frozen=True)
class ProxyConfig:
  """Configuration of the geometric AU proxies.

  Attributes:
    aus: AU numbers, in output column order (subset of SUPPORTED_AUS).
    thresholds: presence threshold per AU on the activation (IOD units);
      AUs missing here use DEFAULT_THRESHOLDS.
    jaw_percentile: baseline percentile of the jaw opening (AU26).
    au20_corner_tolerance: AU20 needs the corner height h <= P50(h) + this
      (a stretch, not a smile).
    au23_percentile: AU23 (lip presser) baseline percentile of lip thickness.
    au14_sign: +1 follows the spec's ``P50(d) - d``; -1 flips it (see the
      module docstring).
    align: rigidly align the landmarks to the clip's median shape first.
  """
  aus: tuple[int, ...] = DEFAULT_AUS
  thresholds: Mapping[int, float] = dataclasses.field(
      default_factory=lambda: dict(DEFAULT_THRESHOLDS))
  jaw_percentile: float = 5.0
  au20_corner_tolerance: float = 0.01
  au23_percentile: float = 20.0
  au14_sign: float = 1.0
  align: bool = False

  def __post_init__(self):
    bad = [a for a in self.aus if a not in SUPPORTED_AUS]
    if bad:
      raise AUError(f"unsupported AU(s) {bad}; the proxies cover "
                    f"{list(SUPPORTED_AUS)}")
    if len(set(self.aus)) != len(self.aus):
      raise AUError(f"duplicate AUs in {list(self.aus)}")

  def threshold(self, au: int) -> float:
    return float(self.thresholds.get(au, DEFAULT_THRESHOLDS[au]))


@dataclasses.dataclass
class AULabels:
  """Per-frame AU labels of one clip.

  Attributes:
    aus: (K,) AU numbers, the column order.
    intensity: (T, K) float32 in [0, 5] (OpenFace ``_r`` scale).
    presence: (T, K) bool (OpenFace ``_c``).
    valid: (T,) bool, False where the face was not found / tracked.
    activation: (T, K) float32 raw proxy activation in IOD units (proxies
      only; None for OpenFace).
    source: name of the label source.
  """
  aus: tuple[int, ...]
  intensity: np.ndarray
  presence: np.ndarray
  valid: np.ndarray
  activation: Optional[np.ndarray] = None
  source: str = ""

  def column(self, au: int) -> int:
    return self.aus.index(au)


# ----------------------------------------------------------------------------
# Geometry.


def _check_landmarks(landmarks: np.ndarray) -> np.ndarray:
  lm = np.asarray(landmarks, np.float64)
  if lm.ndim != 3 or lm.shape[1] != 468 or lm.shape[2] not in (2, 3):
    raise AUError(f"landmarks must be (T, 468, 3), got {lm.shape}")
  if lm.shape[2] == 2:
    lm = np.concatenate([lm, np.zeros(lm.shape[:2] + (1,))], -1)
  return lm


def inter_ocular(landmarks: np.ndarray) -> np.ndarray:
  """(T, 468, 2+) -> (T,) image-plane distance between points 33 and 263."""
  lm = np.asarray(landmarks)
  return np.linalg.norm(lm[:, EYE_OUTER[0], :2] - lm[:, EYE_OUTER[1], :2],
                        axis=-1)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
  """(4, 4) homogeneous similarity best mapping src (N, 3) onto dst (N, 3)."""
  ms, md = src.mean(0), dst.mean(0)
  a, b = src - ms, dst - md
  u, s, vt = np.linalg.svd(b.T @ a)
  d = np.sign(np.linalg.det(u @ vt))
  fix = np.diag([1.0, 1.0, d])
  rot = u @ fix @ vt
  scale = (s * np.diag(fix)).sum() / max((a ** 2).sum(), 1e-12)
  m = np.eye(4)
  m[:3, :3] = scale * rot
  m[:3, 3] = md - scale * rot @ ms
  return m


def align_to_median(landmarks: np.ndarray,
                    points: Sequence[int] = STABLE_POINTS) -> np.ndarray:
  """Rigidly aligns every frame to the clip's median shape.

  Args:
    landmarks: (T, 468, 3).
    points: stable landmark indices the similarity transform is fitted on.

  Returns:
    (T, 468, 3) float64 landmarks in the median shape's frame.
  """
  lm = _check_landmarks(landmarks)
  ref = np.median(lm[:, list(points)], axis=0)
  out = np.empty_like(lm)
  for t in range(len(lm)):
    m = _similarity(lm[t, list(points)], ref)
    out[t] = lm[t] @ m[:3, :3].T + m[:3, 3]
  return out


def geometry(landmarks: np.ndarray, align: bool = False
             ) -> dict[str, np.ndarray]:
  """Raw per-frame mouth measures, in IOD units.

  Args:
    landmarks: (T, 468, 3) (x, y image pixels, z relative depth); (T, 468, 2)
      is accepted (z = 0, so the AU14 depth is 0).
    align: align to the clip's median shape first (``align_to_median``).

  Returns:
    dict of (T,) float64 arrays: ``iod`` (pixels), ``gap`` (AU25), ``jaw``
    (AU26), ``width`` (AU20), ``corner_height`` (AU12/15/20), ``upper_lip``
    (AU10), ``corner_depth`` (AU14), ``chin`` (AU17), ``thickness`` (AU23).
  """
  lm = _check_landmarks(landmarks)
  if align:
    lm = align_to_median(lm)
  iod = np.maximum(inter_ocular(lm), 1e-9)
  xy = lm[..., :2]
  dist = lambda i, j: np.linalg.norm(xy[:, i] - xy[:, j], axis=-1) / iod
  # Face axes from the eye line: e_x along 33 -> 263, e_y perpendicular
  # (pointing down the face in image coordinates).
  ex = xy[:, EYE_OUTER[1]] - xy[:, EYE_OUTER[0]]
  ex /= np.maximum(np.linalg.norm(ex, axis=-1, keepdims=True), 1e-9)
  ey = np.stack([-ex[:, 1], ex[:, 0]], -1)
  centre = (xy[:, UPPER_LIP_OUTER] + xy[:, LOWER_LIP_OUTER]) / 2
  corners = xy[:, list(MOUTH_CORNERS)].mean(1)
  corner_height = np.sum((centre - corners) * ey, -1) / iod  # + = raised
  z = lm[..., 2]
  corner_depth = (z[:, list(MOUTH_CORNERS)].mean(1) -
                  z[:, [UPPER_LIP_OUTER, LOWER_LIP_OUTER]].mean(1)) / iod
  return {
      "iod": iod,
      "gap": dist(UPPER_LIP_INNER, LOWER_LIP_INNER),
      "jaw": dist(SUBNASALE, CHIN),
      "width": dist(*MOUTH_CORNERS),
      "corner_height": corner_height,
      "upper_lip": dist(SUBNASALE, UPPER_LIP_OUTER),
      "corner_depth": corner_depth,
      "chin": dist(LOWER_LIP_OUTER, CHIN),
      "thickness": (dist(UPPER_LIP_OUTER, UPPER_LIP_INNER) +
                    dist(LOWER_LIP_INNER, LOWER_LIP_OUTER)),
  }


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
  """(T, 468, 2+) -> (T,) inner-lip gap |p13 - p14| / IOD."""
  lm = np.asarray(landmarks, np.float64)
  iod = np.maximum(inter_ocular(lm), 1e-9)
  return np.linalg.norm(lm[:, 13, :2] - lm[:, 14, :2], axis=-1) / iod


# ----------------------------------------------------------------------------
# Proxies.


def _pct(x: np.ndarray, q: float, valid: np.ndarray) -> float:
  v = x[valid]
  return float(np.percentile(v, q)) if v.size else 0.0


def activations(geom: Mapping[str, np.ndarray], config: ProxyConfig,
                valid: Optional[np.ndarray] = None
                ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
  """Baseline-relative activations (IOD units; >= 0 means "activated").

  Args:
    geom: ``geometry(landmarks)``.
    config: the AU list and parameters.
    valid: (T,) frames the per-clip baselines are taken over (default all).

  Returns:
    act (T, K) float64 in ``config.aus`` order, and a dict AU -> (T,) bool of
    extra presence conditions (AU20's corner rule; AU26's "AU25 on" and
    AU23's "AU25 off" are applied in ``presence``).
  """
  t = len(geom["gap"])
  valid = np.ones((t,), bool) if valid is None else np.asarray(valid, bool)
  p = lambda name, q: _pct(geom[name], q, valid)
  h = geom["corner_height"]
  extra = {
      20: h <= p("corner_height", 50) + config.au20_corner_tolerance,
  }
  cols = {
      25: geom["gap"],
      26: geom["jaw"] - p("jaw", config.jaw_percentile),
      20: geom["width"] - p("width", 50),
      10: p("upper_lip", 50) - geom["upper_lip"],
      14: config.au14_sign * (p("corner_depth", 50) - geom["corner_depth"]),
      12: h - p("corner_height", 50),
      15: p("corner_height", 50) - h,
      17: p("chin", 50) - geom["chin"],
      23: p("thickness", config.au23_percentile) - geom["thickness"],
  }
  act = np.stack([cols[a] for a in config.aus], -1) if config.aus else (
      np.zeros((t, 0)))
  return act, extra


def presence(act: np.ndarray, geom: Mapping[str, np.ndarray],
             config: ProxyConfig, extra: Mapping[int, np.ndarray]
             ) -> np.ndarray:
  """(T, K) activations -> (T, K) bool presence with the configured rules."""
  lips_part = geom["gap"] > config.threshold(25)
  out = np.zeros(act.shape, bool)
  for k, au in enumerate(config.aus):
    on = act[:, k] > config.threshold(au)
    if au in extra:
      on &= extra[au]
    if au == 26:
      on &= lips_part
    if au == 23:
      on &= ~lips_part
    out[:, k] = on
  return out


def intensities(act: np.ndarray, p95: Optional[np.ndarray] = None,
                valid: Optional[np.ndarray] = None) -> np.ndarray:
  """(T, K) activations -> (T, K) float32 on the 0-5 scale.

  ``clip(5 * act / p95, 0, 5)``; ``p95`` (K,) is the dataset's 95th
  percentile per AU (``dataset_p95``); when None, the clip's own (over valid
  frames).
  """
  act = np.asarray(act, np.float64)
  if p95 is None:
    v = act if valid is None else act[np.asarray(valid, bool)]
    p95 = (np.percentile(v, 95, axis=0) if len(v)
           else np.zeros(act.shape[1:]))
  p95 = np.maximum(np.asarray(p95, np.float64), 1e-6)
  return np.clip(5.0 * act / p95, 0.0, 5.0).astype(np.float32)


def dataset_p95(clip_activations: Sequence[np.ndarray]) -> np.ndarray:
  """[(T_i, K)] activations of many clips -> (K,) pooled 95th percentile."""
  allv = np.concatenate([np.asarray(a) for a in clip_activations], 0)
  return np.percentile(allv, 95, axis=0)


def compute_proxies(landmarks: np.ndarray,
                    config: ProxyConfig = ProxyConfig(),
                    valid: Optional[np.ndarray] = None,
                    p95: Optional[np.ndarray] = None) -> AULabels:
  """AU proxy labels of one clip.

  Args:
    landmarks: (T, 468, 3) FaceMesh landmarks of one clip, in frame order.
    config: AU list, thresholds and options.
    valid: (T,) bool; frames used for the per-clip baselines (default: all
      frames with finite landmarks). Invalid frames get intensity 0 and
      presence False.
    p95: (K,) dataset 95th percentile of each activation, for intensities.

  Returns:
    AULabels with intensity (T, K), presence (T, K), activation (T, K).
  """
  lm = _check_landmarks(landmarks)
  finite = np.isfinite(lm).all(axis=(1, 2))
  valid = finite if valid is None else (np.asarray(valid, bool) & finite)
  lm = np.where(finite[:, None, None], lm, 0.0)
  if not finite.all():
    # Keep the geometry finite (IOD > 0) on frames without landmarks.
    lm[~finite] = lm[finite][0] if finite.any() else 1.0
  geom = geometry(lm, align=config.align)
  act, extra = activations(geom, config, valid)
  pres = presence(act, geom, config, extra) & valid[:, None]
  inten = intensities(act, p95, valid) * valid[:, None]
  return AULabels(tuple(config.aus), inten.astype(np.float32), pres, valid,
                  act.astype(np.float32), "facemesh_proxy")


# ----------------------------------------------------------------------------
# Label sources.


@runtime_checkable
class AULabelSource(Protocol):
  """Produces per-frame AU labels for a clip.

  ``labels(clip)`` takes a clip reference (a video path for the built-in
  sources; an OpenFace source also takes the CSV path itself) and returns
  AULabels with ``aus`` columns in this source's order.
  """
  name: str
  aus: tuple[int, ...]

  def labels(self, clip: PathLike) -> AULabels:
    ...


class FaceMeshProxySource:
  """Geometric proxies: video -> face detection -> FaceMesh -> proxies.

  Args:
    config: ProxyConfig (its ``aus`` are this source's columns).
    p95: dataset 95th percentiles for the 0-5 intensities.
    fps: resample videos to this rate (the pipeline's 25 fps).
    step: use every step-th frame (labels are then per used frame).
    mesh, detector: a face_mesh.FaceMesh and a face detector (created
      lazily).
    min_presence: frames whose FaceMesh face-presence is below this are
      invalid.
  """
  name = "facemesh_proxy"

  def __init__(self, config: ProxyConfig = ProxyConfig(),
               p95: Optional[np.ndarray] = None, fps: Optional[float] = 25.0,
               step: int = 1, mesh=None, detector=None,
               min_presence: float = 0.5):
    self.config = config
    self.aus = tuple(config.aus)
    self.p95 = p95
    self.fps = fps
    self.step = step
    self.min_presence = min_presence
    self._mesh = mesh
    self._detector = detector

  def from_landmarks(self, landmarks: np.ndarray,
                     valid: Optional[np.ndarray] = None) -> AULabels:
    """(T, 468, 3) landmarks -> AULabels."""
    return compute_proxies(landmarks, self.config, valid, self.p95)

  def labels(self, clip: PathLike) -> AULabels:
    from lipsync_jax.vision import face_mesh  # pylint: disable=g-import-not-at-top
    if self._mesh is None:
      self._mesh = face_mesh.FaceMesh()
    vl = face_mesh.video_landmarks(clip, self._mesh, self._detector,
                                   step=self.step, fps=self.fps)
    return self.from_landmarks(vl.landmarks, vl.presence >= self.min_presence)


def read_openface_csv(path: PathLike, aus: Sequence[int] = DEFAULT_AUS,
                      presence_threshold: Optional[float] = None) -> AULabels:
  """Reads OpenFace 2.x per-frame AU columns.

  Args:
    path: an OpenFace ``FeatureExtraction`` CSV (columns ``frame``,
      ``success``, ``AU10_r``, ``AU10_c``, ...; OpenFace pads column names
      with spaces, which are stripped).
    aus: AUs to read, in output order.
    presence_threshold: when given, presence = ``AUxx_r >= threshold``
      instead of the ``AUxx_c`` column (needed for an AU with no ``_c``
      column, and to align presence with intensities). When None, AUs
      without a ``_c`` column raise.

  Returns:
    AULabels (rows sorted by ``frame`` when present); ``valid`` from the
    ``success`` column (all True without it). An AU with no ``_r`` column
    (e.g. AU28) has intensity ``5 * presence``.

  Raises:
    AUError: missing file or columns, or non-numeric values.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise AUError(f"OpenFace CSV not found: {path}")
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise AUError(f"empty OpenFace CSV: {path}")
  header = [h.strip() for h in rows[0]]
  col = {h: i for i, h in enumerate(header)}
  body = [r for r in rows[1:] if any(c.strip() for c in r)]

  def column(name: str) -> np.ndarray:
    try:
      return np.asarray([float(r[col[name]]) for r in body], np.float64)
    except (ValueError, IndexError) as e:
      raise AUError(f"bad value in column {name} of {path}: {e}") from None

  t = len(body)
  inten = np.zeros((t, len(aus)), np.float32)
  pres = np.zeros((t, len(aus)), bool)
  for k, au in enumerate(aus):
    r_name, c_name = f"AU{au:02d}_r", f"AU{au:02d}_c"
    has_r, has_c = r_name in col, c_name in col
    if not has_r and not has_c:
      raise AUError(f"{path} has no {r_name} or {c_name} column (OpenFace "
                    "predicts AUs 1, 2, 4, 5, 6, 7, 9, 10, 12, 14, 15, 17, 20, "
                    "23, 25, 26, 45 and presence of 28)")
    r = column(r_name) if has_r else None
    if presence_threshold is not None and r is not None:
      pres[:, k] = r >= presence_threshold
    elif has_c:
      pres[:, k] = column(c_name) >= 0.5
    else:
      raise AUError(f"{path} has no {c_name} column; pass presence_threshold "
                    f"to derive presence from {r_name}")
    inten[:, k] = np.clip(r, 0, 5) if r is not None else 5.0 * pres[:, k]
  valid = (column("success") >= 0.5 if "success" in col
           else np.ones((t,), bool))
  if "frame" in col:
    order = np.argsort(column("frame"), kind="stable")
    inten, pres, valid = inten[order], pres[order], valid[order]
  return AULabels(tuple(aus), inten, pres, valid, None, "openface")


class OpenFaceCSVSource:
  """AU labels from OpenFace CSVs (``AUxx_r`` intensity, ``AUxx_c`` presence).

  ``labels(clip)``: a ``.csv`` path is read directly; for a video path the
  CSV is ``csv_dir / (stem + ".csv")`` (OpenFace's naming), or the CSV beside
  the video when ``csv_dir`` is None.

  Args:
    csv_dir: folder of OpenFace CSVs.
    aus: AUs to read.
    presence_threshold: see ``read_openface_csv``.
  """
  name = "openface"

  def __init__(self, csv_dir: Optional[PathLike] = None,
               aus: Sequence[int] = DEFAULT_AUS,
               presence_threshold: Optional[float] = None):
    self.csv_dir = pathlib.Path(csv_dir) if csv_dir is not None else None
    self.aus = tuple(aus)
    self.presence_threshold = presence_threshold

  def csv_path(self, clip: PathLike) -> pathlib.Path:
    p = pathlib.Path(clip)
    if p.suffix.lower() == ".csv":
      return p
    folder = self.csv_dir if self.csv_dir is not None else p.parent
    return folder / (p.stem + ".csv")

  def labels(self, clip: PathLike) -> AULabels:
    return read_openface_csv(self.csv_path(clip), self.aus,
                             self.presence_threshold)
