"""Model directories (save_model/load_model), .pth import and the convert CLI."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

from lipsync_jax import checkpoint, convert, models

REPO = pathlib.Path(__file__).resolve().parents[1]
TINY = {"width_multiplier": 0.0625}


def _random_variables(arch: str, config: dict, seed: int = 0) -> dict:
  """Random float32 numpy variables of the right shapes (no costly real init)."""
  module = models.create(arch, **config)
  if arch == "syncnet_color":
    args = (np.zeros((1, 80, 16, 1), np.float32), np.zeros((1, 48, 96, 15), np.float32))
  else:
    args = (np.zeros((1, 96, 96, 3), np.float32),)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes)


def _assert_trees_equal(a, b):
  assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    assert np.asarray(x).dtype == np.float32
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _no_leftovers(folder: pathlib.Path):
  return [p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def tiny_sync():
  return _random_variables("syncnet_color", TINY)


def test_save_load_round_trip(tmp_path, tiny_sync):
  path = tmp_path / "models" / "sync"
  checkpoint.save_model(path, "syncnet_color", TINY, tiny_sync, extra_meta={"step": 12})
  meta = json.loads((path / "lipsync_meta.json").read_text())
  assert meta["format"] == 1 and meta["arch"] == "syncnet_color" and meta["config"] == TINY
  assert meta["step"] == 12
  loaded = checkpoint.load_model(path, expected_arch="syncnet_color")
  assert loaded.arch == "syncnet_color" and loaded.config == TINY
  assert isinstance(loaded.module, models.model_class("syncnet_color"))
  assert loaded.module.width_multiplier == 0.0625
  _assert_trees_equal(loaded.variables, tiny_sync)

  # Overwriting replaces the old model and leaves nothing behind.
  other = jax.tree_util.tree_map(lambda a: a + 1, tiny_sync)
  checkpoint.save_model(path, "syncnet_color", TINY, other)
  _assert_trees_equal(checkpoint.load_model(path).variables, other)
  assert _no_leftovers(path.parent) == []


def test_relative_paths_load(tmp_path, tiny_sync, monkeypatch):
  """`--syncnet runs/expert`: a path relative to the working directory."""
  checkpoint.save_model(tmp_path / "models" / "sync", "syncnet_color", TINY, tiny_sync)
  monkeypatch.chdir(tmp_path)
  _assert_trees_equal(checkpoint.load_model("models/sync").variables, tiny_sync)


def test_load_training_workdir(tmp_path, tiny_sync):
  best = jax.tree_util.tree_map(lambda a: -a, tiny_sync)
  checkpoint.save_model(tmp_path / "model", "syncnet_color", TINY, tiny_sync)
  checkpoint.save_model(tmp_path / "model_best", "syncnet_color", TINY, best)
  _assert_trees_equal(checkpoint.load_model(tmp_path).variables, tiny_sync)
  _assert_trees_equal(checkpoint.load_model(tmp_path, prefer_best=True).variables, best)


def test_failed_save_leaves_no_model(tmp_path, tiny_sync, monkeypatch):
  path = tmp_path / "sync"
  real_write_text = pathlib.Path.write_text

  def failing_write_text(self, *args, **kwargs):
    if self.name == checkpoint.META_FILE:
      raise OSError("disk full")
    return real_write_text(self, *args, **kwargs)

  monkeypatch.setattr(pathlib.Path, "write_text", failing_write_text)
  with pytest.raises(OSError, match="disk full"):
    checkpoint.save_model(path, "syncnet_color", TINY, tiny_sync)
  assert not path.exists()
  assert _no_leftovers(tmp_path) == []

  # A failed overwrite keeps the previous model intact.
  monkeypatch.setattr(pathlib.Path, "write_text", real_write_text)
  checkpoint.save_model(path, "syncnet_color", TINY, tiny_sync)
  monkeypatch.setattr(pathlib.Path, "write_text", failing_write_text)
  with pytest.raises(OSError):
    checkpoint.save_model(path, "syncnet_color", TINY, jax.tree_util.tree_map(np.zeros_like,
                                                                              tiny_sync))
  monkeypatch.setattr(pathlib.Path, "write_text", real_write_text)
  _assert_trees_equal(checkpoint.load_model(path).variables, tiny_sync)
  assert _no_leftovers(tmp_path) == []


def test_wrong_arch_and_bad_paths(tmp_path, tiny_sync):
  checkpoint.save_model(tmp_path / "sync", "syncnet_color", TINY, tiny_sync)
  with pytest.raises(checkpoint.CheckpointError) as e:
    checkpoint.load_model(tmp_path / "sync", expected_arch=("wav2lip", "lpips_attnwav2lip"))
  assert str(e.value) == ("checkpoint is a syncnet_color model, expected one of: "
                          "wav2lip, lpips_attnwav2lip")
  assert issubclass(checkpoint.CheckpointError, ValueError)
  with pytest.raises(checkpoint.CheckpointError, match="no such checkpoint"):
    checkpoint.load_model(tmp_path / "missing")
  (tmp_path / "empty").mkdir()
  with pytest.raises(checkpoint.CheckpointError, match="holds no model"):
    checkpoint.load_model(tmp_path / "empty")
  with pytest.raises(ValueError, match="unknown architecture"):
    checkpoint.save_model(tmp_path / "x", "nope", {}, tiny_sync)
  assert not (tmp_path / "x").exists()


def test_missing_torch_gives_install_hint(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "torch", None)
  with pytest.raises(convert.ConversionError, match=r"pip install 'lipsync-jax\[torch\]'"):
    convert.load_torch_checkpoint(str(tmp_path / "x.pth"))


@pytest.fixture(scope="module")
def upstream_pth(tmp_path_factory):
  """A full-size SyncNet_color checkpoint as upstream training writes it."""
  variables = _random_variables("syncnet_color", {}, seed=1)
  sd = convert.flax_to_torch("syncnet_color", variables, include_num_batches_tracked=True)
  assert sd["face_encoder.0.conv_block.1.num_batches_tracked"].dtype == np.int64
  path = tmp_path_factory.mktemp("pth") / "lipsync_expert.pth"
  torch.save({"state_dict": {"module." + k: torch.from_numpy(v) for k, v in sd.items()},
              "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]},
              "global_step": 3000, "global_epoch": 7}, path)
  return path, variables


def test_load_model_converts_pth(upstream_pth):
  path, variables = upstream_pth
  loaded = checkpoint.load_model(path, expected_arch="syncnet_color")
  assert loaded.arch == "syncnet_color" and loaded.config == {}
  _assert_trees_equal(loaded.variables, variables)
  with pytest.raises(checkpoint.CheckpointError,
                     match="is a syncnet_color model, expected one of: wav2lip$"):
    checkpoint.load_model(path, expected_arch="wav2lip")


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
  return subprocess.run([sys.executable, "-m", "lipsync_jax.convert", *map(str, args)],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)  # catches hangs only


def test_convert_cli(upstream_pth, tmp_path):
  path, variables = upstream_pth
  out = tmp_path / "expert"
  result = _cli(path, out)
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip().splitlines() == [
      f"converted {path} -> {out}: syncnet_color, 16,435,072 parameters"]
  loaded = checkpoint.load_model(out, expected_arch="syncnet_color")
  _assert_trees_equal(loaded.variables, variables)
  assert loaded.meta["source"]["global_step"] == 3000



def test_convert_cli_errors_and_unsafe_pickle(tmp_path, tiny_sync, capsys):
  assert convert.main([str(tmp_path / "missing.pth"), str(tmp_path / "never")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
  assert not (tmp_path / "never").exists()

  # A checkpoint holding a non-tensor object: refused by weights_only loading,
  # accepted with --unsafe-pickle. It is a tiny model: its width is inferred.
  sd = convert.flax_to_torch("syncnet_color", tiny_sync)
  path = tmp_path / "tiny.pth"
  torch.save({"state_dict": {k: torch.from_numpy(v) for k, v in sd.items()},
              "hparams": argparse_namespace()}, path)
  assert convert.main([str(path), str(tmp_path / "never")]) == 2
  err = capsys.readouterr().err
  assert err.startswith("error: cannot read") and "--unsafe-pickle" in err
  assert len(err.strip().splitlines()) == 1
  assert convert.main([str(path), str(tmp_path / "never"), "--arch", "wav2lip",
                       "--unsafe-pickle"]) == 2
  assert "missing keys" in capsys.readouterr().err
  assert not (tmp_path / "never").exists()

  assert convert.main([str(path), str(tmp_path / "tiny"), "--unsafe-pickle"]) == 0
  loaded = checkpoint.load_model(tmp_path / "tiny")
  assert loaded.config == {"width_multiplier": 0.0625}
  _assert_trees_equal(loaded.variables, tiny_sync)


def argparse_namespace():
  import argparse
  return argparse.Namespace(lr=1e-4)
