"""The landmark sync expert: lip features, model, batches, loss, trainer, scorer."""

import dataclasses
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax.io import audio as audio_lib
from lipsync_jax.vision import lip_landmarks
from lipsync_jax.evaluation import metrics
from lipsync_jax import models
from lipsync_jax.models import lip_sync as lip_sync_model
from lipsync_jax.train import lip_sync_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
FPS = 25.0


# -----------------------------------------------------------------------------
# Synthetic clips: the mouth opens with the loudness of a random syllable train.
# -----------------------------------------------------------------------------

def _rest_lips(rng) -> np.ndarray:
  """(40, 2) a mouth-like ring of points around (0.5, 0.72) in crop units."""
  t = np.linspace(0, 2 * np.pi, 20, endpoint=False)
  outer = np.stack([0.5 + 0.16 * np.cos(t), 0.72 + 0.06 * np.sin(t)], -1)
  inner = np.stack([0.5 + 0.11 * np.cos(t), 0.72 + 0.02 * np.sin(t)], -1)
  return (np.concatenate([outer, inner]) * rng.uniform(0.9, 1.1)).astype(np.float32)


def synthetic_clip(seed: int, seconds: float = 4.0, name: str | None = None
                   ) -> lip_landmarks.ClipLips:
  """Audio: tone bursts at random times; lips: open in proportion to them."""
  rng = np.random.default_rng(seed)
  n = int(seconds * FPS)
  env = np.zeros(n)
  for start in rng.choice(n - 6, size=n // 8, replace=False):
    env[start:start + rng.integers(2, 6)] = rng.uniform(0.5, 1.0)
  sr = audio_lib.SAMPLE_RATE
  t = np.arange(int(seconds * sr)) / sr
  amp = np.repeat(env, sr // int(FPS))[:len(t)]
  wav = (amp * np.sin(2 * np.pi * rng.uniform(150, 300) * t)).astype(np.float32)
  wav += 0.003 * rng.standard_normal(len(wav)).astype(np.float32)
  rest = _rest_lips(rng)
  lips = np.repeat(rest[None], n, 0)
  lower = slice(0, 40)
  open_ = np.convolve(env, [0.3, 0.7, 0.3], mode="same")
  lips[:, lower, 1] += (0.04 * open_[:, None] * np.sign(lips[:, lower, 1] - 0.72)
                        ).astype(np.float32)
  return lip_landmarks.ClipLips(
      name=name or f"synthetic_{seed}", speaker=name or f"synthetic_{seed}", fps=FPS,
      first_frame=0, lips=lips, valid=np.ones(n, bool),
      mel=audio_lib.melspectrogram(wav).astype(np.float32), wav=wav)


# -----------------------------------------------------------------------------
# Features and normalisation.
# -----------------------------------------------------------------------------

def test_mirror_is_an_involution_and_flips_x():
  lips = _rest_lips(np.random.default_rng(0))
  lips[0, 0] = 0.2   # the corner 61 on the image's left
  m = lip_landmarks.mirror_lips(lips)
  np.testing.assert_allclose(lip_landmarks.mirror_lips(m), lips, atol=1e-6)
  corner_291 = lip_landmarks.LIP_POINTS.index(291)
  assert m[corner_291, 0] == pytest.approx(0.8)


def test_normalise_clip_removes_resting_shape_and_scale():
  clip = synthetic_clip(0)
  other = clip.lips * 1.3 + np.array([0.05, -0.02], np.float32)   # bigger mouth, elsewhere
  a = lip_landmarks.normalise_clip(clip.lips)
  b = lip_landmarks.normalise_clip(other)
  np.testing.assert_allclose(a, b, atol=1e-5)
  shape = a - a.mean(axis=1, keepdims=True)   # without the centroid (jaw) track
  assert np.sqrt(np.mean(shape ** 2)) == pytest.approx(0.05, rel=1e-3)
  # A still mouth is not blown up into noise.
  still = lip_landmarks.normalise_clip(np.repeat(clip.lips[:1], 10, 0))
  assert np.all(np.isfinite(still))


def test_inner_gap_follows_the_opening():
  clip = synthetic_clip(1)
  gap = lip_landmarks.inner_gap(clip.lips)
  open_frames = gap > np.median(gap) + 1e-4
  assert open_frames.any() and (~open_frames).any()


# -----------------------------------------------------------------------------
# Model.
# -----------------------------------------------------------------------------

@pytest.mark.parametrize("window", [5, 15])
def test_model_shapes_and_unit_embeddings(window):
  net = models.create("lip_sync", embed_dim=16, width=32, window=window)
  cols = lip_sync_lib.mel_columns(window)
  assert cols == 16 * window // 5
  mel = jnp.zeros((3, 80, cols, 1))
  lips = jnp.asarray(np.random.default_rng(0).uniform(0.4, 0.6, (3, window, 40, 2)),
                     jnp.float32)
  # Jitted: run op by op, the net compiles every primitive on its own (5x slower).
  v = models.init_variables(net, 0, mel, lips)
  a, e = jax.jit(net.apply)(v, mel + 1.0, lips)
  assert a.shape == (3, 16) and e.shape == (3, 16)
  np.testing.assert_allclose(np.linalg.norm(a, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, rtol=1e-5)


def test_gradients_are_finite_for_an_all_zero_audio_window():
  """Audio windows off a clip's end are zeros; the zero-init biases then give
  a zero embedding, where a norm's gradient would be 0/0."""
  net = models.create("lip_sync", embed_dim=8, width=16)
  v = models.init_variables(net, 0, jnp.zeros((2, 80, 16, 1)), jnp.zeros((2, 5, 40, 2)))
  g = jax.jit(jax.grad(lambda p: jnp.sum(net.apply(p, jnp.zeros((2, 80, 16, 1)),
                                                   method="embed_audio")[:, 0])))(v)
  assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(g))


@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_pixel_expert_cosine_is_the_in_sync_probability():
  """LipSyncPixels: regressor -> LipSyncNet, with the syncnet_color calling
  convention; the cosine of its two outputs is sigmoid(s * cos + b)."""
  sync = {"embed_dim": 8, "width": 16}
  net = models.create("lip_sync_pixels", sync=sync,
                      regressor={"width": 16, "channels": (8, 8, 8, 8)},
                      head_scale=7.0, head_bias=-2.0)
  rng = np.random.default_rng(0)
  mel = jnp.asarray(rng.normal(size=(3, 80, 16, 1)), jnp.float32)
  faces = jnp.asarray(rng.uniform(size=(3, 48, 96, 15)), jnp.float32)
  v = models.init_variables(net, 0, mel, faces)

  @jax.jit  # one program for every call below (op by op, each primitive compiles)
  def run(v, mel, faces):
    a, e = net.apply(v, mel, faces)
    return {"a": a, "e": e,
            "ea": net.apply(v, mel, method="embed_audio"),
            "ev": net.apply(v, faces, method="embed_video"),
            "lips": net.apply(v, faces, method="lips"),
            "one": net.apply(v, lip_sync_model.gaussian_blur(faces[..., 6:9], 1.0),
                             method=lambda m, x: m.lip_regressor(x))}

  out = jax.device_get(run(v, mel, faces))
  a, e, ea, ev = out["a"], out["e"], out["ea"], out["ev"]
  cos = np.sum(a * e, -1)
  p = 1 / (1 + np.exp(-(7.0 * np.sum(ea * ev, -1) - 2.0)))
  np.testing.assert_allclose(cos, p, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(e, axis=-1), 1.0, rtol=1e-5)
  # The regressor sees each of the 5 lower halves on its own.
  lips = out["lips"]
  assert lips.shape == (3, 5, 40, 2)
  np.testing.assert_allclose(lips[:, 2], out["one"], rtol=1e-5, atol=1e-6)
  # Its gradient reaches the pixels (what a generator trains through); the
  # regressor's output layer starts at zero, so give it weights first.
  v = jax.tree_util.tree_map(
      lambda x: x + 0.05 * jax.random.normal(jax.random.PRNGKey(1), x.shape), v)
  g = jax.jit(jax.grad(lambda f: jnp.sum(net.apply(v, mel, f)[1][:, 0])))(faces)
  assert float(jnp.abs(g).sum()) > 0


def test_pixel_expert_checkpoint_scores_through_facemesh(tmp_path):
  """A generator records its training expert (lip_sync_pixels); evaluate then
  scores with that expert's sync towers on FaceMesh lips, not its regressor."""
  from lipsync_jax import checkpoint
  cfg = {"sync": {"embed_dim": 8, "width": 16},
         "regressor": {"width": 16, "channels": (8, 8, 8, 8)}, "head_scale": 5.0}
  net = models.create("lip_sync_pixels", **cfg)
  v = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1, 80, 16, 1)),
                                      jnp.zeros((1, 48, 96, 15))))
  rng = np.random.default_rng(0)
  v = jax.tree_util.tree_map(lambda x: rng.normal(size=x.shape).astype(np.float32), v)
  checkpoint.save_model(tmp_path / "pix", "lip_sync_pixels", cfg, v)
  scorer = metrics.load_scorer(str(tmp_path / "pix"))
  assert isinstance(scorer, metrics.LipSyncScorer) and scorer.name == "lip_sync:pix"
  assert scorer.module.embed_dim == 8
  lips = rng.uniform(0.4, 0.6, (3, 5, 40, 2)).astype(np.float32)
  want = net.apply(v, jnp.asarray(lips), method=lambda m, x: m.lip_sync.embed_video(x))
  # The scorer runs jitted at its own (padded) batch size, the reference
  # eagerly at 3: float32 noise of ~1e-6 on unit-vector entries (seen on an
  # AVX2-only CPU: 1.1e-6 on an entry of 0.0094), nothing a wrong tower
  # could produce, so the bound is absolute, 1e-5 of the vectors' unit norm.
  np.testing.assert_allclose(scorer.embed_video(lips), want, rtol=1e-5, atol=1e-5)


def test_gaussian_blur_keeps_mass_and_flat_images():
  img = np.zeros((1, 9, 11, 3), np.float32)
  img[0, 4, 5] = 1.0
  out = np.asarray(lip_sync_model.gaussian_blur(jnp.asarray(img), 1.0))
  assert out.shape == img.shape
  np.testing.assert_allclose(out.sum(axis=(1, 2)), 1.0, rtol=1e-5)
  assert out[0, 4, 5, 0] < 0.2 and out[0, 4, 4, 0] == pytest.approx(out[0, 4, 6, 0])
  flat = np.full((1, 6, 6, 3), 0.3, np.float32)
  np.testing.assert_allclose(lip_sync_model.gaussian_blur(jnp.asarray(flat), 1.5), flat,
                             rtol=1e-5)


def test_mel_windows_match_audio_mel_windows_at_5_frames():
  mel = np.random.default_rng(0).normal(size=(80, 300)).astype(np.float32)
  np.testing.assert_array_equal(lip_sync_lib.mel_windows(mel, 50, FPS, 5),
                                audio_lib.mel_windows(mel, 50, FPS))
  w15 = lip_sync_lib.mel_windows(mel, 50, FPS, 15)
  assert w15.shape == (50, 80, 48)
  np.testing.assert_array_equal(w15[10], mel[:, 32:80])   # frame 10 starts at 80*10/25


# -----------------------------------------------------------------------------
# Batches and loss.
# -----------------------------------------------------------------------------

def test_sampler_aligns_audio_with_video_and_picks_true_negatives():
  clip = synthetic_clip(2)
  # Make every audio window carry its own position, to check alignment.
  w = lip_sync_lib.clip_windows(clip)
  w.audio[:] = np.arange(len(w.audio), dtype=np.float32)[:, None, None]
  # ... and every lip frame its own index.
  w.lips[:] = np.arange(len(w.lips), dtype=np.float32)[:, None, None]
  k, seg = 4, 6
  sampler = lip_sync_lib.SegmentSampler([w], 3, seg, k, seed=0, augment=0.0)
  b = next(sampler)
  assert b["lips"].shape == (3, seg, 5, 40, 2)
  assert b["audio"].shape == (3, seg + 2 * k, 80, 16, 1)
  for r in range(3):
    first_frame = b["lips"][r, 0, 0, 0, 0]
    # Audio position K of the row is video window 0's own audio window.
    assert b["audio"][r, k, 0, 0, 0] == first_frame
    assert b["audio"][r, k + 3, 0, 0, 0] == first_frame + 3
    assert np.all(b["neg"][r][b["vmask"][r]] != k)


def _short_clips() -> list[lip_landmarks.ClipLips]:
  """An lrw_ar-like clip of 31 frames (27 windows), one of 4 frames (shorter
  than a window) and one of 31 frames whose lips are never 5 frames running."""
  short = synthetic_clip(3, seconds=31 / FPS, name="short_31")
  tiny = synthetic_clip(4, seconds=31 / FPS, name="tiny_4")
  tiny = dataclasses.replace(tiny, lips=tiny.lips[:4], valid=tiny.valid[:4])
  gappy = synthetic_clip(5, seconds=31 / FPS, name="gappy")
  gappy.valid[::4] = False
  return [short, tiny, gappy]


def test_sampler_uses_clips_shorter_than_a_segment_and_names_those_without_a_window():
  clips = _short_clips()
  w = [lip_sync_lib.clip_windows(c) for c in clips]
  assert int(w[0].video_ok.sum()) == 27
  sampler = lip_sync_lib.SegmentSampler(w, 2, 32, 4, seed=0, augment=0.0)
  assert sampler.skipped == ["tiny_4", "gappy"]
  b = next(sampler)
  # Both rows are the 31-frame clip: all its 27 windows, the rest masked out.
  np.testing.assert_array_equal(b["vmask"].sum(axis=1), [27, 27])
  np.testing.assert_array_equal(b["lips"][:, :27], np.broadcast_to(
      lip_sync_lib.video_windows(clips[0].lips), (2, 27, 5, 40, 2)))
  assert np.all(b["neg"][b["vmask"]] != 4)


def test_sampler_notes_count_the_skipped_and_the_short_clips():
  w = [lip_sync_lib.clip_windows(c) for c in _short_clips()]
  notes = lip_sync_lib.SegmentSampler(w, 2, 32, 4, seed=0).notes()   # train() prints them
  assert notes == [
      "lip_sync: 2 of 3 training clips skipped, without one 5-frame window with lips "
      "and audio: tiny_4, gappy",
      "lip_sync: 1 of 1 training clips have fewer usable windows than a segment (32): "
      "each gives the windows it has"]


def test_all_config_trains_on_lrw_ar_but_not_on_grid_s1():
  c = _config("all")
  roots = c.videos.split(",")
  assert roots == ["../shared/data/real/av", "../shared/data/lrw_ar/video"]
  assert "grid/bbaf2n" in c.val_speakers   # GRID s1's recording stays held out
  assert lip_sync_lib.parse_audio_lags(c.audio_lag, roots) == {roots[1]: 1}
  with pytest.raises(lip_sync_lib.LipSyncConfigError, match="not one of config.videos"):
    lip_sync_lib.parse_audio_lags(["elsewhere=1"], roots)
  with pytest.raises(lip_sync_lib.LipSyncConfigError, match="whole number"):
    lip_sync_lib.parse_audio_lags([roots[1] + "=half"], roots)


def test_pair_auc_counts_ranks_and_ties():
  assert lip_sync_lib.pair_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
  assert lip_sync_lib.pair_auc([1.0], [2.0]) == 0.0
  assert lip_sync_lib.pair_auc([1.0, 3.0], [1.0, 2.0]) == pytest.approx(0.625)
  assert np.isnan(lip_sync_lib.pair_auc([], [1.0]))


def test_loss_prefers_aligned_embeddings():
  rng = np.random.default_rng(0)
  c, l, k, d = 2, 4, 3, 8
  base = rng.normal(size=(c, l + 2 * k, d))
  base /= np.linalg.norm(base, axis=-1, keepdims=True)
  a = jnp.asarray(base, jnp.float32)
  aligned = a[:, k:k + l]
  shuffled = jnp.roll(aligned, 1, axis=1)
  batch = {"vmask": jnp.ones((c, l), bool), "amask": jnp.ones((c, l + 2 * k), bool),
           "neg": jnp.zeros((c, l), jnp.int32)}
  head = lip_sync_lib.init_head()
  good, mg = lip_sync_lib.lip_sync_losses(a, aligned, batch, head, k, 0.5)
  bad, mb = lip_sync_lib.lip_sync_losses(a, shuffled, batch, head, k, 0.5)
  assert float(good) < float(bad)
  assert float(mg["offset_top1"]) == 1.0 and float(mb["offset_top1"]) < 1.0
  # Masked candidates cannot win (audio positions k..k+l-1 are the aligned ones).
  amask = batch["amask"].at[:, k:k + l].set(False)
  _, mm = lip_sync_lib.lip_sync_losses(a, aligned, dict(batch, amask=amask), head, k, 0.5)
  assert float(mm["offset_top1"]) == 0.0


# -----------------------------------------------------------------------------
# Training, export, scoring (synthetic clips).
# -----------------------------------------------------------------------------

def _config(variant: str):
  sys.path.insert(0, str(REPO / "configs"))
  try:
    import lip_sync as cfg  # pylint: disable=import-outside-toplevel
  finally:
    sys.path.pop(0)
  return cfg.get_config(variant)


def _tiny_config():
  c = _config("tiny")
  c.progress_bar = False
  return c


@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_training_learns_synthetic_sync_and_recovers_shifts():
  c = _tiny_config()
  c.num_steps, c.log_every = 150, 50
  c.model.window = 5
  c.mel_shift, c.mel_gain = 0, 0.0
  train = [synthetic_clip(s) for s in range(6)]
  model, variables, head, hist = lip_sync_lib.train(c, train, progress=False)
  assert hist[-1]["offset_loss"] < hist[0]["offset_loss"]
  held_out = [synthetic_clip(100 + s, seconds=3.0) for s in range(3)]
  rec = lip_sync_lib.offset_recovery(
      lip_sync_lib.model_offset_fn(model, variables, padding="exclude"), held_out,
      shifts=(0, 3, -5))
  assert min(rec["rate"].values()) == 1.0, rec["offsets"]
  acc = lip_sync_lib.pair_accuracy(model, variables, head,
                                   [lip_sync_lib.clip_windows(x) for x in held_out])
  assert acc["pairs"] >= 256 and acc["pair_acc"] > 0.8, acc


def test_offset_recovery_counts_relative_and_absolute():
  clips = [synthetic_clip(s, seconds=1.0) for s in range(2)]
  truth = {clips[0].name: 0, clips[1].name: 2}   # the second clip is itself 2 frames late

  def fn(clip, wav):
    k = (len(wav) - len(clip.wav)) / (audio_lib.SAMPLE_RATE / FPS)
    return int(round(k)) + truth[clip.name]

  rec = lip_sync_lib.offset_recovery(fn, clips, shifts=(0, 3, -3))
  assert rec["rate"] == {0: 0.5, 3: 0.5, -3: 0.5}
  assert rec["rate_relative"] == {3: 1.0, -3: 1.0}


# -----------------------------------------------------------------------------
# The built-in scorer on real clips.
# -----------------------------------------------------------------------------

def test_builtin_scorer_is_shipped_and_named():
  scorer = metrics.load_scorer(metrics.BUILTIN_SCORER)
  assert isinstance(scorer, metrics.LipSyncScorer)
  assert scorer.name == "lip_sync:builtin"
  from lipsync_jax import checkpoint
  meta = checkpoint.load_model(metrics.builtin_scorer_path()).meta
  assert meta["training"]["val_speakers"], "the shipped weights name their held-out speakers"
  # The generator-facing version holds the very same sync towers.
  pix = checkpoint.load_model(metrics.builtin_pixel_expert_path(), expected_arch="lip_sync_pixels")
  for a, b in zip(jax.tree_util.tree_leaves(pix.variables["params"]["lip_sync"]),
                  jax.tree_util.tree_leaves(scorer.variables["params"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert pix.module.head_scale == pytest.approx(meta["logit_scale"])


def test_builtin_scorer_names_a_clip_without_lips():
  scorer = metrics.load_builtin_scorer()
  noise = np.random.default_rng(0).integers(0, 256, (12, 192, 192, 3), dtype=np.uint8)
  with pytest.raises(metrics.MetricError, match=r"FaceMesh finds lips on \d+ of 12 frames"):
    scorer.video_windows(noise)


def test_builtin_scorer_recovers_shifts_on_unseen_real_speakers(shared_dir):
  """Held-out speakers of the shipped weights (configs/lip_sync.py):
  audio delayed/advanced by 3, 5 and 8 frames must show as that offset."""
  from lipsync_jax import checkpoint
  meta = checkpoint.load_model(metrics.builtin_scorer_path()).meta
  held_out = set(meta["training"]["val_speakers"])
  names = ["grid/lbbc2a.mpg", "hdtf/WDA_BobMenendez_000.mp4", "retalking/face_2.mp4",
           "voxceleb2/00086.mp4"]
  assert all(n.rsplit(".", 1)[0] in held_out for n in names)
  root = shared_dir / "data" / "real" / "av"
  scorer = metrics.load_builtin_scorer()
  from lipsync_jax.vision import face_detection
  from lipsync_jax.vision import face_crops
  detector = face_detection.create_detector("default")
  hits = {k: [] for k in (3, -3, 5, -5, 8, -8)}
  for n in names:
    crops, first, fps, _ = face_crops.video_face_crops(str(root / n), scorer.face_size, detector)
    wav = audio_lib.load_audio(root / n)
    v = scorer.embed_video(scorer.video_windows(crops))
    base = None
    for k in (0,) + tuple(hits):
      audio = metrics.ClipAudio(wav=lip_sync_lib.shift_waveform(wav, k, fps))
      a = scorer.embed_audio(scorer.audio_windows(audio, first + np.arange(len(v)), fps))
      off = metrics.lse_from_embeddings(v, a, padding="exclude").offset
      if k == 0:
        base = off
        assert abs(off) <= 2, (n, off)   # the clips are (nearly) in sync
      else:
        hits[k].append(abs(off - base - k) <= 1)
  for k, h in hits.items():
    assert np.mean(h) >= 0.75, (k, h)


def test_evaluate_videos_without_syncnet_uses_builtin_scorer(shared_dir, tmp_path):
  from lipsync_jax.io import video as video_lib
  vids = tmp_path / "videos"
  vids.mkdir()
  src = shared_dir / "data" / "real" / "av" / "grid" / "lbbc2a.mpg"
  (vids / "lbbc2a.mpg").symlink_to(src)
  rng = np.random.default_rng(0)
  noise = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(30)]
  wav = (0.1 * np.sin(np.arange(16000 * 1.2) * 0.05)).astype(np.float32)
  video_lib.write_video(vids / "noface.mp4", noise, 25.0, audio=(wav, 16000))
  out = tmp_path / "report"
  r = subprocess.run([sys.executable, "-m", "lipsync_jax.evaluate", "--videos", str(vids),
                      "--out", str(out), "--quiet"], capture_output=True, text=True,
                     cwd=REPO, timeout=3600)  # catches hangs only
  assert r.returncode == 0, r.stderr[-2000:]
  rep = json.loads((out / "report.json").read_text())
  assert rep["scorer"] == "lip_sync:builtin"
  assert [c["name"] for c in rep["clips"]] == ["lbbc2a.mpg"]
  assert abs(rep["clips"][0]["offset"]) <= 1
  assert rep["unscorable"][0]["name"] == "noface.mp4"
  assert "lip_sync:builtin" in (out / "report.md").read_text()
