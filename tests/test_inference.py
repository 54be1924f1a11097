"""End-to-end tests of inference: `LipSyncer` and the `infer.py` CLI.

A tiny random-weight Wav2Lip (width 1/16) saved with `checkpoint.save_model`
stands in for a trained one: the tests are about the pipeline (lengths,
streams, ping-pong, caching, compilation, pass-through, errors), not quality.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import av
import imageio_ffmpeg
import jax
import numpy as np
import pytest
import soundfile as sf

from lipsync_jax.io import audio as audio_lib
from lipsync_jax import checkpoint, inference, models
from lipsync_jax.io import video
from lipsync_jax.vision import face_detection

REPO = pathlib.Path(__file__).resolve().parents[1]
CLIP = "data/real/av/voxceleb2/00002.mp4"          # 224x224, 25 fps, 5.1 s
SPEECH = "data/real/audio/librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0880.wav"
GRID_CLIP = "data/real/av/grid/bbaf2n.mpg"         # 360x288 frontal studio face
SPEECH_LONG = "data/real/audio/librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0890.wav"
WIDTH = 0.0625
BATCH = 8


def _fill(shapes, seed: int):
  """Random weights for a tree of ShapeDtypeStructs (no init compile)."""
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    name = str(path[-1].key)
    if name in ("scale", "var"):
      return np.ones(s.shape, np.float32)
    if name in ("bias", "mean"):
      return np.zeros(s.shape, np.float32)
    fan_in = int(np.prod(s.shape[:-1]))
    return (rng.normal(size=s.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(leaf, shapes)


def _save(path, arch, *args):
  model = models.create(arch, width_multiplier=WIDTH)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), *args)
  checkpoint.save_model(path, arch, {"width_multiplier": WIDTH}, _fill(shapes, 0))
  return str(path)


@pytest.fixture(scope="module")
def gen_ckpt(tmp_path_factory) -> str:
  return _save(tmp_path_factory.mktemp("ckpt") / "wav2lip", "wav2lip",
               np.zeros((1, 80, 16, 1), np.float32), np.zeros((1, 96, 96, 6), np.float32))


@pytest.fixture(scope="module")
def syncnet_ckpt(tmp_path_factory) -> str:
  return _save(tmp_path_factory.mktemp("ckpt") / "syncnet", "syncnet_color",
               np.zeros((1, 80, 16, 1), np.float32), np.zeros((1, 48, 96, 15), np.float32))


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
  return str(tmp_path_factory.mktemp("boxcache"))


@pytest.fixture(scope="module")
def syncer(gen_ckpt, cache_dir) -> inference.LipSyncer:
  return inference.LipSyncer.from_checkpoint(gen_ckpt, batch_size=BATCH, cache_dir=cache_dir)


def _streams(path) -> dict:
  """Stream facts of an mp4, from decoding it completely with PyAV."""
  with av.open(str(path)) as c:
    v, a = c.streams.video[0], c.streams.audio[0]
    info = {"vcodec": v.codec_context.name, "acodec": a.codec_context.name,
            "fps": float(v.average_rate), "width": v.width, "height": v.height}
    frames = [f.to_ndarray(format="bgr24") for f in c.decode(v)]
  with av.open(str(path)) as c:
    samples = sum(f.samples for f in c.decode(audio=0))
    info["audio_rate"] = c.streams.audio[0].rate
    info["audio_seconds"] = samples / info["audio_rate"]
  info["frames"] = frames
  return info


def _ffmpeg_decodes_cleanly(path) -> str:
  """Fully decodes with the ffmpeg binary; returns its stream summary."""
  exe = imageio_ffmpeg.get_ffmpeg_exe()
  r = subprocess.run([exe, "-hide_banner", "-v", "info", "-i", str(path), "-f", "null", "-"],
                     capture_output=True, text=True, timeout=3600)  # catches hangs only
  assert r.returncode == 0, r.stderr[-2000:]
  assert "error" not in r.stderr.lower(), r.stderr[-2000:]
  return r.stderr


def _frames_for(wav, fps=25.0) -> int:
  """Output length rule: round(seconds * fps), halves up (audio.num_frames_for_audio)."""
  return int(np.floor(len(wav) / 16000 * fps + 0.5))


def _write_wav(path, wav, sr=16000):
  sf.write(str(path), np.asarray(wav, np.float32), sr, subtype="PCM_16")
  return str(path)


def _index_video(path, n_frames: int, size: int = 128, fps: float = 25.0) -> str:
  """Frames whose top-left 24x24 block has brightness 20 * index."""
  frames = []
  for i in range(n_frames):
    f = np.full((size, size, 3), 90, np.uint8)
    f[:24, :24] = 20 * i
    frames.append(f)
  video.write_video(path, frames, fps)
  return str(path)


# -----------------------------------------------------------------------------
# Pure helpers.
# -----------------------------------------------------------------------------

def test_ping_pong_index():
  got = [inference.ping_pong_index(i, 4) for i in range(12)]
  assert got == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2, 1]
  assert [inference.ping_pong_index(i, 1) for i in range(3)] == [0, 0, 0]


def test_batch_is_sharded_over_devices(syncer):
  n = jax.local_device_count()
  assert syncer.batch_size % n == 0 and syncer.batch_size >= BATCH
  out = syncer.generate_batch(
      syncer.variables, np.zeros((syncer.batch_size, 80, 16, 1), np.float32),
      np.zeros((syncer.batch_size, 96, 96, 3), np.uint8))
  assert out.shape == (syncer.batch_size, 96, 96, 3) and out.dtype == np.uint8
  assert len(out.sharding.device_set) == n
  assert {sh.data.shape[0] for sh in out.addressable_shards} == {syncer.batch_size // n}


# -----------------------------------------------------------------------------
# End to end.
# -----------------------------------------------------------------------------

def _infer_module():
  sys.path.insert(0, str(REPO))
  try:
    import infer
  finally:
    sys.path.remove(str(REPO))
  return infer


def _reuse(syncer, built: list):
  """A `make_syncer` for infer.main that reuses the module's compiled model."""
  def make_syncer(ckpt, options):
    built.append(syncer.with_options(**dataclasses.asdict(options)))
    return built[-1]
  return make_syncer


def test_real_clip_with_other_speech(syncer, gen_ckpt, shared_dir, tmp_path, cache_dir, capsys):
  """infer.py (in process, reusing the compiled model) on a real clip."""
  face, speech = shared_dir / CLIP, shared_dir / SPEECH
  out = tmp_path / "out.mp4"
  built = []
  rc = _infer_module().main(
      ["--checkpoint", gen_ckpt, "--face", str(face), "--audio", str(speech),
       "--outfile", str(out), "--batch-size", str(BATCH), "--cache-dir", cache_dir,
       "--report", str(tmp_path / "report.json")], _reuse(syncer, built))
  assert rc == 0, capsys.readouterr().err
  assert len(built) == 1 and "fps end to end" in capsys.readouterr().out
  report = json.loads((tmp_path / "report.json").read_text())

  wav = audio_lib.load_audio(speech)
  expected_frames = _frames_for(wav)
  assert report["frames"] == expected_frames
  assert report["source_frames"] == video.probe(face).num_frames
  assert not report["ping_pong"] and not report["detection_cached"]
  assert 0 <= report["frames_without_face"] < report["frames"]
  assert set(inference.STAGES) <= set(report["timings"]) and report["timings"]["total"] > 0
  assert 0 < report["timings"]["first_frame"] <= report["timings"]["total"]
  assert len(list(pathlib.Path(cache_dir).glob("*.npz"))) == 1

  summary = _ffmpeg_decodes_cleanly(out)
  assert "Video: h264" in summary and "Audio: aac" in summary
  info = _streams(out)
  assert (info["vcodec"], info["acodec"]) == ("h264", "aac")
  assert (info["width"], info["height"]) == (224, 224) and info["fps"] == 25.0
  assert len(info["frames"]) == expected_frames
  audio_seconds = len(wav) / 16000
  assert abs(len(info["frames"]) / 25.0 - audio_seconds) <= 1 / 25
  assert abs(info["audio_seconds"] - audio_seconds) <= 1 / 25
  # Only the lower face changes: the top rows of every frame are the source's.
  src = list(video.iter_frames(face))
  for i in (0, expected_frames // 2, expected_frames - 1):
    diff = np.abs(info["frames"][i][:20].astype(int) - src[i][:20].astype(int)).mean()
    assert diff < 6, (i, diff)
  # And something did change (the generator's face was pasted).
  changed = [np.abs(f.astype(int) - s.astype(int)).mean() for f, s in zip(info["frames"], src)]
  assert max(changed) > 2


def test_rerun_uses_cache_and_one_compilation(syncer, shared_dir, tmp_path, cache_dir):
  if not list(pathlib.Path(cache_dir).glob("*.npz")):  # run alone: fill the cache
    short = _write_wav(tmp_path / "short.wav", audio_lib.load_audio(shared_dir / SPEECH)[:4000])
    assert not syncer.run(shared_dir / CLIP, short, tmp_path / "first.mp4").detection_cached

  class NoDetector:
    name = "forbidden"

    def detect(self, frames):
      raise AssertionError("detection should come from the cache")

  real, syncer._detector = syncer._detector, NoDetector()
  try:
    # Audio longer than the video (7.1 s > 5.1 s): ping-pong, no new compile.
    report = syncer.run(shared_dir / CLIP, shared_dir / SPEECH_LONG, tmp_path / "long.mp4")
  finally:
    syncer._detector = real
  assert report.detection_cached and report.ping_pong
  assert report.frames == _frames_for(audio_lib.load_audio(shared_dir / SPEECH_LONG))
  assert len(_streams(tmp_path / "long.mp4")["frames"]) == report.frames
  assert syncer.compilations == 1


def test_ping_pong_order(syncer, shared_dir, tmp_path):
  n = 6
  face = _index_video(tmp_path / "idx.mp4", n)
  wav = audio_lib.load_audio(shared_dir / SPEECH)[:16000]  # 1 s -> 25 frames
  # A fixed box (no detection) away from the index block.
  boxed = syncer.with_options(box=(40, 120, 30, 110))
  report = boxed.run(face, _write_wav(tmp_path / "s.wav", wav), tmp_path / "pp.mp4")
  assert report.frames == 25 and report.ping_pong and report.source_frames == n
  frames = _streams(tmp_path / "pp.mp4")["frames"]
  got = [float(f[4:20, 4:20].mean()) for f in frames]
  want = [20 * inference.ping_pong_index(j, n) for j in range(25)]
  np.testing.assert_allclose(got, want, atol=6)
  assert syncer.compilations == 1


def test_still_image(syncer, shared_dir, tmp_path):
  frame = next(video.iter_frames(shared_dir / GRID_CLIP))
  import cv2
  image = tmp_path / "face.png"
  cv2.imwrite(str(image), frame)
  still = syncer.with_options(fps=20)
  before = syncer.compilations
  report = still.run(image, shared_dir / SPEECH, tmp_path / "still.mp4")
  expected = _frames_for(audio_lib.load_audio(shared_dir / SPEECH), 20)
  assert report.frames == expected and report.source_frames == 1
  assert report.frames_without_face == 0
  info = _streams(tmp_path / "still.mp4")
  assert len(info["frames"]) == expected and info["fps"] == 20.0
  assert abs(info["audio_seconds"] - expected / 20) <= 1 / 20
  # The face was encoded once, by the still path (its encoder and decoder,
  # each compiled once), not by the per-frame generator.
  assert syncer.compilations == before and syncer.still_compilations == 2
  # Without the reuse: the whole generator on every frame, the same video.
  per_frame = still.with_options(reuse_face_features=False)
  per_frame.run(image, shared_dir / SPEECH, tmp_path / "per_frame.mp4")
  assert syncer.compilations == max(before, 1) and syncer.still_compilations == 2
  other = _streams(tmp_path / "per_frame.mp4")["frames"]
  diff = [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(info["frames"], other)]
  assert len(other) == expected and max(diff) < 0.5, max(diff)


def test_a_192px_model_runs_at_its_own_size_on_a_real_clip(shared_dir, tmp_path, cache_dir):
  """The checkpoint's face size sets the crop: 192 px crops in, the model's
  192 px faces pasted back, one compilation; a face smaller than that is
  upscaled with a note."""
  model = models.create("wav2lip", width_multiplier=WIDTH, face_size=192)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, 80, 16, 1), np.float32),
                          np.zeros((1, 192, 192, 6), np.float32))
  ckpt = tmp_path / "hq"
  checkpoint.save_model(ckpt, "wav2lip", {"width_multiplier": WIDTH, "face_size": 192},
                        _fill(shapes, 0))
  hq = inference.LipSyncer.from_checkpoint(ckpt, batch_size=BATCH, cache_dir=cache_dir)
  assert hq.face_size == 192
  speech = _write_wav(tmp_path / "s.wav", audio_lib.load_audio(shared_dir / SPEECH)[:12000])
  report = hq.run(shared_dir / CLIP, speech, tmp_path / "hq.mp4")
  assert report.frames == 19 and report.frames_without_face == 0 and hq.compilations == 1
  assert any("smaller than the model's 192 px faces" in n for n in report.notes), report.notes
  info = _streams(tmp_path / "hq.mp4")
  src = list(video.iter_frames(shared_dir / CLIP))
  assert len(info["frames"]) == 19 and (info["width"], info["height"]) == (224, 224)
  changed = [np.abs(f.astype(int) - s.astype(int)).mean() for f, s in zip(info["frames"], src)]
  assert max(changed) > 2
  # A still photo at 192: the face is encoded once, at 192.
  image = tmp_path / "face.png"
  import cv2
  cv2.imwrite(str(image), src[0])
  hq.run(image, speech, tmp_path / "hq_still.mp4")
  assert hq.still_compilations == 2 and hq.compilations == 1


def test_still_path_generates_the_per_frame_frames(syncer):
  """The still path (face features once, decoder per batch) against the
  per-frame generator on the same crop: uint8 frames equal up to a rounding
  step, almost all exactly."""
  rng = np.random.default_rng(0)
  crop = rng.integers(0, 256, (1, 96, 96, 3), np.uint8)
  mel = rng.normal(size=(syncer.batch_size, 80, 16, 1)).astype(np.float32)
  whole = np.asarray(syncer.generate_batch(syncer.variables, mel,
                                           np.repeat(crop, syncer.batch_size, 0)))
  feats = syncer.encode_still(syncer.variables, crop)
  once = np.asarray(syncer.generate_still(syncer.variables, mel, feats))
  assert once.shape == whole.shape and once.dtype == np.uint8
  assert np.abs(once.astype(int) - whole.astype(int)).max() <= 1
  assert (once == whole).mean() > 0.999
  assert np.abs(whole[0].astype(int) - whole[1].astype(int)).max() > 0  # audio matters


def test_frames_without_face_pass_through(syncer, shared_dir, tmp_path):
  face = _index_video(tmp_path / "noface.mp4", 10)  # flat frames: no face
  # 0.5 s at 44.1 kHz -> 13 frames; the output keeps the native audio rate.
  wav = audio_lib.load_audio(shared_dir / SPEECH, sr=44100)[:22050]
  report = syncer.run(face, _write_wav(tmp_path / "s.wav", wav, 44100), tmp_path / "nf.mp4")
  assert report.frames == 13 and report.frames_without_face == 13
  src = list(video.iter_frames(face))
  info = _streams(tmp_path / "nf.mp4")
  assert info["audio_rate"] == 44100 and abs(info["audio_seconds"] - 0.5) <= 1 / 25
  for i, f in enumerate(info["frames"]):
    want = src[inference.ping_pong_index(i, len(src))]
    assert np.abs(f.astype(int) - want.astype(int)).mean() < 2


def test_static_and_resize_factor(syncer, shared_dir, tmp_path):
  face = _index_video(tmp_path / "idx.mp4", 6)
  speech = _write_wav(tmp_path / "s.wav", audio_lib.load_audio(shared_dir / SPEECH)[:8000])
  # --static: every output frame is the first frame (index block 0).
  report = syncer.with_options(static=True, box=(40, 120, 30, 110)).run(
      face, speech, tmp_path / "static.mp4")
  assert report.source_frames == 1 and report.frames == 13 and not report.ping_pong
  frames = _streams(tmp_path / "static.mp4")["frames"]
  assert max(float(f[4:20, 4:20].mean()) for f in frames) < 6
  # --resize-factor 2: half-size output; frame i still shows index block i.
  report = syncer.with_options(resize_factor=2, box=(20, 60, 15, 55)).run(
      face, speech, tmp_path / "half.mp4")
  info = _streams(tmp_path / "half.mp4")
  assert (info["width"], info["height"]) == (64, 64)
  got = [float(f[2:10, 2:10].mean()) for f in info["frames"]]
  np.testing.assert_allclose(got, [20 * inference.ping_pong_index(j, 6) for j in range(13)],
                             atol=8)
  assert syncer.compilations == 1


def test_failed_run_leaves_no_output(syncer, shared_dir, tmp_path):
  boxed = syncer.with_options(box=(40, 120, 30, 110))

  def broken(*args):
    raise RuntimeError("generator exploded")

  boxed.generate_batch = broken
  face = _index_video(tmp_path / "idx.mp4", 12)
  out = tmp_path / "out.mp4"
  with pytest.raises(RuntimeError, match="exploded"):
    boxed.run(face, shared_dir / SPEECH, out)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["idx.mp4"]


def test_run_jobs_reports_failures_and_keeps_going(syncer, shared_dir, tmp_path):
  speech = shared_dir / SPEECH
  short = _write_wav(tmp_path / "short.wav", audio_lib.load_audio(speech)[:8000])
  jobs = [(str(shared_dir / CLIP), short, str(tmp_path / "a.mp4")),
          (str(tmp_path / "missing.mp4"), short, str(tmp_path / "b.mp4")),
          (str(shared_dir / CLIP), short, str(tmp_path / "c.mp4"))]
  before = syncer.compilations
  results = inference.run_jobs(syncer, jobs)
  assert [r.ok for r in results] == [True, False, True]
  assert "not found" in results[1].error and "missing.mp4" in results[1].error
  assert (tmp_path / "a.mp4").exists() and (tmp_path / "c.mp4").exists()
  assert not (tmp_path / "b.mp4").exists()
  assert syncer.compilations == before


# -----------------------------------------------------------------------------
# The CLI.
# -----------------------------------------------------------------------------

def _bad_inputs(tmp: pathlib.Path, shared: pathlib.Path, ckpt: str, syncnet: str):
  """name -> (checkpoint, face, audio, outfile, expected message fragment)."""
  clip, speech = shared / CLIP, shared / SPEECH
  corrupt = tmp / "corrupt.mp4"
  corrupt.write_bytes(np.random.default_rng(0).bytes(20000))
  silent = _write_wav(tmp / "silent.wav", np.zeros(16000))
  empty = tmp / "empty.wav"
  sf.write(str(empty), np.zeros(0, np.float32), 16000)
  mute_video = tmp / "mute.mp4"
  video.write_video(mute_video, [np.full((64, 64, 3), 128, np.uint8)] * 5, 25)
  one_frame = tmp / "one.mp4"
  video.write_video(one_frame, [np.full((64, 64, 3), 128, np.uint8)], 25)
  blank = tmp / "blank.png"
  import cv2
  cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
  out = tmp / "out.mp4"
  return {
      "missing face": (ckpt, tmp / "nope.mp4", speech, out, "not found"),
      "missing audio": (ckpt, clip, tmp / "nope.wav", out, "not found"),
      "corrupt face": (ckpt, corrupt, speech, out, "corrupt.mp4"),
      "corrupt audio": (ckpt, clip, corrupt, out, "corrupt.mp4"),
      "no audio stream": (ckpt, clip, mute_video, out, "no audio stream"),
      "no video stream": (ckpt, speech, speech, out, "no video stream"),
      "silent audio": (ckpt, clip, silent, out, "silent"),
      "0-length audio": (ckpt, clip, empty, out, "empty.wav"),
      "1-frame video": (ckpt, one_frame, speech, out, "single frame"),
      "image with no face": (ckpt, blank, speech, out, "no face"),
      "unwritable output": (ckpt, clip, speech, tmp / "no" / "such" / "dir" / "o.mp4",
                            "does not exist"),
      "wrong architecture": (syncnet, clip, speech, out,
                             "syncnet_color model, expected one of: wav2lip, lpips_attnwav2lip"),
  }


BAD_CASES = ["missing face", "missing audio", "corrupt face", "corrupt audio",
             "no audio stream", "no video stream", "silent audio", "0-length audio",
             "1-frame video", "image with no face", "unwritable output", "wrong architecture"]


def _onnx_pair(tmp: pathlib.Path, gen_ckpt: str) -> tuple[str, str]:
  """The tiny generator exported to ONNX, and a copy whose metadata says it
  is an expert (the onnxruntime backend's "wrong architecture")."""
  import onnx
  from lipsync_jax import export
  loaded = checkpoint.load_model(gen_ckpt)
  good = export.export_onnx(loaded.module, loaded.variables, loaded.arch, tmp / "g.onnx",
                            batch_size=BATCH, log=lambda m: None).path
  model = onnx.load(good)
  for p in model.metadata_props:
    if p.key == "lipsync_jax.arch":
      p.value = "syncnet_color"
  onnx.save(model, str(tmp / "expert.onnx"))
  return good, str(tmp / "expert.onnx")


@pytest.fixture(scope="module", params=["jax", "onnxruntime"])
def bad_runs(request, tmp_path_factory, shared_dir, gen_ckpt, syncnet_ckpt):
  """Runs every bad-input case through infer.py, concurrently, on each
  backend (the same catalogue, the same one-line errors)."""
  tmp = tmp_path_factory.mktemp("bad")
  if request.param == "onnxruntime":
    gen_ckpt, syncnet_ckpt = _onnx_pair(tmp, gen_ckpt)
  cases = _bad_inputs(tmp, shared_dir, gen_ckpt, syncnet_ckpt)
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  procs = {}
  for name, (ckpt, face, audio, out, _) in cases.items():
    outdir = tmp / name.replace(" ", "_")
    outdir.mkdir()
    out = outdir / "out.mp4" if out.name == "out.mp4" else out
    cmd = [sys.executable, str(REPO / "infer.py"), "--checkpoint", ckpt, "--face", face,
           "--audio", audio, "--outfile", out, "--cache-dir", tmp / "cache"]
    procs[name] = (subprocess.Popen(list(map(str, cmd)), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, cwd=REPO, env=env),
                   outdir, out)
  results = {}
  for name, (p, outdir, out) in procs.items():
    stdout, stderr = p.communicate(timeout=3600)  # catches hangs only
    results[name] = (p.returncode, stdout, stderr, outdir, out, cases[name][4])
  return results


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_one_line_error(bad_runs, case):
  rc, stdout, stderr, outdir, out, fragment = bad_runs[case]
  assert rc == 2, (rc, stderr)
  assert "Traceback" not in stderr + stdout
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), stderr
  assert fragment in lines[0], lines[0]
  assert not out.exists() and list(outdir.iterdir()) == []


def test_cli_batch_mode_with_a_bad_row(syncer, gen_ckpt, shared_dir, tmp_path, cache_dir, capsys):
  short = _write_wav(tmp_path / "short.wav", audio_lib.load_audio(shared_dir / SPEECH)[:6400])
  jobs = tmp_path / "jobs.csv"
  with open(jobs, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["face", "audio", "outfile"])
    w.writerow([shared_dir / CLIP, "short.wav", "good1.mp4"])  # relative to the CSV
    w.writerow([shared_dir / CLIP, "missing.wav", "bad.mp4"])
    w.writerow([shared_dir / CLIP, short, tmp_path / "good2.mp4"])
  report = tmp_path / "report.json"
  built = []
  before = syncer.compilations
  rc = _infer_module().main(
      ["--checkpoint", gen_ckpt, "--jobs", str(jobs), "--report", str(report),
       "--batch-size", str(BATCH), "--cache-dir", cache_dir], _reuse(syncer, built))
  out = capsys.readouterr()
  assert rc == 1, out.err
  # One model for all jobs: compiled at most once (not at all if this worker
  # already compiled it for an earlier test).
  assert len(built) == 1 and syncer.compilations == max(before, 1)
  assert "2/3 jobs succeeded" in out.out and "compiled once" in out.out
  rows = json.loads(report.read_text())
  assert [row["ok"] for row in rows] == [True, False, True]
  assert "missing.wav" in rows[1]["error"]
  assert rows[0]["report"]["frames"] == 10 and rows[2]["report"]["detection_cached"]
  assert (tmp_path / "good1.mp4").exists() and (tmp_path / "good2.mp4").exists()
  assert not (tmp_path / "bad.mp4").exists()
  assert len(_streams(tmp_path / "good2.mp4")["frames"]) == 10


def test_cli_face_size_other_than_the_checkpoints_is_one_line(syncer, gen_ckpt, shared_dir,
                                                              tmp_path, cache_dir, capsys):
  out = tmp_path / "out.mp4"
  args = ["--checkpoint", gen_ckpt, "--face", str(shared_dir / CLIP),
          "--audio", str(shared_dir / SPEECH), "--outfile", str(out),
          "--batch-size", str(BATCH), "--cache-dir", cache_dir]
  rc = _infer_module().main(args + ["--face-size", "192"], _reuse(syncer, []))
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and len(err) == 1, err
  assert "generates 96 px faces, not the 192 px of --face-size" in err[0]
  assert not out.exists()
  assert _infer_module().main(args + ["--face-size", "0"]) == 2
  assert "--face-size must be >= 1" in capsys.readouterr().err


def test_fill_gaps_bridges_short_misses_only():
  found = np.array([0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0], bool)
  boxes = np.zeros((14, 4))
  boxes[1], boxes[4], boxes[12] = [0, 0, 10, 10], [30, 0, 40, 10], [0, 0, 10, 10]
  out, usable = face_detection.fill_gaps(boxes, found, max_gap=5)
  np.testing.assert_array_equal(usable, [0, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0])
  np.testing.assert_allclose(out[2], [10, 0, 20, 10])
  np.testing.assert_allclose(out[3], [20, 0, 30, 10])
