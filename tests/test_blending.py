"""Tests of lipsync_jax.vision.blending: the feathered lower-face paste."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lipsync_jax.vision import blending


def _frame(h=240, w=320, seed=0) -> np.ndarray:
  """A smooth, textured BGR uint8 frame (blurred noise plus gradients)."""
  rng = np.random.default_rng(seed)
  noise = rng.uniform(0, 255, (h // 8, w // 8, 3)).astype(np.float32)
  img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
  img += np.linspace(-30, 30, w, dtype=np.float32)[None, :, None]
  return np.clip(img, 0, 255).astype(np.uint8)


def test_mask_is_soft_one_inside_zero_outside():
  m = blending.lower_face_mask(96)
  assert m.shape == (96, 96) and m.dtype == np.float32
  assert m.min() >= 0.0 and m.max() <= 1.0
  # ~1 over the mouth / jaw region.
  assert m[62:82, 22:74].min() > 0.98
  # 0 over the upper half and along every crop edge.
  assert m[:43].max() == 0.0
  assert m[-1].max() < 0.02 and m[:, 0].max() < 0.02 and m[:, -1].max() < 0.02
  # Soft: a real transition band, and no jump between neighbouring pixels.
  assert ((m > 0.05) & (m < 0.95)).mean() > 0.1
  assert np.abs(np.diff(m, axis=0)).max() < 0.2
  assert np.abs(np.diff(m, axis=1)).max() < 0.2
  with pytest.raises(ValueError):
    m[0, 0] = 1.0  # cached, read-only


def _lips(cx=0.5, cy=0.7, width=0.3, height=0.06, n=40) -> np.ndarray:
  """(n, 2) points on an ellipse: a mouth, in crop units."""
  t = np.linspace(0, 2 * np.pi, n, endpoint=False)
  return np.stack([cx + width / 2 * np.cos(t), cy + height / 2 * np.sin(t)], 1).astype(np.float32)


def test_mouth_mask_covers_the_lips_and_the_chin_below_and_nothing_far():
  size = 200
  lips = _lips()
  m = blending.mouth_mask(lips, size, size)
  assert m.shape == (size, size) and m.dtype == np.float32
  assert m.min() >= 0.0 and m.max() <= 1.0 + 1e-6
  px = lambda x, y: m[int(y * size), int(x * size)]
  assert min(px(x, y) for x, y in lips) > 0.95          # every lip point
  assert px(0.5, 0.7 + 0.03 + 0.3 * 0.3) > 0.95         # the chin, where the jaw drops
  assert px(0.08, 0.7) == 0.0 and px(0.92, 0.7) == 0.0  # the cheeks
  assert px(0.5, 0.45) == 0.0                           # the nose
  assert np.abs(np.diff(m, axis=0)).max() < 0.2 and np.abs(np.diff(m, axis=1)).max() < 0.2
  # It follows the mouth, and a wider mouth gets a wider mask.
  moved = blending.mouth_mask(_lips(cx=0.6), size, size)
  np.testing.assert_allclose(moved[:, 20:], m[:, :-20], atol=1e-5)
  assert (blending.mouth_mask(_lips(width=0.4), size, size) > 0.5).sum() > (m > 0.5).sum()


def test_mouth_paste_keeps_the_frame_away_from_the_mouth():
  frame = _frame(seed=3)
  x1, y1, x2, y2 = 60, 30, 180, 170
  face = np.full((96, 96, 3), 180, np.uint8)
  lips = _lips()
  whole = blending.paste(frame.copy(), (x1, y1, x2, y2), face, color_match=False)
  mouth = blending.paste(frame.copy(), (x1, y1, x2, y2), face, color_match=False, mouth=lips)
  box = (slice(y1, y2), slice(x1, x2))
  m = blending.mouth_mask(lips, x2 - x1, y2 - y1)
  far = m == 0.0
  # Away from the mouth the frame is untouched, where the lower-face paste
  # redraws it; over the mouth both paste the face.
  np.testing.assert_array_equal(mouth[box][far], frame[box][far])
  assert (whole[box][far] != frame[box][far]).any()
  centre = (y1 + int(0.7 * (y2 - y1)), x1 + (x2 - x1) // 2)
  assert np.abs(mouth[centre].astype(int) - 180).max() <= 2
  np.testing.assert_array_equal(mouth[centre], whole[centre])


def test_hard_paste_overwrites_the_box_only():
  frame = _frame()
  orig = frame.copy()
  face = np.full((96, 96, 3), 200, np.uint8)
  box = (50, 40, 150, 160)
  blending.paste(frame, box, face, hard=True)
  assert (frame[40:160, 50:150] == 200).all()
  outside = np.ones(frame.shape[:2], bool)
  outside[40:160, 50:150] = False
  np.testing.assert_array_equal(frame[outside], orig[outside])


def test_soft_paste_keeps_edges_and_upper_face():
  frame = _frame(seed=1)
  orig = frame.copy()
  x1, y1, x2, y2 = 60, 30, 180, 170
  face = np.full((96, 96, 3), 180, np.uint8)
  blending.paste(frame, (x1, y1, x2, y2), face, color_match=False)
  outside = np.ones(frame.shape[:2], bool)
  outside[y1:y2, x1:x2] = False
  np.testing.assert_array_equal(frame[outside], orig[outside])
  diff = np.abs(frame.astype(int) - orig.astype(int)).max(-1)
  h, w = y2 - y1, x2 - x1
  region = diff[y1:y2, x1:x2]
  assert region[: int(0.4 * h)].max() == 0          # upper face untouched
  assert region[-1].max() <= 5 and region[:, 0].max() <= 5 and region[:, -1].max() <= 5
  # The mouth area is the generated face.
  centre = frame[y1 + int(0.7 * h):y1 + int(0.8 * h), x1 + w // 3:x1 + 2 * w // 3]
  assert np.abs(centre.astype(int) - 180).max() <= 2


def _seam_error(color_match: bool) -> tuple[float, float]:
  """Error vs the original frame when the 'generated' face is the true crop
  with a colour cast, as a generator's colour drift looks."""
  frame = _frame(seed=2)
  x1, y1, x2, y2 = 80, 40, 200, 180
  crop = cv2.resize(frame[y1:y2, x1:x2], (96, 96), interpolation=cv2.INTER_AREA)
  cast = np.array([25, -20, 12], np.float32)
  generated = np.clip(crop.astype(np.float32) + cast, 0, 255).astype(np.uint8)
  out = blending.paste(frame.copy(), (x1, y1, x2, y2), generated, color_match=color_match)
  mask = cv2.resize(blending.lower_face_mask(96), (x2 - x1, y2 - y1))
  band = (mask > 0.1) & (mask < 0.9)
  err = np.abs(out[y1:y2, x1:x2].astype(np.float32) - frame[y1:y2, x1:x2])
  return float(err[band].mean()), float(err[mask > 0.98].mean())


def test_color_matching_reduces_seam_error():
  seam_plain, inner_plain = _seam_error(color_match=False)
  seam_matched, inner_matched = _seam_error(color_match=True)
  assert seam_plain > 5.0  # the cast is visible without matching
  assert seam_matched < 0.35 * seam_plain
  assert inner_matched < 0.35 * inner_plain


def test_match_color_removes_a_constant_offset():
  rng = np.random.default_rng(3)
  orig = rng.uniform(50, 200, (40, 40, 3)).astype(np.float32)
  gen = orig + np.array([10, -5, 3], np.float32)
  w = rng.uniform(0, 1, (40, 40)).astype(np.float32)
  np.testing.assert_allclose(blending.match_color(gen, orig, w), orig, atol=1e-3)
  # Zero weights: nothing to match against, unchanged.
  np.testing.assert_array_equal(blending.match_color(gen, orig, np.zeros((40, 40))), gen)


def test_clip_box():
  assert blending.clip_box((-5.4, 3.6, 50.2, 400), (100, 80, 3)) == (0, 4, 50, 100)
  assert blending.clip_box((79, 10, 90, 20), (100, 80, 3)) is None  # 1 px wide after clipping
  frame = _frame()
  before = frame.copy()
  blending.paste(frame, (500, 500, 600, 600), np.zeros((96, 96, 3), np.uint8))
  np.testing.assert_array_equal(frame, before)
