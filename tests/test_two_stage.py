"""The two-stage model: audio -> lip landmarks -> renderer.

Model pieces on numbers, both training phases through `train.py`'s trainer
(with exact resume), packing, inference on a real clip and a photo, the
one-line errors, and the shipped model's closed mouth in silence.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax import models, two_stage
from lipsync_jax.inference import two_stage as ts
from lipsync_jax.data import format as fmt
from lipsync_jax.data import lip_store
from lipsync_jax.data import testing as data_testing
from lipsync_jax.models import audio_to_lips, lip_renderer
from lipsync_jax.train import config_lib, train_lib
from lipsync_jax.train import summary as summary_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
SPEECH = "data/real/audio/librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0880.wav"


def _mouth(open_: float, centre=(0.5, 0.72), width=0.25) -> np.ndarray:
  """(40, 2) lips in LIP_POINTS order: outer and inner contours of an
  ellipse-like mouth opened by `open_` (crop units)."""
  cx, cy = centre
  def arc(n, sign, h, w):
    x = np.linspace(cx - w / 2, cx + w / 2, n)
    y = cy + sign * h * np.sqrt(np.clip(1 - ((x - cx) / (w / 2)) ** 2, 0, 1))
    return np.stack([x, y], -1)
  lower_o = arc(11, +1, 0.04 + open_, width)
  upper_o = arc(11, -1, 0.04, width)[1:-1]
  lower_i = arc(11, +1, 0.005 + open_, 0.8 * width)
  upper_i = arc(11, -1, 0.005, 0.8 * width)[1:-1]
  return np.concatenate([lower_o, upper_o, lower_i, upper_i]).astype(np.float32)


def test_lip_map_draws_the_contours_where_the_points_are():
  lips = _mouth(0.05)[None]
  m = np.asarray(lip_renderer.lip_map(jnp.asarray(lips), 96))
  assert m.shape == (1, 96, 96, 2) and m.max() <= 1.0 + 1e-6
  # Every lip point lies on its contour's line; far from the mouth is dark.
  px = np.clip(np.round(lips[0] * 96 - 0.5).astype(int), 0, 95)
  assert m[0, px[:20, 1], px[:20, 0], 0].min() > 0.6
  assert m[0, px[20:, 1], px[20:, 0], 1].min() > 0.6
  assert m[0, :30].max() < 1e-3
  # Differentiable in the points, and a wider mouth draws a different map.
  g = jax.grad(lambda p: lip_renderer.lip_map(p, 96)[..., 0].sum())(jnp.asarray(lips))
  assert np.isfinite(g).all() and np.abs(g).max() > 0
  wide = np.asarray(lip_renderer.lip_map(jnp.asarray(_mouth(0.05, width=0.35)[None]), 96))
  assert np.abs(wide - m).max() > 0.5


def test_audio_to_lips_starts_at_the_neutral_mouth_and_moves_with_training():
  model = models.create("audio_to_lips", channels=(8, 8, 8, 8), width=16, shape_width=8)
  mel = jax.random.normal(jax.random.PRNGKey(0), (3, 80, 32, 1))
  neutral = jnp.asarray(np.stack([_mouth(0.0)] * 3))
  v = jax.jit(model.init)(jax.random.PRNGKey(1), mel, neutral)
  np.testing.assert_array_equal(np.asarray(jax.jit(model.apply)(v, mel, neutral)),
                                np.asarray(neutral))
  with pytest.raises(ValueError, match="mel must be"):
    model.apply(v, mel[:, :, :16], neutral)
  # One gradient step on a target away from neutral moves the output.
  target = jnp.asarray(np.stack([_mouth(0.05)] * 3))
  loss = jax.jit(lambda p: jnp.mean((model.apply({"params": p}, mel, neutral) - target) ** 2))
  p2 = jax.tree_util.tree_map(lambda p, g: p - 10.0 * g, v["params"],
                              jax.jit(jax.grad(loss))(v["params"]))
  assert float(loss(p2)) < float(loss(v["params"]))


def test_mel_context_pads_with_silence_and_matches_slices():
  mel = np.arange(80 * 50, dtype=np.float32).reshape(80, 50)
  ctx = audio_to_lips.mel_context(mel, np.array([0, 20, 40]), context=32)
  assert ctx.shape == (3, 80, 32, 1)
  np.testing.assert_array_equal(ctx[1, :, :, 0], mel[:, 4:36])
  np.testing.assert_array_equal(ctx[0, :, :16, 0], -4.0)       # before the audio
  np.testing.assert_array_equal(ctx[0, :, 16:, 0], mel[:, :16])
  np.testing.assert_array_equal(ctx[2, :, 26:, 0], -4.0)       # after its end
  np.testing.assert_array_equal(ctx[2, :, :26, 0], mel[:, 24:50])


def test_rest_shape_is_the_closed_mouth_and_the_anchor_follows_the_head():
  rng = np.random.default_rng(0)
  opens = rng.uniform(0.0, 0.06, 100)
  opens[::10] = 0.0
  head = np.linspace(0.45, 0.55, 100)         # the head drifts to the right
  lips = np.stack([_mouth(o, centre=(h, 0.72)) for o, h in zip(opens, head)])
  rest = audio_to_lips.rest_shape(lips)
  closed = _mouth(0.0) - _mouth(0.0).mean(0)
  assert np.abs(rest - closed).max() < 0.01
  anchor = audio_to_lips.anchor_track(lips)
  assert np.abs(anchor[12:-12, 0] - head[12:-12]).max() < 0.005
  # The anchor ignores the jaw: it moves far less from frame to frame than
  # the lips' centroid does.
  jaw = np.abs(np.diff(lips.mean(1)[:, 1])).mean()
  assert np.abs(np.diff(anchor[:, 1])).mean() < 0.2 * jaw
  with pytest.raises(ValueError, match="no valid lip frame"):
    audio_to_lips.rest_shape(lips, np.zeros(100, bool))
  # A clip shorter than the +-12-frame window keeps its length.
  assert audio_to_lips.neutral_lips(lips[:10]).shape == (10, 40, 2)
  np.testing.assert_allclose(audio_to_lips.anchor_track(lips[:10]),
                             np.broadcast_to(lips[:10].mean(1).mean(0), (10, 2)), atol=1e-6)


@pytest.fixture(scope="module")
def lip_dataset(tmp_path_factory):
  """A synthetic packed dataset with lip tracks whose opening follows the
  drawn mouth (the lip store's format, written directly)."""
  root = tmp_path_factory.mktemp("two_stage")
  data = data_testing.write_synthetic_dataset(root / "data", num_clips=3, num_frames=30)
  rng = np.random.default_rng(0)
  for c in fmt.load_index(data).clips:
    lips = np.stack([_mouth(o) for o in rng.uniform(0, 0.05, c.num_frames)])
    lip_store.save_clip_lips(data, c.clip_id, lips, np.asarray(c.found))
  return data


def test_loaders_give_lip_windows_and_renderer_targets(lip_dataset):
  from lipsync_jax import data  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import sources  # pylint: disable=import-outside-toplevel
  b = next(iter(data.make_loader(lip_dataset, "train", "lips", 4, 0, lip_frames=9,
                                 with_meta=True, single_frame_rest=0.0)))
  assert b["mel"].shape == (4, 9, 80, 32, 1) and b["sync_audio"].shape == (4, 5, 80, 16, 1)
  assert b["lips"].shape == b["neutral"].shape == (4, 9, 40, 2)
  for k in range(4):
    # The sync window of frame f+j is the Wav2Lip window [int(80 (f+j) / 25),
    # +16), the second half of that frame's mel context (when not at an end).
    if sources.mel_start(int(b["target_start"][k]), 25.0) >= 16:
      np.testing.assert_array_equal(b["sync_audio"][k, 0], b["mel"][k, 0, :, 16:])
  # The neutral lips are the clip's closed rest shape: far less open than
  # the talking mouth on average.
  from lipsync_jax.vision import lip_landmarks  # pylint: disable=import-outside-toplevel
  assert (lip_landmarks.inner_gap(b["neutral"]).mean()
          < 0.5 * lip_landmarks.inner_gap(b["lips"]).mean())
  g = next(iter(data.make_loader(lip_dataset, "train", "generator", 4, 0, with_lips=True)))
  assert g["lips"].shape == (4, 5, 40, 2) and g["target"].shape == (4, 5, 96, 96, 3)


def test_rest_reference_is_the_nearest_closed_frame_outside_the_target(lip_dataset):
  from lipsync_jax import data  # pylint: disable=import-outside-toplevel
  from lipsync_jax.models import audio_to_lips  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import lip_landmarks  # pylint: disable=import-outside-toplevel
  index = fmt.load_index(lip_dataset)
  clips = {i: c for i, c in enumerate(index.split("train"))}
  reader = fmt.ClipReader(index.data_dir, index.codec, index.img_size)
  matched = 0
  for seed in range(4):
    b = next(iter(data.make_loader(lip_dataset, "train", "generator", 8, seed, with_lips=True,
                                   rest_reference=1.0, with_meta=True)))
    for k in range(8):
      clip = clips[int(b["clip_index"][k])]
      lips, ok = lip_store.load_clip_lips(lip_dataset, clip)
      f, r = int(b["target_start"][k]), int(b["reference_start"][k])
      # Inference's closed frames (the 20% most closed), as the renderer's
      # references there are picked from them.
      closed = audio_to_lips.closed_frames(lips, ok)
      outside = [c for c in closed if not f <= c < f + 5]
      assert not f <= r < f + 5
      assert r in outside
      assert abs(r - (f + 2)) == min(abs(c - (f + 2)) for c in outside)
      # No closed frame in the window: the reference inference gives the
      # window's middle frame.
      if len(outside) == len(closed):
        assert r == int(audio_to_lips.rest_frames(lips, ok)[f + 2])
        matched += 1
      gap = lip_landmarks.inner_gap(lips)
      assert gap[r] <= np.quantile(gap[ok], 0.25)
      ref = reader.frames(clip, r, 1)[0]
      assert all(np.array_equal(b["reference"][k, j], ref) for j in range(5))
  assert matched
  with pytest.raises(ValueError, match="needs with_lips"):
    next(iter(data.make_loader(lip_dataset, "train", "generator", 4, 0, rest_reference=0.5)))


def test_lip_track_of_another_length_is_a_one_line_error(lip_dataset, tmp_path):
  data = tmp_path / "data"
  shutil.copytree(lip_dataset, data)
  clip = fmt.load_index(data).clips[0]
  lip_store.save_clip_lips(data, clip.clip_id, np.zeros((5, 40, 2)), np.ones(5, bool))
  with pytest.raises(fmt.DatasetFormatError, match="has 5 frames, the clip") as e:
    lip_store.load_clip_lips(data, clip)
  assert "\n" not in str(e.value)
  (data / "lips").rename(tmp_path / "gone")
  with pytest.raises(fmt.DatasetFormatError, match="data_prep/lip_tracks.py"):
    lip_store.load_clip_lips(data, clip)


def _train(variant: str, data, workdir, steps: int = 4):
  c = config_lib.load(REPO / "configs" / "two_stage.py", variant)
  c.data_dir = str(data)
  c.num_steps = steps
  c.checkpoint_every = 2
  c.eval_every = 2
  c.eval_batches = 1
  c.batch_size = 8
  # Two of the 8 simulated devices (tests/conftest.py): the batch and state
  # are still sharded, as over any mesh, at half the time of all 8 (152 s ->
  # 85 s for the renderer, measured on 2 cores); the 1-device-vs-mesh
  # equivalence is test_train_sharding's.
  c.mesh_devices = 2
  c.progress_bar = False
  return train_lib.train_and_evaluate(c, str(workdir))


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["renderer_tiny", "lips_tiny"])
def test_both_stages_train_and_resume_exactly(variant, lip_dataset, tmp_path,
                                              killed_after_checkpoint, xla_compilation_cache):
  straight = tmp_path / "straight"
  s = _train(variant, lip_dataset, straight)
  assert s["status"] == "completed" and s["step"] == 4
  ev = s["final_eval"]
  if variant == "renderer_tiny":
    assert {"l1", "lpips", "gan_g", "mouth"} <= set(ev) and "sync" not in ev   # no sync loss
  else:
    assert {"lips", "motion", "smooth", "sync", "sync_true"} <= set(ev)
  resumed = killed_after_checkpoint(straight, tmp_path / "resumed", 2)
  s2 = _train(variant, lip_dataset, resumed)
  assert s2["resumed_from"] == 2
  rows = lambda w: [(r["step"], r["loss"]) for r in
                    summary_lib.read_jsonl(str(w / "metrics.jsonl"))]
  assert rows(resumed) == rows(straight)


def test_config_errors_are_one_line(lip_dataset, tmp_path):
  c = config_lib.load(REPO / "configs" / "two_stage.py", "renderer_tiny")
  c.data_dir = str(lip_dataset)
  c.data.options.with_lips = False
  with pytest.raises(train_lib.TrainConfigError, match="lip_renderer trains on lip tracks: .*with_lips=True"):
    train_lib.train_and_evaluate(c, str(tmp_path / "a"))
  c = config_lib.load(REPO / "configs" / "wav2lip.py")
  c.data_dir = str(lip_dataset)
  c.loss.mouth = 1.0        # the mouth crop needs the targets' lips
  with pytest.raises(train_lib.TrainConfigError, match="loss.mouth.*with_lips=True"):
    train_lib.train_and_evaluate(c, str(tmp_path / "m"))
  c = config_lib.load(REPO / "configs" / "two_stage.py", "lips_tiny")
  c.data_dir = str(lip_dataset)
  c.data.options.lip_context = 16
  with pytest.raises(train_lib.TrainConfigError, match="lip_context"):
    train_lib.train_and_evaluate(c, str(tmp_path / "b"))


def _tiny_pair(tmp_path) -> pathlib.Path:
  """A packed two-stage model of random tiny stages (no training)."""
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  cfgs = {"lips": ("audio_to_lips", dict(channels=(8, 8, 8, 8), width=16, shape_width=8)),
          "renderer": ("lip_renderer", dict(width_multiplier=0.0625, face_size=96))}
  ins = {"lips": (jnp.zeros((1, 80, 32, 1)), jnp.full((1, 40, 2), 0.5)),
         "renderer": (jnp.full((1, 40, 2), 0.5), jnp.zeros((1, 96, 96, 6)))}
  for name, (arch, cfg) in cfgs.items():
    v = models.init_variables(models.create(arch, **cfg), jax.random.PRNGKey(0), *ins[name])
    checkpoint.save_model(tmp_path / name, arch, cfg, v)
  return two_stage.pack(tmp_path / "lips", tmp_path / "renderer", tmp_path / "pair")


@pytest.mark.slow
def test_pack_and_run_on_a_real_clip_and_a_photo(shared_dir, tmp_path):
  from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
  from lipsync_jax.io import video as video_lib  # pylint: disable=import-outside-toplevel
  pair = _tiny_pair(tmp_path)
  assert json.loads((pair / two_stage.MANIFEST).read_text())["format"] == 1
  syncer = inference.load_syncer(pair, batch_size=16, cache_dir=str(tmp_path))
  assert type(syncer).__name__ == "TwoStageSyncer" and syncer.face_size == 96
  face = shared_dir / "data/real/av/grid/bbaf2n.mpg"
  report = syncer.run(face, shared_dir / SPEECH, tmp_path / "out.mp4")
  assert report.frames > 25 and report.frames_without_face == 0
  assert "adapt" not in report.timings, report.timings   # not asked to adapt: no such stage
  assert video_lib.probe(str(tmp_path / "out.mp4")).num_frames == report.frames
  # The default pastes around the mouth only: fewer of the source's pixels
  # change than with the whole lower face pasted (the untrained renderer
  # draws noise wherever it is pasted).
  lower = inference.load_syncer(pair, batch_size=16, cache_dir=str(tmp_path), mouth_paste=False)
  lower.run(face, shared_dir / SPEECH, tmp_path / "lower.mp4")
  src = np.stack(list(video_lib.iter_frames(str(face)))[:25]).astype(int)
  changed = {name: int((np.abs(np.stack(list(video_lib.iter_frames(str(tmp_path / name)))[:25])
                               .astype(int) - src).max(-1) > 20).sum())
             for name in ("out.mp4", "lower.mp4")}
  assert 0 < changed["out.mp4"] < 0.75 * changed["lower.mp4"], changed
  # A photo: the first frame of the clip.
  frame = next(video_lib.iter_frames(str(face)))
  import cv2  # pylint: disable=import-outside-toplevel
  cv2.imwrite(str(tmp_path / "photo.png"), frame)
  report = syncer.run(tmp_path / "photo.png", shared_dir / SPEECH, tmp_path / "photo.mp4")
  assert report.frames > 25
  assert syncer.compilations == 1      # one compiled program for both jobs


@pytest.mark.slow
def test_a_face_without_lips_is_a_one_line_error_and_no_output(tmp_path):
  import cv2  # pylint: disable=import-outside-toplevel
  from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
  pair = _tiny_pair(tmp_path)
  cv2.imwrite(str(tmp_path / "wall.png"), np.full((200, 200, 3), 120, np.uint8))
  t = np.arange(audio_lib.SAMPLE_RATE * 2) / audio_lib.SAMPLE_RATE
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  sf.write(tmp_path / "tone.wav", 0.3 * np.sin(2 * np.pi * 220 * t), audio_lib.SAMPLE_RATE)
  out = tmp_path / "out.mp4"
  r = subprocess.run([sys.executable, str(REPO / "infer.py"), "--checkpoint", str(pair),
                      "--face", str(tmp_path / "wall.png"), "--audio", str(tmp_path / "tone.wav"),
                      "--outfile", str(out), "--box", "20", "180", "20", "180",
                      "--no-cache"], capture_output=True, text=True, cwd=REPO)
  assert r.returncode == 2, r.stderr
  lines = [l for l in r.stderr.strip().splitlines() if l.startswith("error:")]
  assert len(lines) == 1 and "FaceMesh finds no lips" in lines[0], r.stderr
  assert not out.exists() and not list(tmp_path.glob("out*"))


def test_the_builtin_model_ships_and_is_small():
  path = two_stage.builtin_path()
  if not two_stage.is_two_stage(path):
    pytest.fail(f"the built-in two-stage model is missing: {path}")
  size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
  assert size < 25e6, f"{size / 1e6:.1f} MB"
  model = two_stage.load("builtin")
  assert model.face_size == 96 and model.context == 32


def test_builtin_model_draws_a_closed_still_mouth_in_silence(shared_dir):
  """Speech, then 2 s of silence: during the silence the predicted inner-lip
  gap stays near the face's closed rest shape and barely moves, while during
  speech the mouth opens and moves."""
  from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import lip_landmarks  # pylint: disable=import-outside-toplevel
  model = two_stage.load("builtin")
  wav = audio_lib.load_audio(shared_dir / SPEECH, sr=audio_lib.SAMPLE_RATE)
  wav = np.concatenate([wav, np.zeros(2 * audio_lib.SAMPLE_RATE, np.float32)])
  mel = audio_lib.melspectrogram(wav)
  n = audio_lib.num_frames_for_audio(wav.size, 25.0)
  starts = (np.arange(n) * 80 / 25.0).astype(int)
  rest = _mouth(0.0)
  neutral = np.broadcast_to(rest, (n, 40, 2)).astype(np.float32)
  pred = np.asarray(model.lips_module.apply(
      model.lips_variables, audio_to_lips.mel_context(mel, starts, model.context), neutral))
  pred = neutral + model.lip_gain * (pred - neutral)   # as inference draws it
  gap = lip_landmarks.inner_gap(pred) - lip_landmarks.inner_gap(rest)
  silent = slice(n - 40, n - 5)           # well inside the silence (past the context)
  speech = slice(5, n - 60)
  assert np.abs(gap[silent]).max() < 0.01, gap[silent]
  assert np.abs(np.diff(pred[silent], axis=0)).max() < 0.002
  assert gap[speech].max() > 0.02 and np.abs(np.diff(gap[speech])).mean() > 3 * np.abs(
      np.diff(gap[silent])).mean()


def test_lip_gain_scales_the_motion_and_comes_from_the_manifest_or_the_option(tmp_path):
  from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
  pair = _tiny_pair(tmp_path)
  rng = np.random.default_rng(0)
  ctx = rng.normal(size=(5, 80, 32, 1)).astype(np.float32)
  neutral = np.broadcast_to(_mouth(0.0), (5, 40, 2)).astype(np.float32)
  syncer = inference.load_syncer(pair, lip_gain=1.0)
  # Stage 1's output head starts at zero: move it, so that the lips move.
  moved = jax.tree_util.tree_map(lambda x: x + 0.05 * jnp.asarray(
      rng.normal(size=x.shape), x.dtype), syncer.lips_variables)
  syncer.lips_variables = moved
  one = syncer.predict_lips(ctx, neutral, 8)
  assert np.abs(one - neutral).max() > 1e-3
  two_stage.set_lip_gain(pair, {"lip_gain": 2.5, "ratios": {}})
  syncer = inference.load_syncer(pair)
  syncer.lips_variables = moved
  assert syncer.lip_gain == 2.5
  np.testing.assert_allclose(syncer.predict_lips(ctx, neutral, 8) - neutral,
                             2.5 * (one - neutral), rtol=1e-4, atol=1e-6)
  assert syncer.with_options(lip_gain=0.5).lip_gain == 0.5
  # One gain per lip-smoothing mode: a model measured unsmoothed only uses
  # that gain for smoothed lips too, until a smoothed calibration is written.
  assert syncer.with_options(lip_smoothing=True).lip_gain == 2.5
  two_stage.set_lip_gain(pair, {"lip_gain": 3.5, "ratios": {}, "lip_smoothing": True})
  smoothed = inference.load_syncer(pair, lip_smoothing=True)
  assert smoothed.lip_gain == 3.5 and smoothed.with_options(lip_gain=0.5).lip_gain == 0.5
  assert inference.load_syncer(pair).lip_gain == 2.5
  manifest = json.loads((pair / two_stage.MANIFEST).read_text())
  assert manifest["lip_gain_smoothed_calibration"]["lip_gain"] == 3.5
  assert manifest["lip_gain_calibration"]["lip_gain"] == 2.5
  for key in ("lip_gain", "lip_gain_smoothed"):
    (pair / two_stage.MANIFEST).write_text(json.dumps(dict(manifest, **{key: "big"})))
    with pytest.raises(two_stage.TwoStageError, match=f"{key} must be a number"):
      two_stage.load(pair)
  with pytest.raises(inference.InferenceError, match="lip gain must be in"):
    inference.InferenceOptions(lip_gain=0.0).validate()


def test_the_shipped_model_has_a_gain_for_each_lip_smoothing_mode():
  """Smoothing takes amplitude off stage 1's lips, so the gain measured for
  smoothed lips is the larger; each calibration records its mode."""
  model = two_stage.load("builtin")
  assert model.lip_gain_for(False) == model.lip_gain
  assert model.lip_gain_for(True) > model.lip_gain_for(False)
  assert model.manifest["lip_gain_calibration"]["lip_smoothing"] is False
  assert model.manifest["lip_gain_smoothed_calibration"]["lip_smoothing"] is True


def test_crossing_gain_interpolates_where_the_ratio_reaches_one():
  assert two_stage.crossing_gain({1.0: 0.5, 2.0: 0.8, 3.0: 1.2}) == pytest.approx(2.5)
  assert two_stage.crossing_gain({1.0: 0.3, 4.0: 0.7}) == 4.0      # never: the largest
  assert two_stage.crossing_gain({1.0: 1.1, 2.0: 1.5}) == 1.0      # always: the smallest


def test_rest_reference_hides_the_inputs_own_mouth(tmp_path):
  """Two frames alike but for their mouths: with the rest reference the
  renderer draws the same face for both (their own mouths are masked and the
  reference is the rest frame); with each frame as its own reference, the
  frames' mouths show through."""
  from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
  pair = _tiny_pair(tmp_path)
  rng = np.random.default_rng(1)
  a = rng.integers(0, 255, (96, 96, 3), np.uint8)
  b = a.copy()
  b[48:] = rng.integers(0, 255, (48, 96, 3), np.uint8)
  lips = np.stack([_mouth(0.0), _mouth(0.03)])
  drawn = np.stack([_mouth(0.01)] * 2)
  for reference, same in (("rest", True), ("frame", False)):
    syncer = inference.load_syncer(pair, batch_size=2, reference=reference)
    key, slots = syncer.references([a, b], lips, np.ones(2, bool))
    out = syncer.generate_faces(ts.renderer_rows(drawn, key, slots, lips), [a, b])
    assert np.array_equal(out[0], out[1]) == same, reference


def test_the_paste_covers_the_lips_drawn_and_the_frames_own(tmp_path):
  """Each frame's row carries the lips drawn and the input frame's own; the
  mouth paste covers both (`blending.mouth_mask`), and is off when asked."""
  from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
  pair = _tiny_pair(tmp_path)
  drawn = np.stack([_mouth(0.04), _mouth(0.05)])
  own = np.stack([_mouth(0.0), _mouth(0.08)])
  rows = ts.renderer_rows(drawn, 3, [0, 1], own)
  assert rows.shape == (2, ts.ROW)
  mouths = inference.load_syncer(pair, batch_size=2).paste_mouths(rows)
  np.testing.assert_array_equal(mouths, np.concatenate([drawn, own], 1))
  assert inference.load_syncer(pair, batch_size=2, mouth_paste=False).paste_mouths(rows) is None
  assert inference.load_syncer(pair, batch_size=2, hard_paste=True).paste_mouths(rows) is None
  # Frames where FaceMesh found no lips are covered at their neutral mouth.
  valid = np.array([True, False])
  np.testing.assert_array_equal(ts.own_lips(own, valid, drawn), np.stack([own[0], drawn[1]]))


def test_rest_frames_are_the_nearest_closed_mouths():
  gaps = [0.0, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.01]
  lips = np.stack([_mouth(g) for g in gaps])
  # The 2 most closed of 10 (closed_fraction 0.2): frames 0 and 9.
  assert list(audio_to_lips.rest_frames(lips)) == [0] * 5 + [9] * 5
  valid = np.ones(10, bool)
  valid[0] = False   # frame 0 has no lips: the closed pair is 1 (the first 0.05) and 9
  assert list(audio_to_lips.rest_frames(lips, valid)) == [1] * 6 + [9] * 4   # a tie: the earlier


def test_finetune_on_a_folder_without_a_usable_clip_is_a_one_line_error(tmp_path):
  from lipsync_jax.io import video as video_lib  # pylint: disable=import-outside-toplevel
  videos = tmp_path / "me"
  videos.mkdir()
  r = subprocess.run([sys.executable, "-m", "lipsync_jax.two_stage", "finetune",
                      "--videos", str(videos), "--workdir", str(tmp_path / "run")],
                     capture_output=True, text=True, cwd=REPO)
  assert r.returncode == 2 and r.stderr.strip().startswith("error: no video files"), r.stderr
  # A clip of a wall, with sound: no face, so nothing to fine-tune on.
  wav = (0.2 * np.sin(np.arange(16000 * 2) * 0.05)).astype(np.float32)
  with video_lib.VideoWriter(str(videos / "wall.mp4"), 25, 128, 128,
                             audio=(wav, 16000)) as w:
    for _ in range(50):
      w.write(np.full((128, 128, 3), 90, np.uint8))
  r = subprocess.run([sys.executable, "-m", "lipsync_jax.two_stage", "finetune",
                      "--videos", str(videos), "--workdir", str(tmp_path / "run"),
                      "--no-progress"], capture_output=True, text=True, cwd=REPO)
  errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
  assert r.returncode == 2 and len(errors) == 1, r.stderr
  assert "no usable clip" in errors[0] and "wall" in errors[0], errors
  assert not (tmp_path / "run" / "model").exists()


@pytest.mark.slow
def test_readme_example_runs_the_builtin_model_on_a_fresh_face(shared_dir, tmp_path):
  """`infer.py --face F --audio A --outfile O` with no --checkpoint: the
  shipped two-stage model redraws the mouth of a face it never saw, and the
  rest of the frame is the source's."""
  from lipsync_jax.io import video as video_lib  # pylint: disable=import-outside-toplevel
  face = shared_dir / "data/real/av/voxceleb2/00002.mp4"
  out = tmp_path / "out.mp4"
  r = subprocess.run([sys.executable, str(REPO / "infer.py"), "--face", str(face),
                      "--audio", str(shared_dir / SPEECH), "--outfile", str(out),
                      "--cache-dir", str(tmp_path / "cache")],
                     capture_output=True, text=True, cwd=REPO)
  assert r.returncode == 0, r.stderr
  info = video_lib.probe(str(out))
  assert info.has_audio and info.num_frames >= 25
  src = list(video_lib.iter_frames(str(face)))
  gen = list(video_lib.iter_frames(str(out)))
  h, w = gen[0].shape[:2]
  diff = np.abs(np.stack(gen[:20]).astype(float) - np.stack(src[:20]).astype(float)).mean(-1)
  # Redrawn around the mouth (the lower middle), untouched in the top rows.
  assert diff[:, : h // 5].mean() < 2.0
  assert diff[:, h // 2:, w // 3: 2 * w // 3].mean() > 2.0


@pytest.mark.slow  # data_prep + FaceMesh on 4 real GRID clips, the renderer at 3 gains
def test_calibrate_measures_rendered_openings_that_grow_with_the_gain(shared_dir, tmp_path):
  """`calibrate` on real clips with the shipped model: the rendered mouths'
  opening amplitude, relative to each clip's own, grows with the gain;
  stage 1 alone moves less than real lips; the gain is where the ratios
  cross 1. `calibrate --write` stores it, and bad input is one line."""
  from lipsync_jax.data import preprocess_lib  # pylint: disable=import-outside-toplevel
  videos = tmp_path / "video"
  videos.mkdir()
  names = ["bbaf2n", "bbaf4p", "bbaf5a", "bbal6n"]
  for n in names:
    (videos / f"{n}.mp4").symlink_to(shared_dir / "data" / "grid_s1" / "video" / f"{n}.mp4")
  data = tmp_path / "data"
  report = preprocess_lib.run(videos, data, preprocess_lib.PrepConfig(), progress=False)
  assert report["num_ok"] == 4
  lip_store.track_dataset(data)
  ids = [c.clip_id for c in fmt.load_index(data).clips]
  fmt.write_splits(data, {"train": ids[:1], "val": ids[1:3], "test": ids[3:]})
  result = two_stage.calibrate("builtin", data, max_clips=6, max_frames=37,
                               gains=(1.0, 2.0, 4.0), progress=False)
  ratios = {float(g): r for g, r in result["ratios"].items()}
  print(f"\ncalibration on 3 GRID clips: {result}")
  assert result["clips"] == 6 and result["reference"] == "rest"
  assert result["lip_smoothing"] is False   # infer.py's default
  assert ratios[1.0] < ratios[2.0] < ratios[4.0]
  assert 0.1 < result["stage1_ratio"] < 1.0
  assert result["lip_gain"] == pytest.approx(two_stage.crossing_gain(ratios), abs=0.01)
  # --write on a copy of the shipped model; bad input is one line.
  model = tmp_path / "model"
  shutil.copytree(two_stage.builtin_path(), model)
  two_stage.set_lip_gain(model, result)
  assert two_stage.load(model).lip_gain == result["lip_gain"]
  # The smoothed lips' gain: measured with the lips smoothed, written beside.
  smoothed = two_stage.calibrate("builtin", data, max_clips=4, max_frames=37,
                                 gains=(1.0, 4.0), progress=False, lip_smoothing=True)
  assert smoothed["lip_smoothing"] is True
  two_stage.set_lip_gain(model, smoothed)
  loaded = two_stage.load(model)
  assert loaded.lip_gain_for(True) == smoothed["lip_gain"]
  assert loaded.lip_gain == result["lip_gain"]
  assert two_stage.main(["calibrate", "--model", str(model), "--data", str(tmp_path)]) == 2
  assert two_stage.main(["calibrate", "--model", str(model), "--data", str(data),
                         "--clips", "2"]) == 2


# -----------------------------------------------------------------------------
# Adapting the renderer to a face input (`InferenceOptions.adapt_steps`).
# -----------------------------------------------------------------------------

def test_adaptation_references_keep_away_from_their_targets():
  from lipsync_jax.inference import face_adaptation as fa  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  candidates = np.arange(40)
  closed = np.array([2, 3, 20, 21, 38])
  targets = rng.integers(0, 40, 200)
  # Always the closed frame nearest in time, never the target or a neighbour.
  refs = fa.sample_references(targets, closed, candidates, rng, 1.0)
  assert np.all(np.abs(refs - targets) >= fa.MIN_REFERENCE_OFFSET)
  assert set(refs.tolist()) <= set(closed.tolist())
  nearest = [min((c for c in closed if abs(c - t) >= fa.MIN_REFERENCE_OFFSET),
                 key=lambda c: (abs(c - t), c)) for t in targets]
  np.testing.assert_array_equal(refs, nearest)
  # Never closed: any frame with lips, still away from the target.
  refs = fa.sample_references(targets, closed, candidates, rng, 0.0)
  assert np.all(np.abs(refs - targets) >= fa.MIN_REFERENCE_OFFSET)
  assert len(set(refs.tolist()) - set(closed.tolist())) > 10
  # Only frames that may be references (with lips); a short input: the farthest.
  refs = fa.sample_references(np.array([0, 2]), closed, np.array([0, 1, 2]), rng, 0.0)
  assert refs.tolist() == [2, 0]


def test_adapt_steps_out_of_range_is_a_one_line_error(tmp_path, capsys):
  from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
  repo = str(pathlib.Path(__file__).resolve().parents[1])
  sys.path.insert(0, repo)
  try:
    import infer  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.remove(repo)
  out = tmp_path / "out.mp4"
  rc = infer.main(["--face", __file__, "--audio", __file__, "--outfile", str(out),
                   "--adapt-steps", "-1"])
  err = capsys.readouterr().err.strip().splitlines()
  assert rc == 2 and err == ["error: --adapt-steps must be >= 0, got -1"], err
  assert not out.exists()
  # The ceiling is the options' check, which every entry point runs.
  with pytest.raises(inference.InferenceError, match=r"adapt steps must be in \[0, 5000\]"):
    inference.InferenceOptions(adapt_steps=6000).validate()
  inference.InferenceOptions(adapt_steps=100).validate()
  # A pixel generator has no renderer to adapt: refused, not ignored.
  with pytest.raises(inference.InferenceError, match="needs a two-stage model"):
    inference.LipSyncer(None, None, "wav2lip", adapt_steps=100)


@pytest.mark.slow  # LPIPS + a tiny renderer's gradient, compiled once
def test_renderer_adapts_to_each_face_input_and_keeps_the_model(shared_dir, tmp_path):
  """`adapt_steps`: the renderer is fine-tuned on the face's own frames and
  lips (its reconstruction loss falls), kept per face input under the
  face's key; the model's own weights and BatchNorm statistics are not
  touched, and a photo is a one-line error."""
  from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
  pair = _tiny_pair(tmp_path)
  rng = np.random.default_rng(0)
  n = 16
  opening = 0.06 * np.abs(np.sin(np.arange(n) / 2.0))
  lips = np.stack([_mouth(o) for o in opening])
  valid = np.ones(n, bool)
  # A face whose mouth is drawn where its lips are: red lips, dark inside.
  yy, xx = np.mgrid[0:96, 0:96] / 96.0
  crops = []
  for o in opening:
    img = np.full((96, 96, 3), (150, 170, 210), np.float32) + rng.normal(0, 3, (96, 96, 3))
    img[(np.abs(xx - 0.5) < 0.13) & (np.abs(yy - 0.72 - o / 2) < 0.05 + o / 2)] = (60, 60, 170)
    img[(np.abs(xx - 0.5) < 0.1) & (np.abs(yy - 0.72 - o / 2) < o / 2)] = (20, 20, 40)
    crops.append(np.clip(img, 0, 255).astype(np.uint8))
  base = inference.load_syncer(pair, batch_size=4)
  before = jax.tree_util.tree_map(np.asarray, base.variables["renderer"])

  syncer = base.with_options(adapt_steps=20)
  key_a, slots = syncer.references(crops, lips, valid)
  history = syncer.last_adaptation_losses
  assert len(history) == 20 and np.mean(history[-5:]) < 0.9 * np.mean(history[:5]), history
  adapted = syncer._references[key_a].variables["renderer"]  # pylint: disable=protected-access
  changed = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != b)),
                                   adapted["params"], before["params"])
  assert any(jax.tree_util.tree_leaves(changed))
  jax.tree_util.tree_map(np.testing.assert_array_equal, adapted["batch_stats"],
                         before["batch_stats"])
  # The same face input again (a live page's next session, the app's next
  # request), from another copy of the model: the weights made then, no new
  # adaptation; the adapter is the one already compiled.
  again = base.with_options(adapt_steps=20)
  calls = []
  adapter = again._adaptation.adapter  # pylint: disable=protected-access
  again._adaptation.adapter = lambda *a, **k: calls.append(1) or adapter(*a, **k)  # pylint: disable=protected-access
  key_again, _ = again.references(crops, lips, valid)
  assert not calls and key_again != key_a
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         again._references[key_again].variables["renderer"], adapted)  # pylint: disable=protected-access
  again._adaptation.adapter = adapter  # pylint: disable=protected-access
  # The weights are kept by what adaptation learns from: other lips, other
  # validity, other crops or another step count are another input.
  digest = ts.face_digest(crops, lips, valid, 20)
  assert digest == ts.face_digest(list(crops), lips.copy(), valid.copy(), 20)
  other_crop = [c.copy() for c in crops]
  other_crop[3][0, 0, 0] ^= 1
  assert len({digest, ts.face_digest(crops, lips * 1.01, valid, 20),
              ts.face_digest(crops, lips, ~valid, 20), ts.face_digest(other_crop, lips, valid, 20),
              ts.face_digest(crops, lips, valid, 2)}) == 5
  # Another face input: its own key and weights; the model's are untouched.
  few = syncer.with_options(adapt_steps=2)         # the same compiled step
  key_b, _ = few.references(crops[::-1], lips[::-1], valid)
  assert len(few.last_adaptation_losses) == 2
  assert key_a != key_b
  jax.tree_util.tree_map(np.testing.assert_array_equal, base.variables["renderer"], before)
  # The same references, other weights: other faces drawn.
  out = syncer.generate_faces(ts.renderer_rows(lips[:4], key_a, slots[:4]), crops[:4])
  key_p, slots_p = base.references(crops, lips, valid)
  np.testing.assert_array_equal(slots_p, slots)
  plain = base.generate_faces(ts.renderer_rows(lips[:4], key_p, slots_p[:4]), crops[:4])
  assert np.abs(out.astype(int) - plain.astype(int)).max() > 0
  # Each frame its own reference: the adapted weights still need a key.
  frame = few.with_options(reference="frame")
  key, _ = frame.references(crops, lips, valid)
  assert key != ts.FRAME_REFERENCE and frame._references[key].references is None  # pylint: disable=protected-access
  with pytest.raises(inference.InferenceError, match="at least 10 frames of visible lips"):
    syncer.references(crops[:1], lips[:1], valid[:1])
  # A whole run: the adaptation is reported as its own stage, and the app says so.
  from lipsync_jax import app  # pylint: disable=import-outside-toplevel
  face = shared_dir / "data/real/av/grid/bbaf2n.mpg"
  report = few.run(face, shared_dir / SPEECH, tmp_path / "adapted.mp4")
  assert report.frames > 0 and "adapt" in report.timings, report.timings
  assert "Adapting the renderer to the face took" in app.summary(report, 1.0)
  plain = dataclasses.replace(report, timings={k: v for k, v in report.timings.items()
                                               if k != "adapt"})
  assert "Adapting" not in app.summary(plain, 1.0)
