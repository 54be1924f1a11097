"""High-resolution training (192 px faces): the data's face size, exact
resume, the exported model at its size (the 1-device-vs-mesh check is in
test_train_sharding)."""

from __future__ import annotations

import pathlib

import pytest

from lipsync_jax import checkpoint as model_ckpt
from lipsync_jax import inference
from lipsync_jax.data import testing as data_testing
from lipsync_jax.train import config_lib
from lipsync_jax.train import summary as summary_lib
from lipsync_jax.train import train_lib

REPO = pathlib.Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("xla_compilation_cache")


def hq_config(data, steps, arg="hq192_tiny"):
  c = config_lib.load(REPO / "configs" / "lpips_attnwav2lip.py", arg)
  c.data_dir = str(data)
  c.num_steps = steps
  c.batch_size = 2
  c.mesh_devices = 1
  c.eval_every = 100
  c.eval_batches = 1
  c.checkpoint_every = 1
  c.sample_every = 100
  c.progress_bar = False
  c.syncnet_checkpoint = "random"
  c.sync_schedule.initial = 0.03   # the expert's loss through the resize, from step 1
  return c


def losses(workdir):
  return [(r["step"], r["loss"]) for r in summary_lib.read_jsonl(str(workdir / "metrics.jsonl"))]


@pytest.mark.slow
def test_hq192_trains_resumes_exactly_and_exports_its_size(tmp_path):
  data = data_testing.write_synthetic_dataset(tmp_path / "d192", num_clips=3, num_frames=24,
                                              img_size=192)
  straight = tmp_path / "straight"
  s = train_lib.train_and_evaluate(hq_config(data, 2), str(straight))
  want = losses(straight)
  assert [k for k, _ in want] == [1, 2] and want[0][1] != want[1][1]
  first = summary_lib.read_jsonl(str(straight / "metrics.jsonl"))[0]
  assert first["sync"] > 0 and first["lpips"] > 0
  assert s["status"] == "completed"
  # A finished 1-step run, extended to 2 steps, continues exactly (the
  # variants' tests resume a killed run instead).
  resumed = tmp_path / "resumed"
  train_lib.train_and_evaluate(hq_config(data, 1), str(resumed))
  assert train_lib.train_and_evaluate(hq_config(data, 2), str(resumed))["resumed_from"] == 1
  assert losses(resumed) == want
  loaded = model_ckpt.load_model(resumed / "model", expected_arch="lpips_attnwav2lip")
  assert loaded.module.face_size == 192
  syncer = inference.LipSyncer(loaded.module, loaded.variables, batch_size=2)
  assert syncer.face_size == 192


def test_face_size_must_match_the_data(tmp_path):
  data96 = data_testing.write_synthetic_dataset(tmp_path / "d96", num_clips=2, num_frames=12)
  with pytest.raises(train_lib.TrainConfigError, match="192 px faces.*holds 96 px crops"):
    train_lib.train_and_evaluate(hq_config(data96, 1), str(tmp_path / "run"))
  assert not (tmp_path / "run" / "checkpoints").exists()
