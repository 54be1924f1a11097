"""Face detectors on real clips, and the box-track helpers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from lipsync_jax.vision import face_detection as fd

CLIPS = ("grid/sbia1a.mpg", "voxceleb2/00086.mp4", "hdtf/vexpress_AOC_gt.mp4")


def _frames(shared, rel, step=4, count=20):
  from lipsync_jax.io import video
  it = video.iter_frames(shared / "data/real/av" / rel, fps=25)
  return list(itertools.islice(it, 0, step * count, step))


@pytest.fixture(scope="module")
def detector():
  return fd.create_detector("default")


def test_default_is_blazeface(detector):
  assert detector.name == "blazeface"


@pytest.mark.parametrize("rel", CLIPS)
def test_finds_one_face_in_real_clips(shared_dir, detector, rel):
  frames = _frames(shared_dir, rel)
  dets = detector.detect(frames)
  assert len(dets) == len(frames)
  rate = np.mean([len(d) > 0 for d in dets])
  assert rate >= 0.97, rate
  h, w = frames[0].shape[:2]
  for d in dets:
    if not d:
      continue
    x1, y1, x2, y2, s = max(d, key=lambda b: b[4])
    assert 0.5 < s <= 1
    # A talking-head face: a sizeable box, inside the frame, roughly square.
    assert 0.1 * w < x2 - x1 < 0.9 * w
    assert -5 < x1 < x2 < w + 5 and -5 < y1 < y2 < h + 5
    assert 0.7 < (y2 - y1) / (x2 - x1) < 1.6


def test_haar_fallback_and_letterboxed_vertical(shared_dir, detector):
  frame = _frames(shared_dir, CLIPS[0], count=1)[0]
  haar = fd.create_detector("haar")
  (x1, y1, x2, y2, _), = haar.detect([frame])[0]
  (bx1, by1, bx2, by2, _), = detector.detect([frame])[0]
  # Both find the same face: box centres within a quarter of the box size.
  assert abs((x1 + x2) - (bx1 + bx2)) / 2 < 0.25 * (x2 - x1)
  assert abs((y1 + y2) - (by1 + by2)) / 2 < 0.25 * (y2 - y1)
  # A vertical (portrait) frame is letterboxed: same face, shifted box.
  h, w = frame.shape[:2]
  top = w // 4  # portrait: (h + w / 2) x w
  tall = np.zeros((h + 2 * top, w, 3), np.uint8)
  tall[top:top + h] = frame
  (tx1, ty1, tx2, ty2, _), = detector.detect([tall])[0]
  size = bx2 - bx1
  assert abs(tx1 - bx1) < 0.15 * size and abs(tx2 - bx2) < 0.15 * size
  assert abs(ty1 - top - by1) < 0.15 * size
  assert abs(ty2 - top - by2) < 0.15 * size


def test_no_face_in_noise(detector):
  rng = np.random.default_rng(0)
  frames = [rng.integers(0, 256, (120, 160, 3), np.uint8) for _ in range(8)]
  assert sum(len(d) for d in detector.detect(frames)) == 0


def test_unknown_detector_and_register():
  with pytest.raises(fd.FaceDetectionError, match="unknown face detector"):
    fd.create_detector("s3fd")

  class Fixed:
    name = "fixed"

    def detect(self, frames):
      return [[(1.0, 2.0, 3.0, 4.0, 0.9)] for _ in frames]

  fd.register_detector("fixed", Fixed)
  assert fd.create_detector("fixed").detect([None, None]) == [
      [(1.0, 2.0, 3.0, 4.0, 0.9)]] * 2


def test_select_track_keeps_largest_consistent_face():
  big = (100, 100, 200, 200, 0.9)
  small = (300, 50, 340, 90, 0.95)
  moved = lambda b, dx: (b[0] + dx, b[1], b[2] + dx, b[3], b[4])
  frames = [[small, big], [moved(big, 3), small], [], [moved(big, 6)],
            # A larger spurious box elsewhere does not hijack the track.
            [(400, 300, 560, 460, 0.8), moved(big, 9)], [moved(big, 12)]]
  boxes, found, notes = fd.select_track(frames)
  np.testing.assert_array_equal(found, [1, 1, 0, 1, 1, 1])
  np.testing.assert_allclose(boxes[:, 0], [100, 103, 104.5, 106, 109, 112])
  np.testing.assert_allclose(boxes[:, 3], 200)
  assert any("several faces in 3 frame(s)" in n for n in notes)
  boxes, found, notes = fd.select_track([[], []])
  assert not found.any() and notes == []


def test_smooth_boxes_centred_mean():
  track = np.arange(7 * 4, dtype=np.float32).reshape(7, 4) ** 1.5
  out = fd.smooth_boxes(track, window=5)
  for t in range(7):
    lo, hi = max(0, t - 2), min(7, t + 3)
    np.testing.assert_allclose(out[t], track[lo:hi].mean(0), rtol=1e-5)
  np.testing.assert_array_equal(fd.smooth_boxes(track, 1), track)
  # Jitter goes down.
  rng = np.random.default_rng(0)
  noisy = 100 + rng.normal(0, 3, (50, 4))
  assert np.diff(fd.smooth_boxes(noisy), axis=0).std() < 0.5 * np.diff(
      noisy, axis=0).std()


def test_pad_and_clip():
  np.testing.assert_array_equal(
      fd.pad_and_clip((10.2, 20, 50, 60, 0.9), frame_shape=(100, 80, 3)),
      [10, 20, 50, 70])
  np.testing.assert_array_equal(
      fd.pad_and_clip(np.array([[-5, -5, 90, 95.0]]), (3, 10, 2, 2),
                      (100, 80)), [[0, 0, 80, 100]])
