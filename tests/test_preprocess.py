"""data_prep/preprocess.py on real clips plus generated bad files."""

from __future__ import annotations

import fractions
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from lipsync_jax.data import format as fmt
from lipsync_jax.data import make_loader
from lipsync_jax.data import preprocess_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
GRID = "data/real/av/grid"


def _grid(shared, n=30):
  from lipsync_jax.io import audio, video
  src = shared / GRID / "bbaf2n.mpg"
  frames = [f for _, f in zip(range(n), video.iter_frames(src, fps=25))]
  wav = audio.load_audio(src)
  return frames, wav


def _write_vfr(path, frames, wav):
  """H.264 + AAC with frame gaps alternating 50 ms / 30 ms (avg 25 fps)."""
  import av
  tb = fractions.Fraction(1, 1000)
  with av.open(str(path), "w") as c:
    vs = c.add_stream("libx264", rate=25)
    vs.width, vs.height = frames[0].shape[1], frames[0].shape[0]
    vs.pix_fmt = "yuv420p"
    vs.codec_context.time_base = vs.time_base = tb
    ast = c.add_stream("aac", rate=16000)
    t = 0
    for i, f in enumerate(frames):
      vf = av.VideoFrame.from_ndarray(f, format="bgr24")
      vf.pts, vf.time_base = t, tb
      t += 30 if i % 2 else 50
      for pkt in vs.encode(vf):
        c.mux(pkt)
    for pkt in vs.encode():
      c.mux(pkt)
    af = av.AudioFrame.from_ndarray(
        wav[None, :int(t / 1000 * 16000)].astype(np.float32), format="fltp",
        layout="mono")
    af.sample_rate = 16000
    for pkt in ast.encode(af):
      c.mux(pkt)
    for pkt in ast.encode():
      c.mux(pkt)


@pytest.fixture(scope="module")
def raw_dir(shared_dir, tmp_path_factory):
  from lipsync_jax.io import video
  raw = tmp_path_factory.mktemp("raw")
  (raw / "real").mkdir()
  (raw / "bad").mkdir()
  shutil.copy(shared_dir / GRID / "brbk7n.mpg", raw / "real" / "brbk7n.mpg")
  b = (shared_dir / GRID / "lbax4n.mpg").read_bytes()
  # A truncated MPEG-PS still decodes: a shorter but valid clip.
  (raw / "real" / "lbax4n_half.mpg").write_bytes(b[:len(b) // 2])
  # A truncated mp4 loses its moov atom: unreadable.
  b = (shared_dir / "data/real/av/voxceleb2/00010.mp4").read_bytes()
  (raw / "bad" / "truncated.mp4").write_bytes(b[:len(b) // 2])
  (raw / "bad" / "not_a_video.mkv").write_text("hello")
  frames, wav = _grid(shared_dir, 30)
  sec = lambda s: wav[:int(s * 16000)]
  video.write_video(raw / "bad" / "no_audio.mp4", frames, 25)
  rng = np.random.default_rng(0)
  noise = [rng.integers(0, 256, (120, 160, 3), np.uint8) for _ in range(30)]
  video.write_video(raw / "bad" / "noise.mp4", noise, 25,
                    audio=(sec(1.2), 16000))
  video.write_video(raw / "bad" / "three_frames.mp4", frames[:3], 25,
                    audio=(sec(0.12), 16000))
  video.write_video(raw / "bad" / "short_audio.mp4", frames, 25,
                    audio=(sec(0.1), 16000))
  vertical = [np.ascontiguousarray(np.rot90(f)) for f in frames]
  video.write_video(raw / "real" / "vertical.mp4", vertical, 25,
                    audio=(sec(1.2), 16000))
  video.write_video(raw / "real" / "longer_audio.mp4", frames, 30,
                    audio=(sec(1.5), 16000))
  _write_vfr(raw / "real" / "vfr.mp4", frames, wav)
  # Two people side by side; the right one smaller.
  other = [f for _, f in zip(range(30), video.iter_frames(
      shared_dir / GRID / "lrwp9a.mpg", fps=25))]
  two = []
  for a, b in zip(frames, other):
    right = np.zeros((288, 270, 3), np.uint8)
    right[36:252] = cv2.resize(b, (270, 216))
    two.append(np.concatenate([a, right], axis=1))
  video.write_video(raw / "real" / "two_faces.mp4", two, 25,
                    audio=(sec(1.2), 16000))
  return raw


EXPECTED = {
    "real/brbk7n": ("ok", ""),
    "real/lbax4n_half": ("ok", ""),
    "real/vertical": ("ok", "vertical video"),
    "real/longer_audio": ("ok", "resampled from 30.00 to 25 fps"),
    "real/vfr": ("ok", "variable frame rate"),
    "real/two_faces": ("ok", "several faces in"),
    "bad/truncated": ("failed", "corrupt or unreadable"),
    "bad/not_a_video": ("failed", "corrupt or unreadable"),
    "bad/no_audio": ("failed", "no audio stream"),
    "bad/noise": ("failed", "no face detected"),
    "bad/three_frames": ("failed", "too short: 3 frame(s)"),
    "bad/short_audio": ("failed", "lengths differ"),
}


def test_report_accounts_for_every_input(raw_dir, tmp_path):
  cfg = preprocess_lib.PrepConfig(img_size=48, clips_per_shard=2)
  report = preprocess_lib.run(raw_dir, tmp_path / "ds", cfg, workers=1,
                              progress=False)
  got = {e["clip_id"]: e for e in report["clips"]}
  assert set(got) == set(EXPECTED)
  for cid, (status, text) in EXPECTED.items():
    e = got[cid]
    assert e["status"] == status, (cid, e)
    assert text in (e["reason"] if status == "failed" else
                    " ".join(e["notes"])), (cid, e)
  # 30 frames at 30 fps -> 25 frames at 25 fps (1 s); the 1.5 s audio is cut.
  assert "s longer than video: trimmed audio" in " ".join(
      got["real/longer_audio"]["notes"])
  assert got["real/longer_audio"]["frames"] == 25
  assert got["real/brbk7n"]["frames"] == 75
  assert got["real/brbk7n"]["face_frames"] == 75
  assert 30 < got["real/lbax4n_half"]["frames"] < 50
  on_disk = json.loads((tmp_path / "ds" / "report.json").read_text())
  assert on_disk["num_ok"] == 6 and on_disk["num_failed"] == 6
  table = preprocess_lib.format_report(report)
  assert "no audio stream" in table and "6 ok, 6 failed" in table
  # The dataset holds the 4 good clips, packed in 2 shards, and loads.
  index = fmt.load_index(tmp_path / "ds")
  assert sorted(c.clip_id for c in index.clips) == sorted(
      k for k, v in EXPECTED.items() if v[0] == "ok")
  assert len({c.file for c in index.clips}) == 3
  assert not list((tmp_path / "ds" / "work" / "parts").glob("*"))
  # The 6 clips hash to train and test only: val is cut in time from the
  # end of the longest clip (the only one with room for a 25-frame span).
  assert report["split"]["used"] == "carved"
  assert [(c.clip_id, c.span) for c in index.split("val")] == [
      ("real/brbk7n", (50, 75))]
  assert sum(len(index.split(s)) for s in fmt.SPLITS) == 7
  b = next(iter(make_loader(tmp_path / "ds", "all", "generator", 4, 0,
                            shard_index=0, shard_count=1)))
  assert b["target"].shape == (4, 5, 48, 48, 3)
  # Crops are faces, not borders: bright skin in the middle of the crop.
  assert b["target"].mean() > 60
  reader = fmt.ClipReader(tmp_path / "ds", index.codec, index.img_size)
  c = index.by_id()["real/brbk7n"]
  full = reader.meta(c.file, c.offset)
  assert got["real/brbk7n"]["jitter"] < got["real/brbk7n"]["jitter_raw"]
  assert full.boxes.shape == (75, 4) and full.detector == "blazeface"
  c = index.by_id()["real/two_faces"]
  track = reader.meta(c.file, c.offset).boxes
  assert (track[:, 2] <= 360).all()  # the larger, left face
  # The box track is smooth: mean centre motion < 2% of the box size.
  ctr = (full.boxes[:, :2] + full.boxes[:, 2:]) / 2
  size = (full.boxes[:, 2:] - full.boxes[:, :2]).mean()
  assert np.abs(np.diff(ctr, axis=0)).mean() / size < 0.02


def test_kill_and_resume(shared_dir, tmp_path):
  raw = tmp_path / "raw"
  raw.mkdir()
  names = ["bbaf2n", "brbk7n", "lbax4n"]
  for n in names:
    shutil.copy(shared_dir / GRID / f"{n}.mpg", raw / f"{n}.mpg")
  out = tmp_path / "ds"
  cmd = [sys.executable, str(REPO / "data_prep" / "preprocess.py"), "--input",
         str(raw), "--output", str(out), "--workers", "1", "--img-size", "32",
         "--no-progress"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  status = out / "work" / "status"
  deadline = time.time() + 120
  while time.time() < deadline and proc.poll() is None:
    if status.is_dir() and len(list(status.glob("*.json"))) >= 1:
      break
    time.sleep(0.05)
  assert proc.poll() is None, "finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done_before = {p.name: p.stat().st_mtime_ns for p in status.glob("*.json")}
  assert 1 <= len(done_before) < len(names)
  assert not (out / "index.json").exists()
  res = subprocess.run(cmd, env=env, capture_output=True, text=True,
                       timeout=3600)  # catches hangs only
  assert res.returncode == 0, res.stderr[-2000:]
  assert f"{len(done_before)} already done" in res.stderr
  for name, mtime in done_before.items():  # finished clips were not redone
    assert (status / name).stat().st_mtime_ns == mtime
  index = fmt.load_index(out)
  assert sorted(c.clip_id for c in index.clips) == names
  assert not list((out / "work" / "parts").glob("*"))
  # A third run (in-process) has nothing to do and keeps the dataset.
  report = preprocess_lib.run(raw, out, preprocess_lib.PrepConfig(img_size=32),
                              workers=1, progress=False)
  assert report["num_ok"] == len(names)
  assert sorted(c.clip_id for c in fmt.load_index(out).clips) == names


def test_few_clips_with_the_defaults_give_a_usable_val_split(tmp_path):
  import dataclasses  # pylint: disable=g-import-not-at-top
  from lipsync_jax.data import testing  # pylint: disable=g-import-not-at-top
  # Seven 3 s clips under ids that hash to train and test only (the
  # few-clips report: 4 GRID and 3 HDTF clips), packed with the defaults.
  ids = ["bbaf2n", "brbk7n", "lbax4n", "lbbc2a", "RD_Radio2_000",
         "WDA_BobMenendez_000", "WDA_EdMarkey0_000"]
  d = testing.write_synthetic_dataset(tmp_path / "ds", num_clips=7,
                                      num_frames=75, img_size=32, seed=2)
  index = fmt.load_index(d)
  clips = [dataclasses.replace(c, clip_id=i) for c, i in zip(index.clips, ids)]
  assert fmt.assign_splits(clips)["val"] == []  # hashing alone
  fmt.write_index(d, clips, img_size=32, codec=index.codec, fps=index.fps)
  report = preprocess_lib.pack(d, preprocess_lib.PrepConfig())
  index = fmt.load_index(d)
  val = index.split("val")
  assert [(c.clip_id, c.span) for c in val] == [("RD_Radio2_000", (49, 75))]
  assert [(c.clip_id, c.span) for c in index.split("test")] == [
      ("WDA_BobMenendez_000", (49, 75))]
  assert len(index.split("train")) == 7
  # The rule is printed (one line) and recorded in index.json and report.json.
  table = preprocess_lib.format_report(report).splitlines()
  assert table[-2] == ("splits (carved in time): train 463 frames from 7 "
                       "clip(s), val 26 frames from 1 clip(s), test 26 frames "
                       "from 1 clip(s)")
  assert table[-1].startswith("note: hashing 7 clip(s) by clip left val "
                              "empty, so val and test were cut in time")
  on_disk = json.loads((d / fmt.INDEX_NAME).read_text())["split"]
  assert on_disk["by"] == "clip" and on_disk["used"] == "carved"
  assert on_disk["frames"] == {"train": 463, "val": 26, "test": 26}
  assert json.loads((d / "report.json").read_text())["split"] == on_disk
  # Training can sample val: syncnet windows inside the span.
  b = next(iter(make_loader(d, "val", "syncnet", 8, 0, with_meta=True,
                            shard_index=0, shard_count=1)))
  assert b["face_start"].min() >= 49 and b["audio_start"].min() >= 49


def test_cli_errors(tmp_path):
  res = subprocess.run(
      [sys.executable, str(REPO / "data_prep" / "preprocess.py"), "--input",
       str(tmp_path / "missing"), "--output", str(tmp_path / "o")],
      capture_output=True, text=True, timeout=3600)  # catches hangs only
  assert res.returncode == 2
  assert res.stderr.strip().splitlines()[-1].startswith(
      "error: input folder not found")


def _shared_corpus():
  sys.path.insert(0, str(REPO / "data_prep"))
  import shared_corpus  # pylint: disable=import-outside-toplevel,import-error
  return shared_corpus


def _fake_shared(root: pathlib.Path) -> pathlib.Path:
  for rel in ("data/lrw_ar/video/a.mp4", "data/lrw_ar/video/b.mp4", "data/lrw_ar/video/a.txt",
              "data/real/av/grid/bbaf2n.mpg", "data/real/av/grid/brbk7n.mpg",
              "data/real/av/voxceleb2/00002.mp4", "data/real/av/voxceleb2/00010.mp4",
              "data/real/speech/x.wav"):
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(b"")
  return root


def test_shared_corpus_links_the_training_clips_and_leaves_held_out_speakers_out(tmp_path):
  corpus = _shared_corpus()
  shared = _fake_shared(tmp_path / "shared")
  out = tmp_path / "corpus"
  assert corpus.make_corpus(shared, out) == (4, 0)
  assert corpus.make_corpus(shared, out) == (0, 4)           # rerun: nothing to do
  ids = sorted(preprocess_lib.clip_id_for(p, out) for p in preprocess_lib.find_videos(out))
  # grid/bbaf2n (GRID s1) and voxceleb2/00002 are held-out speakers.
  assert ids == ["a", "b", "real_grid_brbk7n", "real_voxceleb2_00010"]
  assert (out / "a.mp4").resolve() == (shared / "data/lrw_ar/video/a.mp4").resolve()
  (out / "b.mp4").unlink()
  (out / "b.mp4").symlink_to(shared / "data/lrw_ar/video/a.mp4")
  with pytest.raises(corpus.CorpusError, match="not a link to"):
    corpus.make_corpus(shared, out)
  res = subprocess.run([sys.executable, str(REPO / "data_prep" / "shared_corpus.py"),
                        "--shared", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=600)   # catches hangs only
  assert res.returncode == 2 and res.stderr.count("\n") == 1
  assert res.stderr.startswith("error: ") and "lrw_ar" in res.stderr
  assert not (tmp_path / "o").exists()


def test_shared_corpus_on_the_shared_folder(shared_dir):
  links = _shared_corpus().corpus_links(shared_dir)
  lrw = [n for n in links if not n.startswith("real_")]
  real = [n for n in links if n.startswith("real_")]
  assert len(lrw) == len(list((shared_dir / "data/lrw_ar/video").glob("*.mp4")))
  assert len(real) == 21
  assert not any(n.startswith(("real_grid_bbaf2n", "real_voxceleb2_00086")) for n in real)
