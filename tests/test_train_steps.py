"""The jitted train steps on tiny models: they learn, they keep frozen things
frozen, and the options (expert BN mode, bf16, learned cosine scale) work."""

from __future__ import annotations

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lipsync_jax import losses
from lipsync_jax import models
from lipsync_jax.train import config_lib
from lipsync_jax.train import sharding as sharding_lib
from lipsync_jax.train import steps as steps_lib
from lipsync_jax.train import train_lib

REPO = pathlib.Path(__file__).resolve().parents[1]



def load_config(name: str, arg: str = "tiny"):
  c = config_lib.load(REPO / "configs" / f"{name}.py", arg)
  c.data_dir = "unused"
  return c


def mesh1():
  return sharding_lib.make_mesh(1)


def syncnet_batch(b: int, seed: int = 0):
  r = np.random.default_rng(seed)
  return {"faces": r.integers(0, 256, (b, 5, 96, 96, 3), dtype=np.uint8),
          "audio": r.normal(-1, 1, (b, 80, 16, 1)).astype(np.float32),
          "label": (np.arange(b) % 2).astype(np.float32)}


def generator_batch(b: int, seed: int = 0):
  r = np.random.default_rng(seed)
  audio = r.normal(-1, 1, (b, 5, 80, 16, 1)).astype(np.float32)
  return {"target": r.integers(0, 256, (b, 5, 96, 96, 3), dtype=np.uint8),
          "reference": r.integers(0, 256, (b, 5, 96, 96, 3), dtype=np.uint8),
          "audio": audio, "sync_audio": audio[:, 0].copy()}


def host(tree):
  return jax.tree_util.tree_map(np.asarray, jax.device_get(tree))


@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_syncnet_step_fits_a_fixed_batch_with_learned_scale():
  config = load_config("syncnet")
  config.optimizer.learning_rate = 1e-3
  config.loss.learned_logit_scale = True
  setup = train_lib.build(config, mesh1())
  batch = sharding_lib.shard_batch(syncnet_batch(4), setup.mesh)
  state = setup.state
  stats0 = host(state.batch_stats)
  hist = []
  for i in range(8):
    state, m = setup.train_step(state, batch, jax.random.PRNGKey(i))
    hist.append({k: float(v) for k, v in m.items()})
  assert int(state.step) == 8
  assert all(np.isfinite(h["loss"]) for h in hist)
  assert hist[-1]["loss"] < 0.7 * hist[0]["loss"], [h["loss"] for h in hist]
  assert hist[-1]["logit_scale"] != pytest.approx(10.0)  # the scale is trained
  moved = jax.tree_util.tree_map(lambda a, b: float(np.abs(a - b).max()), stats0,
                                 host(state.batch_stats))
  assert max(jax.tree_util.tree_leaves(moved)) > 0  # BN running stats update
  ev = setup.eval_step(state, batch)
  assert set(ev) >= {"loss", "accuracy"} and 0 <= float(ev["accuracy"]) <= 1


@pytest.mark.slow
def test_lpips_generator_step_keeps_expert_and_lpips_frozen():
  config = load_config("lpips_attnwav2lip")
  config.syncnet_checkpoint = "random"
  config.sync_schedule.initial = 0.03
  config.optimizer.learning_rate = 1e-3
  setup = train_lib.build(config, mesh1())
  state = setup.state
  assert set(state.frozen) == {"expert", "lpips"}
  frozen0 = host(state.frozen)
  # The optimiser state covers only the generator (and the empty head).
  n_opt = sum(x.size for x in jax.tree_util.tree_leaves(state.opt_state))
  n_par = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
  assert n_opt == 2 * n_par + 1  # Adam mu, nu, count
  assert state.d_params is None  # gan weight 0: no discriminator
  batch = sharding_lib.shard_batch(generator_batch(2), setup.mesh)
  hist = []
  for i in range(4):
    state, m = setup.train_step(state, batch, jax.random.PRNGKey(i))
    hist.append({k: float(v) for k, v in m.items()})
  assert {"l1", "sync", "lpips", "loss"} <= set(hist[0])
  assert hist[-1]["loss"] < hist[0]["loss"]
  same = jax.tree_util.tree_map(np.array_equal, frozen0, host(state.frozen))
  assert all(jax.tree_util.tree_leaves(same))
  metrics, pred = setup.eval_step(state, batch)
  assert pred.shape == (2, 5, 96, 96, 3)
  # eval "loss" uses the schedule's final sync weight
  w = 1 - 0.03
  want = w * float(metrics["l1"]) + 0.03 * float(metrics["sync"]) + 0.1 * float(metrics["lpips"])
  assert float(metrics["loss"]) == pytest.approx(want, rel=1e-5)


def test_expert_bn_modes():
  """running: a sample's sync score ignores the rest of the batch; batch: not."""
  expert = models.create("syncnet_color", width_multiplier=0.0625)
  r = np.random.default_rng(0)
  audio = jnp.asarray(r.normal(size=(4, 80, 16, 1)).astype(np.float32))
  faces = jnp.asarray(r.random((4, 48, 96, 15)).astype(np.float32))
  variables = models.init_variables(expert, 0, audio, faces)
  # Non-trivial running stats, as a trained expert has.
  variables = {"params": variables["params"], "batch_stats": jax.tree_util.tree_map(
      lambda x: x + 0.3, variables["batch_stats"])}
  for mode, independent in (("running", True), ("batch", False)):
    fn = jax.jit(steps_lib.make_expert_apply(expert, mode))  # op by op: 3x slower
    a4, v4 = fn(variables, audio, faces)
    a2, v2 = fn(variables, audio[:2], faces[:2])
    cos4 = losses.cosine_similarity(a4, v4)[:2]
    cos2 = losses.cosine_similarity(a2, v2)
    assert np.allclose(cos4, cos2, atol=1e-6) == independent, mode
  with pytest.raises(ValueError, match="expert_bn"):
    steps_lib.make_expert_apply(expert, "frozen")


def test_bf16_compute_keeps_fp32_master_weights():
  config = load_config("syncnet")
  config.mixed_precision = True
  setup = train_lib.build(config, mesh1())
  batch = sharding_lib.shard_batch(syncnet_batch(2), setup.mesh)
  state, m = setup.train_step(setup.state, batch, jax.random.PRNGKey(0))
  assert np.isfinite(float(m["loss"]))
  assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {jnp.dtype("float32")}
  assert setup.model.dtype == jnp.bfloat16


def test_sample_grid_png(tmp_path):
  import cv2
  from lipsync_jax.train import summary as summary_lib
  batch = generator_batch(3)
  pred = np.random.default_rng(1).random((3, 5, 96, 96, 3)).astype(np.float32)
  path = summary_lib.save_sample_grid(str(tmp_path), 7, batch, pred)
  img = cv2.imread(path)
  assert img.shape == (3 * 96, 4 * 5 * 96 + 3 * 4, 3)
  # columns: masked input | reference | generated | ground truth
  np.testing.assert_array_equal(img[:48, :96], batch["target"][0, 0, :48])
  assert not img[48:96, :96].any()
  np.testing.assert_array_equal(img[:96, 5 * 96 + 4:6 * 96 + 4], batch["reference"][0, 0])
  np.testing.assert_array_equal(img[96:192, -96:], batch["target"][1, 4])
  gen = img[:96, 2 * (5 * 96 + 4):2 * (5 * 96 + 4) + 96].astype(int)
  assert np.abs(gen - np.round(pred[0, 0] * 255)).max() <= 1
  assert [p.name for p in tmp_path.joinpath("samples").iterdir()] == ["step_0000007.png"]


def test_optimizer_schedules():
  """constant: full steps after warmup; cosine: decays to 0 at decay_steps."""
  from lipsync_jax.train import state as state_lib

  def step_sizes(tx, n):
    params = {"w": jnp.zeros(())}
    opt = tx.init(params)
    sizes = []
    for _ in range(n):
      upd, opt = tx.update({"w": jnp.ones(())}, opt, params)
      sizes.append(-float(upd["w"]))
    return np.asarray(sizes)

  const = step_sizes(state_lib.make_optimizer(0.1, 0.9, 0.999, warmup_steps=4), 10)
  np.testing.assert_allclose(const[:4], [0.0, 0.025, 0.05, 0.075], atol=1e-6)
  np.testing.assert_allclose(const[4:], 0.1, rtol=1e-5)
  cos = step_sizes(state_lib.make_optimizer(0.1, 0.9, 0.999, warmup_steps=4,
                                            schedule="cosine", decay_steps=10), 11)
  np.testing.assert_allclose(cos[4], 0.1, rtol=1e-5)
  assert np.all(np.diff(cos[4:]) < 0) and cos[10] < 1e-6
  with pytest.raises(ValueError, match="decay_steps"):
    state_lib.make_optimizer(0.1, 0.9, 0.999, warmup_steps=4, schedule="cosine")


def test_init_from_starts_from_a_saved_model_and_its_head(tmp_path):
  """Fine-tuning: `init_from` replaces the random init (and the learned
  decision head) by a saved expert's; a model of another size is refused."""
  from lipsync_jax import checkpoint as model_ckpt  # pylint: disable=g-import-not-at-top
  config = load_config("syncnet")
  config.loss.learned_logit_scale = True
  config.seed = 5                       # another init than the saved model's
  donor = load_config("syncnet")
  setup = train_lib.build(donor, mesh1())
  saved = {"params": host(setup.state.params),
           "batch_stats": host(setup.state.batch_stats)}
  saved["batch_stats"] = jax.tree_util.tree_map(lambda x: x + 0.5, saved["batch_stats"])
  model_ckpt.save_model(tmp_path / "expert", "syncnet_color", train_lib.model_kwargs(donor),
                        saved, extra_meta={"logit_scale": 7.5, "logit_bias": -2.0})
  fresh = host(train_lib.build(config, mesh1()).state.params)
  config.init_from = str(tmp_path / "expert")
  state = train_lib.build(config, mesh1()).state
  got = host({"params": state.params, "batch_stats": state.batch_stats})
  assert not all(np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(fresh), jax.tree_util.tree_leaves(saved["params"])))
  for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(saved)):
    np.testing.assert_array_equal(a, b)
  assert float(state.head["scale"]) == 7.5 and float(state.head["bias"]) == -2.0
  config.model.width_multiplier = 2 * float(donor.model.width_multiplier)
  with pytest.raises(train_lib.TrainConfigError, match="does not match"):
    train_lib.build(config, mesh1())
  # A resumed run takes its state from the checkpoint: init_from is not read.
  config.model.width_multiplier = donor.model.width_multiplier
  config.init_from = str(tmp_path / "gone")
  with pytest.raises(model_ckpt.CheckpointError, match="no such checkpoint"):
    train_lib.build(config, mesh1())
  train_lib.build(config, mesh1(), resuming=True)


def test_val_batches_are_never_augmented(tmp_path):
  from lipsync_jax.data import testing as data_testing  # pylint: disable=g-import-not-at-top
  config = load_config("syncnet")
  config.data_dir = str(data_testing.write_synthetic_dataset(tmp_path, num_clips=2,
                                                              num_frames=30))
  plain = next(iter(train_lib.make_val_loader(config)))
  train_plain = next(iter(train_lib.make_train_loader(config)))
  config.data.options.augment = True
  val = next(iter(train_lib.make_val_loader(config)))
  train = next(iter(train_lib.make_train_loader(config)))
  for k in plain:
    np.testing.assert_array_equal(val[k], plain[k], err_msg=k)
  assert not np.array_equal(train["faces"], train_plain["faces"])


def test_config_files_load_by_path_as_train_py_does(tmp_path):
  hq = config_lib.load(REPO / "configs" / "lpips_attnwav2lip.py", "hq192_tiny")
  assert hq.model.overrides.face_size == 192 and hq.phase == "generator"
  assert config_lib.load(REPO / "configs" / "syncnet.py").phase == "syncnet"  # get_config()
  with pytest.raises(FileNotFoundError, match="nope.py"):
    config_lib.load(tmp_path / "nope.py")
  with pytest.raises(train_lib.TrainConfigError, match="cannot build 'syncnet_color_v2'"):
    train_lib._dummy_inputs("syncnet_color_v2")
