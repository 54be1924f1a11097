"""FaceMesh landmarks, geometric AU proxies, AU label sources and LMD-FM."""

from __future__ import annotations

import importlib.util
import itertools
import math

import cv2
import numpy as np
import pytest

from lipsync_jax.vision import au_proxies as aup
from lipsync_jax.vision import face_mesh as fm
from lipsync_jax.vision import lmd

CLIP = "data/real/av/grid/sbia1a.mpg"  # "set blue in a one again"
# Frames (at 25 fps) checked by eye: 0 is the closed mouth before speech, 37
# the widest-open mouth (the vowel of "one").
CLOSED, OPEN = 0, 37


# ----------------------------------------------------------------------------
# FaceMesh on real frames.


@pytest.fixture(scope="module")
def real(shared_dir):
  from lipsync_jax.vision import face_detection as fd  # pylint: disable=g-import-not-at-top
  from lipsync_jax.io import video  # pylint: disable=g-import-not-at-top
  frames = list(itertools.islice(
      video.iter_frames(shared_dir / CLIP, fps=25), OPEN + 1))
  det = fd.create_detector("default")
  boxes = [max(b, key=lambda x: x[4]) for b in det.detect(
      [frames[CLOSED], frames[OPEN]])]
  return {"frames": frames, "boxes": boxes, "mesh": fm.FaceMesh()}


def test_landmarks_inside_face_box(real):
  for i, box in zip((CLOSED, OPEN), real["boxes"]):
    lms, pres = real["mesh"].run([real["frames"][i]], [box])
    lm = lms[0]
    assert lm.shape == (468, 3) and lm.dtype == np.float32
    assert pres[0] > 0.9
    x1, y1, x2, y2 = box[:4]
    w, h = x2 - x1, y2 - y1
    # Eyes, nose and lips inside the detector's box itself...
    core = lm[[33, 133, 362, 263, 1, 2, 0, 13, 14, 17, 61, 291]]
    assert (core[:, 0] > x1).all() and (core[:, 0] < x2).all()
    assert (core[:, 1] > y1).all() and (core[:, 1] < y2).all()
    # ... and the whole mesh (forehead, chin, jaw line) within 25 % of it.
    assert (lm[:, 0] > x1 - 0.25 * w).all() and (lm[:, 0] < x2 + 0.25 * w).all()
    assert (lm[:, 1] > y1 - 0.25 * h).all() and (lm[:, 1] < y2 + 0.25 * h).all()
    # Anatomical order in the image: eyes above nose above mouth above chin,
    # and the subject's right eye (33) on the image's left.
    assert lm[33, 0] < lm[263, 0]
    assert lm[33, 1] < lm[1, 1] < lm[13, 1] < lm[152, 1]


def test_mouth_opening_open_vs_closed(real):
  lms, _ = real["mesh"].run([real["frames"][CLOSED], real["frames"][OPEN]],
                            real["boxes"])
  closed, opened = aup.mouth_opening(lms)
  assert closed < 0.03 < 0.08 < opened, (closed, opened)
  geom = aup.geometry(lms)
  assert geom["jaw"][1] > geom["jaw"][0] + 0.03  # The jaw drops too.


def test_batched_equals_single_and_rotation(real):
  frame, box = real["frames"][OPEN], real["boxes"][1]
  single = real["mesh"].landmarks(frame, box)
  batched, _ = fm.FaceMesh(batch_size=3).run([frame] * 2, [box] * 2)
  np.testing.assert_allclose(batched[0], single, atol=1e-3)
  np.testing.assert_allclose(batched[1], single, atol=1e-3)
  # Rolling the image by 20 degrees rolls the landmarks with it (the refine
  # pass re-crops along the eye line), given the same, unrotated box.
  h, w = frame.shape[:2]
  m = cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), 20, 1.0)
  rolled = real["mesh"].landmarks(cv2.warpAffine(frame, m, (w, h)), box)
  expect = single[:, :2] @ m[:, :2].T + m[:, 2]
  iod = np.linalg.norm(single[33, :2] - single[263, :2])
  assert np.abs(rolled[:, :2] - expect).mean() < 0.03 * iod


def test_roi_maps_round_trip():
  roi = fm.Roi(100.0, 80.0, 60.0, angle=0.3)
  a = roi.crop_to_image()
  centre = a[:, :2] @ np.array([96.0, 96.0]) + a[:, 2]
  np.testing.assert_allclose(centre, [100.0, 80.0], atol=1e-9)
  corner = a[:, :2] @ np.array([192.0, 96.0]) + a[:, 2]  # crop's +x edge
  np.testing.assert_allclose(corner - centre,
                             [30 * math.cos(0.3), 30 * math.sin(0.3)],
                             atol=1e-9)
  assert fm.roi_from_box((10, 20, 50, 80)) == fm.Roi(30.0, 50.0, 90.0, 0.0)


def test_missing_model_is_one_line_error(monkeypatch, tmp_path):
  fake = importlib.util.spec_from_loader("mediapipe", loader=None,
                                         is_package=True)
  fake.submodule_search_locations = [str(tmp_path)]
  real_find = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec",
                      lambda n, *a: fake if n == "mediapipe"
                      else real_find(n, *a))
  with pytest.raises(fm.FaceMeshError) as e:
    fm.model_path()
  msg = str(e.value)
  assert "\n" not in msg and "face_landmark.tflite" in msg
  assert "pip install --no-deps mediapipe==0.10.21" in msg


def test_proxy_source_on_real_clip(shared_dir, real):
  src = aup.FaceMeshProxySource(mesh=real["mesh"])
  assert isinstance(src, aup.AULabelSource)
  labels = src.labels(shared_dir / CLIP)
  assert labels.intensity.shape == (75, 5) and labels.presence.shape == (75, 5)
  assert labels.valid.all()
  k25, k26 = labels.column(25), labels.column(26)
  assert not labels.presence[CLOSED, k25] and labels.presence[OPEN, k25]
  assert labels.presence[OPEN, k26]
  assert labels.intensity[OPEN, k25] > labels.intensity[CLOSED, k25]


# ----------------------------------------------------------------------------
# Proxies on synthetic landmark arrays.


def _face(t: int, gap=None, width=None, corner_raise=None, lip_raise=None,
          scale=1.0, shift=(0.0, 0.0), roll_deg=0.0, jaw_extra=0.0):
  """(T, 468, 3) landmarks of a frontal face with IOD 100 px (before
  ``scale``), driven per frame (each arg a (T,) array in IOD units)."""
  z = np.zeros((t,))
  gap = z if gap is None else np.asarray(gap, float)
  width = z if width is None else np.asarray(width, float)
  corner_raise = z if corner_raise is None else np.asarray(corner_raise, float)
  lip_raise = z if lip_raise is None else np.asarray(lip_raise, float)
  rng = np.random.default_rng(0)
  base = np.zeros((468, 3))
  base[:, :2] = rng.uniform(100, 200, (468, 2))  # unused points: anywhere
  pts = {33: (100, 100), 263: (200, 100), 133: (130, 102), 362: (170, 102),
         1: (150, 150), 168: (150, 100), 10: (150, 40), 2: (150, 165),
         0: (150, 185), 13: (150, 195), 14: (150, 195), 17: (150, 205),
         152: (150, 250 + jaw_extra), 61: (120, 195), 291: (180, 195)}
  for i, p in pts.items():
    base[i, :2] = p
  lm = np.repeat(base[None], t, 0)
  down = 100 * gap  # the lower lip and the chin drop with the jaw
  for i in (14, 17, 152):
    lm[:, i, 1] += down
  for i in (61, 291):
    lm[:, i, 1] += down / 2 - 100 * corner_raise
  lm[:, 61, 0] -= 50 * width
  lm[:, 291, 0] += 50 * width
  lm[:, 0, 1] -= 100 * lip_raise
  a = math.radians(roll_deg)
  rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
  lm[..., :2] = (lm[..., :2] - 150) @ rot.T + 150
  lm[..., :2] = lm[..., :2] * scale + np.asarray(shift)
  lm[..., 2] *= scale
  return lm


def _talk(t=60):
  """A clip: 20 closed frames, then open/close cycles up to 0.12 IOD."""
  gap = np.zeros((t,))
  gap[20:] = 0.06 * (1 - np.cos(np.linspace(0, 6 * np.pi, t - 20)))
  return gap


def test_proxy_shapes_and_rules():
  gap = _talk()
  lm = _face(60, gap=gap)
  labels = aup.compute_proxies(lm)
  assert labels.aus == aup.DEFAULT_AUS
  assert labels.intensity.shape == labels.presence.shape == (60, 5)
  assert labels.activation.shape == (60, 5)
  assert labels.presence.dtype == bool and labels.intensity.dtype == np.float32
  assert (labels.intensity >= 0).all() and (labels.intensity <= 5).all()
  k25, k26 = labels.column(25), labels.column(26)
  np.testing.assert_allclose(labels.activation[:, k25], gap, atol=1e-6)
  np.testing.assert_array_equal(labels.presence[:, k25], gap > 0.03)
  # Jaw: baseline P5 = closed -> activation = gap; AU26 needs AU25 as well.
  np.testing.assert_allclose(labels.activation[:, k26], gap, atol=1e-6)
  np.testing.assert_array_equal(labels.presence[:, k26], gap > 0.05)
  # Nothing else moves: no AU10/14/20.
  for au in (10, 14, 20):
    assert not labels.presence[:, labels.column(au)].any(), au
  ext = aup.compute_proxies(lm, aup.ProxyConfig(aus=aup.EXTENDED_AUS))
  assert ext.intensity.shape == (60, 9) and ext.aus == aup.EXTENDED_AUS


def test_per_clip_baseline_and_normalisation():
  gap = _talk()
  ref = aup.compute_proxies(_face(60, gap=gap)).activation
  # A longer face (another person: +8 px nose-chin) and a clip filmed at
  # another scale and position: same activations, thanks to the per-clip
  # baselines and the IOD normalisation.
  other = aup.compute_proxies(_face(60, gap=gap, jaw_extra=8.0)).activation
  np.testing.assert_allclose(other, ref, atol=1e-6)
  moved = aup.compute_proxies(
      _face(60, gap=gap, scale=2.7, shift=(40, -15))).activation
  np.testing.assert_allclose(moved, ref, atol=1e-6)
  # Head roll: the vertical measures follow the face axis.
  rolled = aup.compute_proxies(_face(60, gap=gap, roll_deg=15)).activation
  np.testing.assert_allclose(rolled, ref, atol=1e-6)
  # The raw jaw length is not baseline-free, the activation is.
  g1 = aup.geometry(_face(60, gap=gap, jaw_extra=8.0))["jaw"]
  g0 = aup.geometry(_face(60, gap=gap))["jaw"]
  np.testing.assert_allclose(g1 - g0, 0.08, atol=1e-9)
  # A single frame has no baseline: every baseline-relative activation is 0.
  one = aup.compute_proxies(_face(1, gap=[0.1]))
  np.testing.assert_allclose(one.activation[0, one.column(26)], 0, atol=1e-9)
  # align=True (Procrustes to the median shape) keeps these rigid clips equal.
  al = aup.compute_proxies(_face(60, gap=gap, roll_deg=10),
                           aup.ProxyConfig(align=True)).activation
  np.testing.assert_allclose(al, ref, atol=1e-6)


def test_au20_au10_and_thresholds():
  t = 40
  width = np.zeros((t,))
  width[25:30] = 0.05  # stretch
  width[30:35] = 0.05  # ... and a smile: corners raised too
  raise_ = np.zeros((t,))
  raise_[30:35] = 0.03
  lip = np.zeros((t,))
  lip[10:15] = 0.02  # upper lip raised towards the nose
  labels = aup.compute_proxies(_face(t, width=width, corner_raise=raise_,
                                     lip_raise=lip))
  p20 = labels.presence[:, labels.column(20)]
  assert p20[25:30].all() and not p20[30:35].any()
  assert p20.sum() == 5
  p10 = labels.presence[:, labels.column(10)]
  np.testing.assert_array_equal(np.nonzero(p10)[0], np.arange(10, 15))
  # A higher threshold switches AU10 off; thresholds are per AU.
  cfg = aup.ProxyConfig(thresholds={10: 0.03})
  assert not aup.compute_proxies(
      _face(t, lip_raise=lip), cfg).presence[:, 0].any()
  assert cfg.threshold(25) == 0.03
  # Intensities against a dataset P95.
  act = np.array([[0.0, 0.05, 0.2]])
  np.testing.assert_allclose(aup.intensities(act, p95=[0.1, 0.1, 0.1]),
                             [[0.0, 2.5, 5.0]])
  np.testing.assert_allclose(aup.dataset_p95([np.ones((4, 2)),
                                              np.ones((2, 2))]), [1.0, 1.0])
  with pytest.raises(aup.AUError, match="unsupported"):
    aup.ProxyConfig(aus=(10, 99))


def test_invalid_frames_excluded():
  gap = _talk()
  lm = _face(60, gap=gap)
  lm[5] = np.nan
  labels = aup.compute_proxies(lm)
  assert not labels.valid[5] and labels.valid.sum() == 59
  assert not labels.presence[5].any() and (labels.intensity[5] == 0).all()
  assert np.isfinite(labels.activation).all()


# ----------------------------------------------------------------------------
# OpenFace CSV source.

_HEADER = ("frame, face_id, timestamp, confidence, success, AU10_r, AU14_r, "
           "AU20_r, AU25_r, AU26_r, AU10_c, AU14_c, AU20_c, AU25_c, AU26_c, "
           "AU28_c")


def _write_csv(path, rows):
  path.write_text(_HEADER + "\n" + "\n".join(
      ", ".join(str(v) for v in r) for r in rows) + "\n")
  return path


def test_openface_csv_source(tmp_path):
  rows = [  # frames out of order on purpose
      (2, 0, 0.04, 0.98, 1, 0.5, 0.0, 1.2, 2.5, 1.8, 0, 0, 1, 1, 1, 0),
      (1, 0, 0.00, 0.98, 1, 0.0, 0.3, 0.0, 0.1, 0.0, 0, 0, 0, 0, 0, 0),
      (3, 0, 0.08, 0.10, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, 0, 1),
  ]
  csv_dir = tmp_path / "openface"
  csv_dir.mkdir()
  _write_csv(csv_dir / "clip01.csv", rows)
  src = aup.OpenFaceCSVSource(csv_dir)
  assert isinstance(src, aup.AULabelSource) and src.name == "openface"
  labels = src.labels(tmp_path / "videos" / "clip01.mp4")
  assert labels.aus == aup.DEFAULT_AUS and labels.source == "openface"
  np.testing.assert_allclose(labels.intensity,
                             [[0, 0.3, 0, 0.1, 0], [0.5, 0, 1.2, 2.5, 1.8],
                              [0, 0, 0, 0, 0]], atol=1e-6)
  np.testing.assert_array_equal(labels.presence,
                                [[0, 0, 0, 0, 0], [0, 0, 1, 1, 1],
                                 [0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(labels.valid, [True, True, False])
  # The CSV path itself, another AU order, presence from intensity, AU28.
  direct = aup.OpenFaceCSVSource(aus=(26, 10, 28), presence_threshold=1.0)
  lab = direct.labels(csv_dir / "clip01.csv")
  np.testing.assert_array_equal(lab.presence, [[0, 0, 0], [1, 0, 0],
                                               [0, 0, 1]])
  np.testing.assert_allclose(lab.intensity[:, 2], [0, 0, 5])
  with pytest.raises(aup.AUError, match="AU12_r or AU12_c"):
    aup.OpenFaceCSVSource(csv_dir, aus=(12,)).labels(csv_dir / "clip01.csv")
  with pytest.raises(aup.AUError, match="not found"):
    src.labels(tmp_path / "nope.mp4")


# ----------------------------------------------------------------------------
# LMD-FM.


def _mesh_like(t=6, seed=1):
  rng = np.random.default_rng(seed)
  lm = rng.normal(0, 30, (t, 468, 3)) + np.array([320, 240, 0])
  lm[:, 33, :2] = (280, 200)
  lm[:, 263, :2] = (360, 200)  # IOD = 80 px
  return lm


def test_lmd_fm_basic_properties():
  gt = _mesh_like()
  assert len(set(lmd.MOUTH_LANDMARKS)) == 40
  assert set(lmd.LIP_INNER) >= {13, 14, 78, 308}
  assert lmd.lmd_fm(gt, gt.copy()) == 0.0
  # A global scale + translation (another resolution / crop) changes nothing.
  pred = gt.copy()
  pred[..., :2] = pred[..., :2] * 0.4 + np.array([-50.0, 17.0])
  pred[..., 2] *= 0.4
  assert lmd.lmd_fm(pred, gt) < 1e-12
  assert lmd.lmd_fm(pred, gt, use_z=True) < 1e-12
  # Moving the 18 lower-lip points (corners excluded) down by d IOD:
  # LMD-FM = d * 18 / 40.
  lower = [i for i in lmd.MOUTH_LANDMARKS
           if i in (146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87,
                    14, 317, 402, 318, 324)]
  prev = 0.0
  for d in (0.01, 0.05, 0.1):
    moved = gt.copy()
    moved[:, lower, 1] += d * 80
    v = lmd.lmd_fm(moved, gt)
    np.testing.assert_allclose(v, d * len(lower) / 40, rtol=1e-9)
    assert v > prev
    prev = v
  # Moving a non-lip point does not count.
  other = gt.copy()
  other[:, 200, :2] += 40
  assert lmd.lmd_fm(other, gt) == 0.0


def test_lmd_fm_centres_and_errors():
  gt = _mesh_like()
  moved = gt.copy()
  moved[:, list(lmd.MOUTH_LANDMARKS), 0] += 8  # whole mouth shifted 0.1 IOD
  np.testing.assert_allclose(lmd.lmd_fm(moved, gt), 0.1, rtol=1e-9)
  assert lmd.lmd_fm(moved, gt, center="mouth") < 1e-12  # shape only
  bad = gt.copy()
  bad[2] = np.nan
  per = lmd.lmd_fm_per_frame(bad, gt)
  assert np.isnan(per[2]) and np.isfinite(np.delete(per, 2)).all()
  assert lmd.lmd_fm(bad, gt) == 0.0  # NaN frame skipped
  with pytest.raises(lmd.LMDError, match="shape mismatch"):
    lmd.lmd_fm(gt[:3], gt)
  with pytest.raises(lmd.LMDError, match="no frame"):
    lmd.lmd_fm(gt, gt, valid=np.zeros(len(gt), bool))
