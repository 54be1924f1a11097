"""Tests for lipsync_jax.io.video (probe, iter_frames, read_image, VideoWriter)."""

from __future__ import annotations

import fractions
import os
import subprocess

import av
import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from lipsync_jax.io import audio
from lipsync_jax.io import video

# (file, fps, width, height, duration) from data/real/MANIFEST.md (ffprobe).
MANIFEST_CLIPS = [
    ("av/grid/bbaf2n.mpg", 25.0, 360, 288, 3.00),
    ("av/voxceleb2/00002.mp4", 25.0, 224, 224, 5.10),
    ("av/hdtf/RD_Radio10_0_clip_0.mp4", 29.97, 512, 512, 2.11),
    ("av/retalking/face_1.mp4", 22.13, 700, 700, 6.13),
    ("av/retalking/face_4.mp4", 30.0, 700, 700, 6.63),
]


def _level_frame(value: int, h: int = 48, w: int = 64) -> np.ndarray:
  """A flat frame whose level survives H.264 (identifies the frame index)."""
  return np.full((h, w, 3), value, np.uint8)


def _levels(frames, values: list[int]) -> list[int]:
  """Maps each decoded flat frame to the nearest of the written levels."""
  levels = np.asarray(values, np.float64)
  return [values[int(np.argmin(np.abs(levels - f.mean())))] for f in frames]


def _write_raw(path, pts_ms: list[int], values: list[int],
               rotation: int = 0) -> None:
  """Writes flat frames at explicit millisecond timestamps with plain PyAV."""
  with av.open(str(path), "w") as c:
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    s.codec_context.time_base = fractions.Fraction(1, 1000)
    if rotation:
      s.set_display_rotation(rotation)
    for t, v in zip(pts_ms, values):
      frame = av.VideoFrame.from_ndarray(_level_frame(v), format="bgr24")
      frame.pts = t
      frame.time_base = fractions.Fraction(1, 1000)
      c.mux(s.encode(frame))
    c.mux(s.encode(None))


# ---------------------------------------------------------------------------
# probe


@pytest.mark.parametrize("clip,fps,width,height,duration", MANIFEST_CLIPS)
def test_probe_matches_manifest(shared_dir, clip, fps, width, height, duration):
  info = video.probe(shared_dir / "data/real" / clip)
  assert info.has_video and info.has_audio
  assert (info.width, info.height) == (width, height)
  assert info.fps == pytest.approx(fps, abs=0.01)
  assert info.duration == pytest.approx(duration, abs=0.1)
  assert info.num_frames == pytest.approx(info.duration * info.fps, abs=2)
  assert info.rotation == 0
  assert info.audio_sample_rate in (16000, 44100)


def test_probe_detects_vfr(shared_dir):
  root = shared_dir / "data/real/av"
  assert video.probe(root / "retalking/face_1.mp4").is_vfr  # avg 22.1, nominal 30
  assert not video.probe(root / "grid/bbaf2n.mpg").is_vfr
  assert not video.probe(root / "voxceleb2/00002.mp4").is_vfr


def test_probe_synthetic_vfr_and_cfr(tmp_path):
  cfr = tmp_path / "cfr.mp4"
  _write_raw(cfr, [40 * i for i in range(20)], [10 * i for i in range(20)])
  vfr = tmp_path / "vfr.mp4"
  pts = np.cumsum([0] + [40, 80] * 10)[:20].tolist()  # 25 and 12.5 fps mixed
  _write_raw(vfr, pts, [10 * i for i in range(20)])
  assert not video.probe(cfr).is_vfr
  assert video.probe(vfr).is_vfr


def test_probe_audio_only_and_errors(shared_dir, tmp_path):
  info = video.probe(shared_dir / "data/real/audio/geneface/zozo.wav")
  assert not info.has_video and info.has_audio
  assert info.num_frames == 0 and info.audio_sample_rate == 16000
  assert info.duration == pytest.approx(10.88, abs=0.05)
  with pytest.raises(video.VideoError, match="not found"):
    video.probe(tmp_path / "missing.mp4")
  bad = tmp_path / "bad.mp4"
  bad.write_bytes(b"not a video" * 100)
  with pytest.raises(video.VideoError, match="cannot read"):
    video.probe(bad)


# ---------------------------------------------------------------------------
# iter_frames


def test_iter_frames_native_count_and_format(shared_dir):
  path = shared_dir / "data/real/av/voxceleb2/00002.mp4"
  info = video.probe(path)
  n = 0
  for frame in video.iter_frames(path):
    assert frame.shape == (info.height, info.width, 3)
    assert frame.dtype == np.uint8 and frame.flags.c_contiguous
    n += 1
  assert n == info.num_frames


def test_iter_frames_bgr_matches_ffmpeg_decode(shared_dir):
  path = shared_dir / "data/real/av/voxceleb2/00002.mp4"
  first = next(video.iter_frames(path))
  raw = subprocess.run(
      [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
       "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
      capture_output=True, check=True).stdout
  ref = np.frombuffer(raw, np.uint8).reshape(first.shape)
  # Same decoder; only the yuv->bgr conversion path may differ by rounding.
  assert np.abs(first.astype(int) - ref.astype(int)).mean() < 1.0


def test_iter_frames_resamples_2997_to_25(shared_dir):
  path = shared_dir / "data/real/av/hdtf/RD_Radio10_0_clip_0.mp4"
  frames = list(video.iter_frames(path, fps=25))
  assert abs(len(frames) - 2.11 * 25) <= 2  # MANIFEST duration 2.11 s
  assert len(frames) < sum(1 for _ in video.iter_frames(path))  # dropped some


def test_iter_frames_resampling_by_timestamp(tmp_path):
  path = tmp_path / "ten.mp4"
  values = [20 * i + 10 for i in range(10)]
  _write_raw(path, [100 * i for i in range(10)], values)  # 10 fps, 1.0 s
  assert _levels(video.iter_frames(path), values) == values
  # Upsampling repeats each frame; downsampling keeps every other frame.
  upsampled = list(video.iter_frames(path, fps=20))
  assert _levels(upsampled, values) == [v for v in values for _ in range(2)]
  assert not np.shares_memory(upsampled[0], upsampled[1])  # Safe to modify.
  assert _levels(video.iter_frames(path, fps=5), values) == values[::2]
  # 12.5 fps: output k at 0.08 k s takes the latest frame with pts <= 0.08 k.
  expected = [values[int(0.08 * k * 10 + 1e-9)] for k in range(13)]
  assert _levels(video.iter_frames(path, fps=12.5), values) == expected


def test_iter_frames_makes_vfr_constant(tmp_path):
  path = tmp_path / "vfr.mp4"
  pts = [0, 40, 160, 200, 240, 400]  # gaps of 3 and 4 frames at 25 fps
  values = [20, 60, 100, 140, 180, 220]
  _write_raw(path, pts, values)
  got = _levels(video.iter_frames(path, fps=25), values)
  # Last frame lasts as long as the previous interval (160 ms -> 4 frames).
  assert got == [20, 60, 60, 60, 100, 140, 180, 180, 180, 180,
                 220, 220, 220, 220]


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_matches_ffmpeg_autorotate(tmp_path, rotation):
  path = tmp_path / f"rot{rotation}.mp4"
  img = np.zeros((48, 64, 3), np.uint8)
  img[:24, :32] = (255, 0, 0)
  img[:24, 32:] = (0, 255, 0)
  img[24:, :32] = (0, 0, 255)
  img[24:, 32:] = (255, 255, 255)
  with av.open(str(path), "w") as c:
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
    s.set_display_rotation(rotation)
    for i in range(3):
      frame = av.VideoFrame.from_ndarray(img, format="bgr24")
      frame.pts = i
      c.mux(s.encode(frame))
    c.mux(s.encode(None))
  info = video.probe(path)
  assert info.rotation == rotation
  expected_hw = (48, 64) if rotation == 180 else (64, 48)
  assert (info.height, info.width) == expected_hw
  first = next(video.iter_frames(path))
  raw = subprocess.run(
      [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(path),
       "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "bgr24", "-"],
      capture_output=True, check=True).stdout
  ref = np.frombuffer(raw, np.uint8).reshape(*expected_hw, 3)
  assert first.shape == ref.shape
  assert np.abs(first.astype(int) - ref.astype(int)).mean() < 2.0
  unrotated = next(video.iter_frames(path, autorotate=False))
  assert unrotated.shape == (48, 64, 3)


def test_iter_frames_errors(shared_dir, tmp_path):
  with pytest.raises(video.VideoError, match="not found"):
    next(video.iter_frames(tmp_path / "missing.mp4"))
  with pytest.raises(video.VideoError, match="no video stream"):
    next(video.iter_frames(shared_dir / "data/real/audio/geneface/zozo.wav"))
  with pytest.raises(video.VideoError, match="fps"):
    next(video.iter_frames(shared_dir / "data/real/av/grid/bbaf2n.mpg", fps=0))


# ---------------------------------------------------------------------------
# read_image


def test_read_image(tmp_path):
  rng = np.random.default_rng(0)
  img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
  cv2.imwrite(str(tmp_path / "a.png"), img)
  np.testing.assert_array_equal(video.read_image(tmp_path / "a.png"), img)
  grey = rng.integers(0, 256, (20, 30), dtype=np.uint8)
  cv2.imwrite(str(tmp_path / "g.png"), grey)
  out = video.read_image(tmp_path / "g.png")
  assert out.shape == (20, 30, 3)
  np.testing.assert_array_equal(out[..., 1], grey)
  with pytest.raises(video.VideoError, match="not found"):
    video.read_image(tmp_path / "missing.png")
  (tmp_path / "bad.png").write_bytes(b"nope")
  with pytest.raises(video.VideoError, match="cannot decode"):
    video.read_image(tmp_path / "bad.png")


# ---------------------------------------------------------------------------
# VideoWriter


def _gradient_frames(n: int, h: int, w: int) -> list[np.ndarray]:
  yy, xx = np.mgrid[0:h, 0:w]
  return [np.stack([(xx * 3 + 5 * i) % 256, (yy * 3) % 256,
                    np.full_like(xx, 8 * i)], -1).astype(np.uint8)
          for i in range(n)]


def test_writer_round_trip_with_audio(tmp_path):
  path = tmp_path / "out.mp4"
  fps, n = 25, 30
  frames = _gradient_frames(n, 64, 96)
  t = np.arange(int(1.2 * 16000)) / 16000
  wav = (0.4 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
  with video.VideoWriter(path, fps, 96, 64, audio=(wav, 16000)) as writer:
    for f in frames:
      writer.write(f)
  assert sorted(os.listdir(tmp_path)) == ["out.mp4"]  # No temp left behind.
  with av.open(str(path)) as c:
    assert c.streams.video[0].codec_context.name == "h264"
    assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
    assert c.streams.audio[0].codec_context.name == "aac"
  info = video.probe(path)
  assert (info.width, info.height, info.fps) == (96, 64, 25.0)
  assert info.num_frames == n and info.has_audio and not info.is_vfr
  assert info.duration == pytest.approx(n / fps, abs=1 / fps)
  decoded = list(video.iter_frames(path))
  assert len(decoded) == n
  err = np.mean([np.abs(a.astype(int) - b.astype(int)).mean()
                 for a, b in zip(decoded, frames)])
  assert err < 3.0  # crf 18 on smooth gradients
  back = audio.load_audio(path)
  assert abs(len(back) - len(wav)) <= 16000 // fps  # within one frame
  m = min(len(back), len(wav))
  # Aligned (no lag is better than zero lag) and close (AAC at 64 kb/s).
  errs = {lag: np.abs(np.roll(back[:m], lag) - wav[:m])[800:-800].mean()
          for lag in range(-2, 3)}
  assert min(errs, key=errs.get) == 0
  assert errs[0] < 0.01


def test_writer_colours_are_exact(tmp_path):
  path = tmp_path / "flat.mp4"
  colours = [(10, 10, 10), (128, 128, 128), (250, 250, 250), (200, 40, 90),
             (30, 160, 220)]
  frames = [np.tile(np.asarray(c, np.uint8), (32, 48, 1)) for c in colours]
  video.write_video(path, frames, 25)
  for got, want in zip(video.iter_frames(path), frames):
    # BT.601 limited range round trip of flat colours: within 2 levels.
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2


def test_writer_keeps_non_16k_audio_and_29_97_fps(tmp_path):
  path = tmp_path / "ntsc.mp4"
  wav = (0.3 * np.sin(2 * np.pi * 220 * np.arange(44100) / 44100)
         ).astype(np.float32)
  fps = 30000 / 1001
  video.write_video(path, _gradient_frames(30, 32, 32), fps, audio=(wav, 44100))
  info = video.probe(path)
  assert info.fps == pytest.approx(fps, abs=1e-3)
  assert info.audio_sample_rate == 44100
  assert info.num_frames == 30


def test_writer_exception_leaves_nothing(tmp_path):
  path = tmp_path / "out.mp4"
  with pytest.raises(RuntimeError, match="boom"):
    with video.VideoWriter(path, 25, 32, 32) as writer:
      for f in _gradient_frames(5, 32, 32):
        writer.write(f)
      assert any(name.startswith(".out.mp4.tmp-")
                 for name in os.listdir(tmp_path))
      raise RuntimeError("boom")
  assert os.listdir(tmp_path) == []


def test_writer_no_frames_or_bad_frame_leaves_nothing(tmp_path):
  path = tmp_path / "out.mp4"
  with pytest.raises(video.VideoError, match="no frames"):
    with video.VideoWriter(path, 25, 32, 32):
      pass
  assert os.listdir(tmp_path) == []
  with pytest.raises(video.VideoError, match="expected a uint8 BGR frame"):
    with video.VideoWriter(path, 25, 32, 32) as writer:
      writer.write(np.zeros((32, 32, 3), np.float32))
  assert os.listdir(tmp_path) == []
  with pytest.raises(video.VideoError, match="no frames"):
    video.write_video(path, [], 25)


def test_writer_unwritable_destination(tmp_path):
  with pytest.raises(video.VideoError, match="does not exist"):
    video.VideoWriter(tmp_path / "no" / "such" / "out.mp4", 25, 32, 32)
  a_file = tmp_path / "file.txt"
  a_file.write_text("x")
  with pytest.raises(video.VideoError, match="does not exist"):
    video.VideoWriter(a_file / "out.mp4", 25, 32, 32)
  # /proc refuses new files even for root (tests may run as root, where a
  # chmod-ed folder would still be writable).
  with pytest.raises(video.VideoError, match="cannot create output"):
    video.VideoWriter("/proc/lipsync_out.mp4", 25, 32, 32)
  with pytest.raises(video.VideoError, match="extension"):
    video.VideoWriter(tmp_path / "out.avi", 25, 32, 32)


def test_writer_pads_odd_sizes(tmp_path):
  path = tmp_path / "odd.mp4"
  frames = _gradient_frames(4, 33, 47)
  with video.VideoWriter(path, 25, 47, 33) as writer:
    assert (writer.width, writer.height) == (48, 34)
    for f in frames:
      writer.write(f)
  info = video.probe(path)
  assert (info.width, info.height) == (48, 34)
  decoded = next(video.iter_frames(path))
  # Original content kept; the extra row/column repeats the last one.
  assert np.abs(decoded[:33, :47].astype(int) - frames[0]).mean() < 3.0
  assert np.abs(decoded[:33, 47].astype(int)
                - frames[0][:, 46]).mean() < 4.0
  assert np.abs(decoded[33, :47].astype(int)
                - frames[0][32, :]).mean() < 4.0
