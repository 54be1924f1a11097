"""train.py end to end: exact resume after SIGKILL, SIGTERM, NaN stop, atomicity.

Each test runs `python train.py` on the tiny SyncNet config and a synthetic
dataset; the runs share a persistent XLA compilation cache.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lipsync_jax import checkpoint as model_ckpt
from lipsync_jax.data import testing as data_testing
from lipsync_jax.train import checkpointing
from lipsync_jax.train import summary as summary_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 6


@pytest.fixture(scope="module")
def env_and_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("resume")
  data = data_testing.write_synthetic_dataset(root / "data", num_clips=3, num_frames=30)
  env = dict(os.environ)
  env.update({
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
      "JAX_COMPILATION_CACHE_DIR": str(root / "xla_cache"),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
  })
  return env, data, root


def command(workdir, data, *extra):
  return [sys.executable, str(REPO / "train.py"),
          "--config", str(REPO / "configs" / "syncnet.py") + ":tiny",
          "--workdir", str(workdir),
          f"--config.data_dir={data}", f"--config.num_steps={NUM_STEPS}",
          "--config.batch_size=4", "--config.checkpoint_every=2",
          "--config.eval_every=100", "--config.eval_batches=1",
          "--config.keep_last=2", "--config.progress_bar=False", *extra]


def losses_of(workdir) -> list[tuple[int, float]]:
  return [(r["step"], r["loss"]) for r in summary_lib.read_jsonl(str(workdir / "metrics.jsonl"))]


def wait_for_step(proc, workdir, step, timeout=3600):  # catches hangs only
  path = workdir / "metrics.jsonl"
  t0 = time.time()
  while time.time() - t0 < timeout:
    assert proc.poll() is None, proc.communicate()
    if path.exists() and any(s >= step for s, _ in losses_of(workdir)):
      return
    time.sleep(0.2)
  raise TimeoutError(f"step {step} not reached")


@pytest.mark.slow
def test_sigkill_then_rerun_gives_identical_losses(env_and_data):
  env, data, root = env_and_data
  straight = root / "straight"
  r = subprocess.run(command(straight, data), env=env, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  want = losses_of(straight)
  assert [s for s, _ in want] == list(range(1, NUM_STEPS + 1))
  assert len({v for _, v in want}) > 1  # it trains

  killed = root / "killed"
  cmd = command(killed, data, "--config.debug.pause_at_step=3")
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  wait_for_step(proc, killed, 3)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert checkpointing.Checkpointer(killed / "checkpoints").latest_step() == 2
  assert not (killed / "summary.json").exists()

  r = subprocess.run(cmd, env=env, capture_output=True, text=True)  # the same command
  assert r.returncode == 0, r.stderr[-2000:]
  assert losses_of(killed) == want  # bit-identical, steps 3.. recomputed
  summary = json.loads((killed / "summary.json").read_text())
  assert summary["resumed_from"] == 2 and summary["status"] == "completed"
  assert summary["final_eval"] == json.loads((straight / "summary.json").read_text())["final_eval"]
  # Keep-last-2 (+best) and the exported models.
  steps = sorted(int(p.name) for p in (killed / "checkpoints").iterdir() if p.name.isdigit())
  assert steps == [4, 6]
  loaded = model_ckpt.load_model(killed, expected_arch="syncnet_color")
  assert loaded.arch == "syncnet_color"
  assert (killed / "model_best").is_dir()
  assert list((killed / "tb").iterdir())


def test_sigterm_saves_and_exits_zero(env_and_data):
  env, data, root = env_and_data
  wd = root / "sigterm"
  proc = subprocess.Popen(command(wd, data, "--config.debug.pause_at_step=3",
                                  "--config.eval_at_start=True"),
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  wait_for_step(proc, wd, 3)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=3600)  # catches hangs only
  assert proc.returncode == 0, err[-2000:]
  assert checkpointing.Checkpointer(wd / "checkpoints").latest_step() == 3
  summary = json.loads((wd / "summary.json").read_text())
  assert summary["status"] == "preempted" and summary["step"] == 3
  # eval_at_start: the initial weights are evaluated once, logged at step 0.
  evals = summary_lib.read_jsonl(str(wd / "eval.jsonl"))
  assert [r["step"] for r in evals] == [0]
  assert summary["initial_eval"]["loss"] == pytest.approx(evals[0]["loss"])


def test_nan_loss_stops_and_keeps_last_good_checkpoint(env_and_data):
  env, data, root = env_and_data
  wd = root / "nan"
  r = subprocess.run(command(wd, data, "--config.debug.nan_at_step=3"), env=env,
                     capture_output=True, text=True)
  assert r.returncode == 1
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: non-finite loss at step 3")
  assert str(wd / "checkpoints" / "2") in last
  assert "Traceback" not in r.stderr
  assert checkpointing.Checkpointer(wd / "checkpoints").latest_step() == 2
  loaded = model_ckpt.load_model(wd, expected_arch="syncnet_color")
  leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(loaded.variables)]
  assert all(np.isfinite(x).all() for x in leaves)
  assert not (wd / "summary.json").exists()


def test_partial_checkpoint_is_ignored(tmp_path):
  """A save killed midway leaves only orbax's tmp folder: never restored."""
  import jax.numpy as jnp
  ck = checkpointing.Checkpointer(tmp_path / "ck", keep_last=2, best_metric=None)
  ck.save(1, {"w": jnp.ones(3)}, None, {"rng": [0, 1]})
  ck.close()
  tmp = tmp_path / "ck" / "2.orbax-checkpoint-tmp-1234"
  (tmp / "state").mkdir(parents=True)
  (tmp / "state" / "garbage").write_text("x")
  ck = checkpointing.Checkpointer(tmp_path / "ck", keep_last=2, best_metric=None)
  assert ck.latest_step() == 1
  tree, meta = ck.restore(1, {"w": jnp.zeros(3)}, None)
  np.testing.assert_array_equal(np.asarray(tree["w"]), np.ones(3))
  assert meta["rng"] == [0, 1]


def test_override_of_a_missing_config_field_is_a_one_line_error(tmp_path):
  """ml_collections raises a bare AttributeError for `--config.x=...` when the
  config has no field x; train.py turns it into one line and exit 2."""
  proc = subprocess.run(
      [sys.executable, str(REPO / "train.py"),
       "--config", str(REPO / "configs" / "syncnet.py") + ":tiny",
       "--workdir", str(tmp_path / "run"), "--config.model.no_such_field=3"],
      capture_output=True, text=True, timeout=600, cwd=REPO)
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr
  assert "error: a --config override names a field the config does not have: " \
         "'no_such_field'" in proc.stderr
  assert not (tmp_path / "run").exists()
