"""Multi-host training: two `train.py` processes joined by jax.distributed.

Each process gets 2 simulated CPU devices (4 in all), its own slice of every
global batch from the data loader, and the CPU collectives (gloo) for the
gradient all-reduce. Process 0 alone writes the metrics, the summary and the
exported model; both write their part of every checkpoint (orbax), including
their own data-iterator state, so a SIGKILL of the whole job followed by the
same two commands resumes exactly. A peer that is late to the exit barrier
(deliberately, by `debug.exit_delay_s`) must not fail the job.

Time limits here catch hangs only: a loaded machine may be many times slower.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from lipsync_jax import checkpoint as model_ckpt
from lipsync_jax.data import testing as data_testing
from lipsync_jax.train import summary as summary_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
NUM_STEPS = 4
PROCESSES = 2
HANG_S = 3600  # a hung job, not a slow one
LATE_S = 10    # how late the delayed peer is to the exit barrier


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def env_and_data(tmp_path_factory):
  root = tmp_path_factory.mktemp("multihost")
  data = data_testing.write_synthetic_dataset(root / "data", num_clips=3, num_frames=30)
  env = dict(os.environ)
  env.update({
      "JAX_PLATFORMS": "cpu",
      "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
      "JAX_COMPILATION_CACHE_DIR": str(root / "xla_cache"),
      "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
      "PYTHONPATH": str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
  })
  return env, data, root


def _start(workdir, data, env, *extra) -> list[subprocess.Popen]:
  port = _free_port()
  procs = []
  for i in range(PROCESSES):
    cmd = [sys.executable, str(REPO / "train.py"),
           "--config", str(REPO / "configs" / "syncnet.py") + ":tiny",
           "--workdir", str(workdir), f"--config.data_dir={data}",
           f"--config.num_steps={NUM_STEPS}", "--config.batch_size=8",
           "--config.checkpoint_every=2", "--config.eval_every=2",
           "--config.eval_batches=1", "--config.progress_bar=False",
           "--config.distributed=True", f"--config.coordinator_address=localhost:{port}",
           f"--config.num_processes={PROCESSES}", f"--config.process_id={i}", *extra]
    procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True))
  return procs


def _finish(procs, timeout=HANG_S) -> None:
  try:
    for p in procs:
      _, err = p.communicate(timeout=timeout)
      assert p.returncode == 0, err[-3000:]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()


def _losses(workdir) -> list[tuple[int, float]]:
  return [(r["step"], r["loss"])
          for r in summary_lib.read_jsonl(str(workdir / "metrics.jsonl"))]


@pytest.mark.slow
def test_two_processes_train_checkpoint_and_resume_exactly(env_and_data):
  env, data, root = env_and_data
  straight = root / "straight"
  # The coordinator's process is the late one here, the other one on resume.
  _finish(_start(straight, data, env, f"--config.debug.exit_delay_s={LATE_S}",
                 "--config.debug.exit_delay_process=0"))
  want = _losses(straight)
  assert [s for s, _ in want] == list(range(1, NUM_STEPS + 1))  # one writer
  assert all(np.isfinite(v) for _, v in want) and len({v for _, v in want}) > 1
  summary = json.loads((straight / "summary.json").read_text())
  assert summary["processes"] == PROCESSES and summary["devices"] == 4
  assert summary["status"] == "completed"
  # Every process saved its data-iterator position in each checkpoint.
  for step in (2, 4):
    states = sorted(p.name for p in (straight / "checkpoints" / str(step) / "data").glob("*.json"))
    assert states == [f"process_{i}-of-{PROCESSES}.json" for i in range(PROCESSES)]
  assert model_ckpt.load_model(straight, expected_arch="syncnet_color").arch == "syncnet_color"

  # Kill the whole job after step 3 (checkpoint 2 is the last), rerun it.
  killed = root / "killed"
  procs = _start(killed, data, env, "--config.debug.pause_at_step=3")
  try:
    t0 = time.time()
    while not ((killed / "metrics.jsonl").exists()
               and any(s >= 3 for s, _ in _losses(killed))):
      assert all(p.poll() is None for p in procs), procs[0].communicate()[1][-3000:]
      assert time.time() - t0 < HANG_S, "step 3 not reached"
      time.sleep(0.2)
  finally:
    for p in procs:
      p.send_signal(signal.SIGKILL)
      p.wait()
  assert sorted(p.name for p in (killed / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]
  _finish(_start(killed, data, env, "--config.debug.pause_at_step=3",
                 f"--config.debug.exit_delay_s={LATE_S}", "--config.debug.exit_delay_process=1"))
  assert _losses(killed) == want                       # bit-identical
  assert json.loads((killed / "summary.json").read_text())["resumed_from"] == 2


def test_distributed_timeouts_come_from_the_config(monkeypatch):
  """The coordination timeouts reach jax.distributed, and bad ones are refused."""
  import jax  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import config_lib, train_lib  # pylint: disable=import-outside-toplevel
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  config = config_lib.base_config("syncnet")
  config.coordinator_address = "localhost:1234"
  config.num_processes, config.process_id = 2, 1
  config.distributed_shutdown_timeout_s = 4321
  train_lib._initialize_distributed(config)  # pylint: disable=protected-access
  assert calls[-1]["shutdown_timeout_seconds"] == 4321
  assert calls[-1]["initialization_timeout"] == config.distributed_init_timeout_s >= 600
  assert calls[-1]["heartbeat_timeout_seconds"] == config.distributed_heartbeat_timeout_s >= 300
  assert calls[-1]["process_id"] == 1
  config.coordinator_address = ""
  train_lib._initialize_distributed(config)  # pylint: disable=protected-access
  assert calls[-1]["shutdown_timeout_seconds"] == 4321 and "process_id" not in calls[-1]
  config.distributed_heartbeat_timeout_s = 0
  with pytest.raises(train_lib.TrainConfigError, match="timeouts must be positive"):
    train_lib._initialize_distributed(config)  # pylint: disable=protected-access
