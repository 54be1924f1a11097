"""End-to-end tests of `python -m lipsync_jax.evaluate` on tiny synthetic data."""

from __future__ import annotations

import json
import pathlib

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax import checkpoint
from lipsync_jax.evaluation import evaluate
from lipsync_jax.evaluation import metrics
from lipsync_jax.vision import face_crops
from lipsync_jax import models
from lipsync_jax.data import format as fmt
from lipsync_jax.data.testing import write_synthetic_dataset

WM = 0.0625  # tiny widths: the whole file runs in seconds


def _random_variables(module, *shapes, seed: int):
  """Random variables from the model's shapes, filled with numpy.

  (Eager `module.init` compiles every layer separately, which takes minutes
  on a loaded CPU; only the shapes are traced here.)
  """
  tree = jax.eval_shape(module.init, jax.random.key(0), *[jnp.zeros(s) for s in shapes])
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = jax.tree_util.keystr(path)
    if "var" in name:
      return np.ones(leaf.shape, np.float32)
    if "mean" in name or "bias" in name:
      return np.zeros(leaf.shape, np.float32)
    if leaf.ndim == 1:  # batch-norm scale
      return np.ones(leaf.shape, np.float32)
    fan_in = int(np.prod(leaf.shape[:-1]))
    return (rng.normal(size=leaf.shape) / np.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, tree)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval")
  # 3 clips of 40 frames; clip 1 has no face in frames 18-19, so its longest
  # run of faces is 20 frames: unscorable with --min-frames 25.
  data = write_synthetic_dataset(root / "data", num_clips=3, num_frames=40, seed=1)
  gen = models.create("wav2lip", width_multiplier=WM)
  gv = _random_variables(gen, (1, 80, 16, 1), (1, 96, 96, 6), seed=0)
  checkpoint.save_model(root / "gen", "wav2lip", {"width_multiplier": WM}, gv)
  sn = models.create("syncnet_color", width_multiplier=WM)
  sv = _random_variables(sn, (1, 80, 16, 1), (1, 48, 96, 15), seed=1)
  checkpoint.save_model(root / "syncnet", "syncnet_color", {"width_multiplier": WM}, sv)
  return root, data


def _run(argv, capsys):
  rc = evaluate.main(argv)
  return rc, capsys.readouterr().err


def _check_files(out: pathlib.Path, with_grid: bool = True):
  names = ["report.json", "report.md", "lse_c_per_clip.png", "offset_hist.png",
           "sync_conf_worst.png"] + (["mouth_grid.png"] if with_grid else [])
  for name in names:
    assert (out / name).is_file(), name
  for name in names[2:]:
    img = cv2.imread(str(out / name))
    assert img is not None and img.ndim == 3 and min(img.shape[:2]) > 50, name
  assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
  return json.loads((out / "report.json").read_text())


def test_paired(setup, capsys):
  root, data = setup
  out = root / "paired"
  rc, err = _run(["--checkpoint", str(root / "gen"), "--data", str(data), "--split", "train",
                  "--syncnet", str(root / "syncnet"), "--out", str(out), "--quiet",
                  "--batch-size", "16", "--lmd"], capsys)
  assert rc == 0, err
  rep = _check_files(out)
  assert rep["mode"] == "paired"
  assert rep["scorer"] == "syncnet_color:syncnet"
  names = [c["name"] for c in rep["clips"]]
  assert names == ["synthetic/clip000", "synthetic/clip002"]
  assert rep["unscorable"] == [{"name": "synthetic/clip001", "reason":
                                "too short: longest run of frames with a face is 20 "
                                "(< --min-frames 25)"}]
  for c in rep["clips"]:
    assert c["num_frames"] == 40
    assert len(c["mean_dists"]) == 31 and len(c["frame_conf"]) == 36
    assert c["lse_d"] == pytest.approx(min(c["mean_dists"]), abs=1e-4)
    assert c["lse_c"] >= 0 and -15 <= c["offset"] <= 15
    assert 0 < c["psnr"] < 60 and -1 <= c["ssim"] <= 1 and c["lpips"] >= 0
    assert c["lmd"] >= 0
    assert "gt_lse_d" in c
  agg = rep["aggregate"]
  assert agg["psnr"]["n"] == 2
  mean_psnr = np.mean([c["psnr"] for c in rep["clips"]])
  assert agg["psnr"]["mean"] == pytest.approx(mean_psnr)
  lo, hi = agg["psnr"]["ci95"]
  assert lo <= mean_psnr <= hi
  md = (out / "report.md").read_text()
  assert "syncnet_color:syncnet" in md and "synthetic/clip001" in md and "too short" in md

  # The ground-truth sync scores equal a direct scoring of the stored crops.
  index = fmt.load_index(data)
  clip = index.by_id()["synthetic/clip000"]
  reader = fmt.ClipReader(data, index.codec, index.img_size)
  scorer = metrics.load_scorer(str(root / "syncnet"))
  direct = metrics.sync_scores(scorer, reader.frames(clip, 0, 40),
                               metrics.ClipAudio(mel=reader.full_mel(clip)), clip.fps)
  c0 = rep["clips"][0]
  assert c0["gt_lse_d"] == pytest.approx(direct.lse_d, abs=1e-5)
  assert c0["gt_offset"] == direct.offset


def test_unpaired(setup, capsys):
  root, data = setup
  out = root / "unpaired"
  rc, err = _run(["--checkpoint", str(root / "gen"), "--data", str(data), "--split", "train",
                  "--mode", "unpaired", "--syncnet", str(root / "syncnet"),
                  "--min-frames", "10", "--out", str(out), "--quiet", "--batch-size", "16"],
                 capsys)
  assert rc == 0, err
  rep = _check_files(out)
  assert rep["mode"] == "unpaired"
  assert rep["metrics"] == ["lse_d", "lse_c"]
  pairs = {c["name"]: c["audio_from"] for c in rep["clips"]}
  assert pairs == {"synthetic/clip000": "synthetic/clip001",
                   "synthetic/clip001": "synthetic/clip002",
                   "synthetic/clip002": "synthetic/clip000"}
  assert all("psnr" not in c for c in rep["clips"])
  c1 = [c for c in rep["clips"] if c["name"] == "synthetic/clip001"][0]
  assert c1["num_frames"] == 20 and c1["first_frame"] == 20 and c1["notes"]


def test_errors_are_one_line(setup, capsys):
  root, data = setup
  out = root / "bad"
  # A SyncNet where a generator is expected.
  rc, err = _run(["--checkpoint", str(root / "syncnet"), "--data", str(data),
                  "--syncnet", str(root / "syncnet"), "--out", str(out)], capsys)
  assert rc == 2
  assert err.startswith("error: ") and err.count("\n") == 1 and "syncnet_color" in err
  # An unknown scorer.
  rc, err = _run(["--checkpoint", str(root / "gen"), "--data", str(data), "--out", str(out),
                  "--syncnet", str(root / "no_such_expert")], capsys)
  assert rc == 2 and "no_such_expert" in err
  # Unknown split.
  rc, err = _run(["--checkpoint", str(root / "gen"), "--data", str(data), "--split", "nope",
                  "--syncnet", str(root / "syncnet"), "--out", str(out)], capsys)
  assert rc == 2 and "nope" in err
  assert not out.exists()


def test_videos_mode_lists_unscorable(setup, capsys):
  from lipsync_jax.io import video as video_lib
  root, _ = setup
  vids = root / "videos"
  vids.mkdir()
  rng = np.random.default_rng(0)
  noise = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(30)]
  wav = (0.1 * np.sin(np.arange(16000 * 1.2) * 0.05)).astype(np.float32)
  video_lib.write_video(vids / "noface.mp4", noise, 25.0, audio=(wav, 16000))
  video_lib.write_video(vids / "silent.mp4", noise, 25.0)
  out = root / "videos_report"
  rc, err = _run(["--videos", str(vids), "--syncnet", str(root / "syncnet"),
                  "--out", str(out), "--quiet"], capsys)
  assert rc == 0, err
  rep = json.loads((out / "report.json").read_text())
  assert rep["clips"] == []
  reasons = {u["name"]: u["reason"] for u in rep["unscorable"]}
  assert reasons["silent.mp4"] == "no audio stream"
  assert reasons["noface.mp4"].startswith("no face found")
  _check_files(out, with_grid=False)


def test_longest_run():
  assert face_crops.longest_run(np.array([1, 1, 0, 1, 1, 1, 0], bool)) == (3, 6)
  assert face_crops.longest_run(np.zeros(4, bool)) == (0, 0)
  assert face_crops.longest_run(np.ones(3, bool)) == (0, 3)


class _SquareDetector:
  """Finds the bright square of `_square_video` frames (none in dark frames)."""
  name = "square"

  def detect(self, frames):
    out = []
    for f in frames:
      ys, xs = np.nonzero(f[..., 1] > 200)
      out.append([] if len(ys) == 0 else
                 [(float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1),
                   1.0)])
    return out


def _square_video(path, n=30, dark=3, mouth=None):
  """n frames of a bright square drifting right (the first `dark` frames
  empty), with speech-like audio; `mouth` paints the square's lower quarter."""
  from lipsync_jax.io import video as video_lib
  frames = []
  for t in range(n):
    f = np.full((96, 128, 3), 40, np.uint8)
    if t >= dark:
      x = 20 + t
      f[20:76, x:x + 56] = (90, 230, 160)
      f[20:76, x:x + 56, 0] = np.arange(56, dtype=np.uint8)[:, None] * 3   # vertical ramp
      if mouth is not None:
        f[62:76, x:x + 56] = mouth
    frames.append(f)
  wav = (0.1 * np.sin(np.arange(int(16000 * n / 25)) * 0.05)).astype(np.float32)
  video_lib.write_video(path, frames, 25.0, audio=(wav, 16000))


def test_crops_along_a_sources_track_frame_the_same_pixels(tmp_path):
  det = _SquareDetector()
  src, out = tmp_path / "src.mp4", tmp_path / "out.mp4"
  _square_video(src)
  # A re-synced copy: a dark mouth lowers the green channel there, so a box
  # found anew on it ends higher and its crops frame other pixels.
  _square_video(out, mouth=(90, 60, 160))
  track = face_crops.face_track(str(src), det, pads=(0, 0, 0, 0), min_frames=10)
  assert track.start == 3 and track.stop == 30 and track.boxes.shape == (30, 4)
  crops, first, fps, _ = face_crops.video_face_crops(str(src), 32, det, pads=(0, 0, 0, 0),
                                                     min_frames=10)
  np.testing.assert_array_equal(face_crops.crops_along(str(src), track, 32), crops)
  assert (first, fps) == (3, 25.0)
  along = face_crops.crops_along(str(out), track, 32).astype(float)
  anew = face_crops.video_face_crops(str(out), 32, det, pads=(0, 0, 0, 0),
                                     min_frames=10)[0].astype(float)
  upper = slice(0, 14)    # above the painted mouth: the same pixels when framed alike
  assert np.abs(along[:, upper] - crops[:, upper]).mean() < 2.0
  assert np.abs(anew[:, upper] - crops[:, upper]).mean() > 4 * np.abs(
      along[:, upper] - crops[:, upper]).mean()
  short = tmp_path / "short.mp4"
  _square_video(short, n=20)
  short_crops = face_crops.crops_along(str(short), track, 32)   # as long as the video
  assert short_crops.shape == (17, 32, 32, 3)
  assert np.abs(short_crops.astype(float) - crops[:17]).mean() < 2.0
  shorter = tmp_path / "shorter.mp4"
  _square_video(shorter, n=3)
  with pytest.raises(face_crops.FaceCropError, match="ends before frame 3"):
    face_crops.crops_along(str(shorter), track, 32)
