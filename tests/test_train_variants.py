"""Training the variant generators (SyncTalkFace, au_tcn) and the AU networks:
their data (9-frame context, stored AU labels), steps, exact resume, and
what they export (infer.py, the memory grid)."""

from __future__ import annotations

import json
import pathlib

import jax
import numpy as np
import pytest

from lipsync_jax.vision import au_proxies
from lipsync_jax import checkpoint as model_ckpt
from lipsync_jax import data as data_lib
from lipsync_jax.data import au_store
from lipsync_jax.data import testing as data_testing
from lipsync_jax.train import config_lib
from lipsync_jax.train import families
from lipsync_jax.train import summary as summary_lib
from lipsync_jax.train import train_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
AUS = au_proxies.DEFAULT_AUS


def load_config(name: str, arg: str = "tiny"):
  return config_lib.load(REPO / "configs" / f"{name}.py", arg)


def write_labels(data_dir, seed=0):
  """Random AU labels for every clip; returns {clip_id: AULabels}."""
  rng = np.random.default_rng(seed)
  out = {}
  for clip in data_lib.load_index(data_dir).clips:
    t = clip.num_frames
    pres = rng.random((t, len(AUS))) < 0.4
    valid = np.ones((t,), bool)
    valid[::7] = False
    labels = au_proxies.AULabels(AUS, rng.uniform(0, 5, (t, len(AUS))).astype(np.float32),
                                 pres, valid, None, "test")
    au_store.save_clip_labels(data_dir, clip.clip_id, labels)
    out[clip.clip_id] = labels
  return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
  root = tmp_path_factory.mktemp("variants")
  data = data_testing.write_synthetic_dataset(root / "data", num_clips=3, num_frames=36)
  labels = write_labels(data)
  return data, labels, root


pytestmark = pytest.mark.usefixtures("xla_compilation_cache")


# -----------------------------------------------------------------------------
# Data.
# -----------------------------------------------------------------------------

def test_au_labels_round_trip_and_missing_labels_error(dataset, tmp_path):
  data, labels, _ = dataset
  clip = data_lib.load_index(data).clips[0]
  got = au_store.load_clip_labels(data, clip)
  want = labels[clip.clip_id]
  assert got.aus == AUS and got.source == "test"
  np.testing.assert_array_equal(got.presence, want.presence)
  np.testing.assert_array_equal(got.valid, want.valid)
  np.testing.assert_allclose(got.intensity, want.intensity, atol=5e-3)  # stored float16
  assert au_store.stored_aus(data, data_lib.load_index(data).clips) == AUS
  bare = data_testing.write_synthetic_dataset(tmp_path / "bare", num_clips=1, num_frames=20)
  with pytest.raises(data_lib.DatasetFormatError, match="au_labels.py"):
    au_store.load_clip_labels(bare, data_lib.load_index(bare).clips[0])


def test_label_dataset_writes_one_meta_file_read_at_start_up(tmp_path):
  data = data_testing.write_synthetic_dataset(tmp_path / "d", num_clips=2, num_frames=12)
  clips = data_lib.load_index(data).clips
  assert au_store.label_dataset(data, "facemesh") == {"labelled": 2, "skipped": 0}
  meta = au_store.read_meta(data)
  assert meta["clips"] == sorted(c.clip_id for c in clips)
  assert tuple(meta["aus"]) == au_proxies.DEFAULT_AUS
  assert au_store.label_dataset(data, "facemesh") == {"labelled": 0, "skipped": 2}
  # Start-up reads the meta file alone: with the per-clip files gone it still answers ...
  for c in clips:
    au_store.label_path(data, c.clip_id).unlink()
  assert au_store.stored_aus(data, clips) == au_proxies.DEFAULT_AUS
  # ... and a clip the meta does not list is named.
  au_store.write_meta(data, au_proxies.DEFAULT_AUS, [clips[0].clip_id])
  with pytest.raises(data_lib.DatasetFormatError, match="au_labels.py"):
    au_store.stored_aus(data, clips)


def test_generator_batches_carry_context_frames_and_au_labels(dataset):
  data, labels, _ = dataset
  index = data_lib.load_index(data)
  loader = data_lib.make_loader(data, "train", "generator", 6, seed=3, context_frames=2,
                                with_aus=True, with_meta=True)
  batch = next(iter(loader))
  assert batch["context"].shape == (6, 9, 96, 96, 3) and batch["context"].dtype == np.uint8
  assert batch["aus"].shape == (6, 5, len(AUS)) and batch["au_valid"].shape == (6, 5)
  from lipsync_jax.data.format import ClipReader
  reader = ClipReader(index.data_dir, index.codec, index.img_size)
  clips = index.split("train")
  for i in range(6):
    clip = clips[int(batch["clip_index"][i])]
    f = int(batch["target_start"][i])
    assert f >= 2 and f + 7 <= clip.num_frames
    # Frames f-2..f+6, the middle five being the target window.
    np.testing.assert_array_equal(batch["context"][i], reader.frames(clip, f - 2, 9))
    np.testing.assert_array_equal(batch["context"][i, 2:7], batch["target"][i])
    np.testing.assert_array_equal(batch["aus"][i], labels[clip.clip_id].presence[f:f + 5])
    np.testing.assert_array_equal(batch["au_valid"][i], labels[clip.clip_id].valid[f:f + 5])
  # Clip 1 has no face in frames 18-19: no 9-frame context may span them.
  starts = [int(s) for s, c in zip(batch["target_start"], batch["clip_index"]) if c == 1]
  assert all(not (s - 2 <= 19 and s + 6 >= 18) for s in starts)


# -----------------------------------------------------------------------------
# Training.
# -----------------------------------------------------------------------------

def tiny(name, data, steps, **over):
  c = load_config(name)
  c.data_dir = str(data)
  c.num_steps = steps
  c.batch_size = 8
  # One device: these tests are about the variants' training, resume and
  # export; the 8-device layout is test_train_sharding's (8 simulated devices
  # on 2 cores run these steps ~6x slower).
  c.mesh_devices = 1
  c.eval_every = 100  # evaluate at the end only
  c.eval_batches = 1
  c.checkpoint_every = 2
  c.sample_every = 100
  c.progress_bar = False
  if c.phase == "generator":
    c.syncnet_checkpoint = "random"
  for k, v in over.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def losses(workdir):
  return [(r["step"], r["loss"]) for r in summary_lib.read_jsonl(str(workdir / "metrics.jsonl"))]


def check_inference_contract(name, wd):
  """A trained variant, loaded from its workdir, runs under Wav2Lip's
  inference contract (`models.generate_frames`)."""
  import jax.numpy as jnp
  from lipsync_jax import models
  loaded = model_ckpt.load_model(wd, expected_arch=models.ALL_GENERATORS)
  n = 2 * models.frames_per_call(loaded.module)
  rng = np.random.default_rng(0)
  faces = jnp.asarray(rng.random((n, 96, 96, 6), np.float32))
  mel = jnp.asarray(rng.normal(size=(n, 80, 16, 1)).astype(np.float32))
  out = np.asarray(models.generate_frames(loaded.module, dict(loaded.variables), mel, faces))
  assert out.shape == (n, 96, 96, 3) and out.min() >= 0 and out.max() <= 1
  # au_tcn windows are independent: the second window's frames do not change
  # the first window's output.
  if name == "au_tcn":
    t = n // 2
    alone = models.generate_frames(loaded.module, dict(loaded.variables), mel[:t], faces[:t])
    np.testing.assert_allclose(np.asarray(alone), out[:t], atol=1e-5)
    with pytest.raises(ValueError, match="windows of 5"):
      models.generate_frames(loaded.module, dict(loaded.variables), mel[:3], faces[:3])


def check_memory_grid(wd, data, tmp_path):
  """The SyncTalkFace memory-slot grid of a trained run: PNG, spread and errors."""
  import cv2
  from lipsync_jax.evaluation import memory_grid
  out = tmp_path / "slots.png"
  rc = memory_grid.main(["--checkpoint", str(wd), "--data", str(data), "--out", str(out)])
  assert rc == 0
  img = cv2.imread(str(out))
  stats = json.loads(out.with_suffix(".json").read_text())
  slots = load_config("synctalkface").model.overrides.get("memory_slots", 96)
  assert stats["slots"] == slots
  assert img is not None and img.shape[0] > 48 and img.shape[1] > 96
  assert stats["slot_spread"] >= 0 and np.isfinite(stats["pairwise_l1"])
  # spread() measures what it says: identical mouths 0, different mouths > 0.
  same = np.zeros((3, 48, 96, 3), np.float32)
  assert memory_grid.spread(same)["slot_spread"] == 0
  diff = same.copy()
  diff[1] = 1.0
  assert memory_grid.spread(diff)["pairwise_l1"] == pytest.approx(2 / 3)
  assert memory_grid.main(["--checkpoint", str(wd), "--data", str(data),
                           "--out", str(tmp_path / "x.jpg")]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("name,expected_parts", [
    ("synctalkface", {"l1", "l1_value", "sync", "sync_value", "vv", "vv_value", "gan_g",
                      "gan_g_value", "store", "align", "disc"}),
    ("au_tcn", {"l1", "sync", "gan_g", "a2au", "disc"}),
])
def test_variant_trains_resumes_exactly_and_runs_inference(dataset, name, expected_parts,
                                                           tmp_path, killed_after_checkpoint):
  data, _, root = dataset
  # With the discriminator (off in the tiny configs): the fused D step too.
  gan = {"loss.gan": 0.2 if name == "synctalkface" else 0.07}
  straight = root / f"{name}_straight"
  s = train_lib.train_and_evaluate(tiny(name, data, 4, **gan), str(straight))
  want = losses(straight)
  assert [k for k, _ in want] == [1, 2, 3, 4]
  assert len({v for _, v in want}) == 4  # it trains (dropout and all)
  first = summary_lib.read_jsonl(str(straight / "metrics.jsonl"))[0]
  assert expected_parts <= set(first), set(first)
  assert all(np.isfinite(v) for v in first.values())
  assert s["final_eval"]["l1"] > 0
  assert s["mesh"] == {"data": 1, "model": 1} and s["devices"] == 8  # config.mesh_devices
  # The same run killed after its checkpoint at step 2, then rerun: identical
  # losses, so params, optimiser, dropout RNG and data-iterator state all
  # resumed (and the killed run's metric lines for steps 3-4 were dropped).
  resumed = killed_after_checkpoint(straight, root / f"{name}_resumed", 2)
  s2 = train_lib.train_and_evaluate(tiny(name, data, 4, **gan), str(resumed))
  assert s2["resumed_from"] == 2
  assert losses(resumed) == want
  # The exported model loads as its arch, and runs under the inference
  # contract (one training run serves these checks too: it is the slow part).
  loaded = model_ckpt.load_model(resumed / "model", expected_arch=name)
  assert loaded.arch == name
  check_inference_contract(name, straight)
  if name == "synctalkface":
    check_memory_grid(straight, data, tmp_path)


@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_synctalkface_losses_reach_their_parameter_groups(dataset):
  """store trains the value memory; align trains the audio side (key memory)
  and not the value memory; the lip encoder learns (store + vv GT side)."""
  import jax.numpy as jnp
  from lipsync_jax.train import sharding as sharding_lib
  from lipsync_jax.train import steps as steps_lib
  data, _, _ = dataset
  cfg = tiny("synctalkface", data, 2)
  mesh = sharding_lib.make_mesh(1)
  setup = train_lib.build(cfg, mesh)
  batch = train_lib._model_inputs(next(iter(train_lib.make_train_loader(cfg))))  # pylint: disable=protected-access
  state = setup.state
  frozen = state.frozen
  from lipsync_jax import models
  expert = models.create("syncnet_color", width_multiplier=cfg.expert_width_multiplier)

  names = ("store", "align", "vv")

  def parts_of(params):
    parts, *_ = steps_lib._generator_parts(  # pylint: disable=protected-access
        families.family_of(setup.model), steps_lib.make_expert_apply(expert, "running"), None, None, cfg.loss,
        {"model": params, "head": {}}, state.batch_stats, None, frozen,
        jax.tree_util.tree_map(jnp.asarray, batch), True, jax.random.PRNGKey(0))
    return jnp.stack([parts[k] for k in names])

  # One compiled reverse pass per part (jacrev), instead of three programs.
  jac = jax.jit(jax.jacrev(parts_of))(state.params)
  grads = {k: jax.tree_util.tree_map(lambda g, i=i: g[i], jac) for i, k in enumerate(names)}

  def norm(tree):
    return float(sum(np.abs(np.asarray(x)).sum() for x in jax.tree_util.tree_leaves(tree)))

  g_store, g_align, g_vv = grads["store"], grads["align"], grads["vv"]
  assert norm(g_store["memory"]["value_memory"]) > 0
  assert norm(g_store["memory"]["key_memory"]) == 0
  assert norm(g_store["lip_encoder"]) > 0
  assert norm(g_align["memory"]["key_memory"]) > 0
  assert norm(g_align["audio_encoder"]) > 0
  assert norm(g_align["memory"]["value_memory"]) == 0   # A_lip is stop-gradient
  assert norm(g_align["lip_encoder"]) == 0
  assert norm(g_vv["lip_encoder"]) > 0                  # through the real window
  assert norm(g_vv["decoder"]) > 0                      # through the generated frames


@pytest.mark.slow
def test_au_networks_train_and_load_into_au_tcn(dataset):
  """AU classifier and audio-to-AU (au phase), then au_tcn with the audio-to-AU
  loaded and frozen, and the classifier as its AU loss."""
  data, _, root = dataset
  runs = {}
  for name in ("au_classifier", "audio_to_au"):
    wd = root / name
    s = train_lib.train_and_evaluate(tiny(name, data, 4), str(wd))
    assert s["status"] == "completed"
    assert {"loss", "accuracy", "balanced_accuracy"} <= set(s["final_eval"])
    l = [v for _, v in losses(wd)]
    assert len(set(l)) == 4 and all(np.isfinite(l))
    runs[name] = wd
  cfg = tiny("au_tcn", data, 2, **{"audio_to_au_checkpoint": str(runs["audio_to_au"]),
                                   "au_classifier_checkpoint": str(runs["au_classifier"]),
                                   "loss.au": 0.1, "loss.a2au": 0.0,
                                   "model.overrides.finetune_audio_to_au": False,
                                   "data.options.with_aus": False})
  wd = root / "au_tcn_staged"
  train_lib.train_and_evaluate(cfg, str(wd))
  first = summary_lib.read_jsonl(str(wd / "metrics.jsonl"))[0]
  assert "au" in first and np.isfinite(first["au"]) and "a2au" not in first
  a2au = model_ckpt.load_model(runs["audio_to_au"]).variables["params"]
  gen = model_ckpt.load_model(wd / "model").variables["params"]["audio_to_au"]
  # Loaded, then frozen: the exported generator holds the trained module exactly.
  for x, y in zip(jax.tree_util.tree_leaves(a2au), jax.tree_util.tree_leaves(gen)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_variant_config_errors_are_one_line(dataset):
  data, _, _ = dataset
  bad = tiny("synctalkface", data, 2, **{"data.options.context_frames": 0})
  with pytest.raises(train_lib.TrainConfigError, match="context_frames=2"):
    train_lib.train_and_evaluate(bad, "/tmp/unused_variant_run")
  bad = tiny("au_tcn", data, 2, **{"model.overrides.finetune_audio_to_au": False})
  with pytest.raises(train_lib.TrainConfigError, match="audio_to_au_checkpoint"):
    train_lib.train_and_evaluate(bad, "/tmp/unused_variant_run")
  bad = tiny("au_tcn", data, 2, **{"loss.au": 0.1})
  with pytest.raises(train_lib.TrainConfigError, match="au_classifier_checkpoint"):
    train_lib.train_and_evaluate(bad, "/tmp/unused_variant_run")
  bad = tiny("au_tcn", data, 2, **{"data.options.with_aus": False})
  with pytest.raises(train_lib.TrainConfigError, match="with_aus"):
    train_lib.train_and_evaluate(bad, "/tmp/unused_variant_run")
  with pytest.raises(train_lib.TrainConfigError, match="only 8 exist"):
    train_lib.train_and_evaluate(tiny("au_tcn", data, 2, mesh_devices=9), "/tmp/unused_variant_run")
  with pytest.raises(train_lib.TrainConfigError, match="mesh_devices must be 0"):
    train_lib.train_and_evaluate(tiny("au_tcn", data, 2, mesh_devices=-1), "/tmp/unused_variant_run")


# -----------------------------------------------------------------------------
# After training: inference and the memory grid.
# -----------------------------------------------------------------------------

@pytest.mark.slow
def test_au_tcn_one_shot_step_generates_from_the_reference_alone(dataset):
  """one_shot mode: the whole face comes from the reference's first frame;
  the target (masked or not) only enters the losses."""
  from lipsync_jax.train import sharding as sharding_lib
  data, _, _ = dataset
  cfg = tiny("au_tcn", data, 1, **{"model.overrides.mode": "one_shot"})
  mesh = sharding_lib.make_mesh(1)
  setup = train_lib.build(cfg, mesh)
  batch = train_lib._model_inputs(next(iter(train_lib.make_train_loader(cfg))))  # pylint: disable=protected-access
  metrics, pred = setup.eval_step(setup.state, sharding_lib.shard_batch(batch, mesh))
  other = dict(batch, target=255 - batch["target"])
  metrics2, pred2 = setup.eval_step(setup.state, sharding_lib.shard_batch(other, mesh))
  np.testing.assert_array_equal(np.asarray(pred), np.asarray(pred2))
  assert metrics["l1"] != metrics2["l1"]
  state, m = setup.train_step(setup.state, sharding_lib.shard_batch(batch, mesh),
                              jax.random.PRNGKey(0))
  assert np.isfinite(float(m["loss"])) and {"l1", "sync", "a2au"} <= set(m)
  assert int(state.step) == 1
