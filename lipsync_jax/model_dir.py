"""The model directory: the one on-disk form of a lipsync-jax model.

    save_model("models/w2l", "wav2lip", {"width_multiplier": 1.0}, variables)
    loaded = read_model_dir(pathlib.Path("models/w2l"))

Layout:

  PATH/lipsync_meta.json   {"format": 1, "arch": ..., "config": {create() kwargs},
                            "lipsync_jax_version": ..., "created": ..., **extra_meta}
  PATH/variables/          orbax StandardCheckpointer tree {"params", "batch_stats"}

Both the trainer and the PyTorch converter write it; `checkpoint.load_model`
reads it and the other checkpoint forms. This module imports neither of
them, so neither depends on the other.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import shutil
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

FORMAT = 1
META_FILE = "lipsync_meta.json"
VARIABLES_DIR = "variables"
_RESERVED = ("format", "arch", "config")


class CheckpointError(ValueError):
  """A model checkpoint is missing, unreadable or of the wrong kind."""


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  """A model ready to run: `module.apply(variables, ...)`."""
  arch: str
  config: dict[str, Any]
  variables: dict[str, Any]
  module: Any  # flax.linen.Module
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)


def _json_default(v: Any) -> Any:
  try:
    return jnp.dtype(v).name  # dtypes such as jnp.bfloat16 in a config
  except TypeError:
    pass
  if isinstance(v, np.generic):
    return v.item()
  raise TypeError(f"config value {v!r} is not JSON-serialisable")


def _plain_config(config: Any) -> dict[str, Any]:
  if hasattr(config, "to_dict"):  # ml_collections.ConfigDict
    config = config.to_dict()
  return dict(config or {})


def _to_host(variables: Mapping[str, Any]) -> dict[str, Any]:
  """Plain nested dicts of numpy arrays, without empty collections."""
  def plain(tree):
    if isinstance(tree, Mapping):
      return {str(k): plain(v) for k, v in tree.items()}
    return np.asarray(jax.device_get(tree))
  return {k: plain(v) for k, v in variables.items() if jax.tree_util.tree_leaves(v)}


def _local_checkpointer():
  """An orbax checkpointer for this process alone.

  Model directories hold host (numpy) arrays and are written by one process
  (process 0 in training) and read by any: a default checkpointer would wait
  at a barrier for the other processes of a multi-host job, which never come.
  """
  import jax
  import orbax.checkpoint as ocp
  me = jax.process_index()
  return ocp.StandardCheckpointer(multiprocessing_options=ocp.options.MultiprocessingOptions(
      primary_host=me, active_processes={me}))


def save_model(path: str | os.PathLike, arch: str, config: Mapping[str, Any] | Any,
               variables: Mapping[str, Any], extra_meta: Mapping[str, Any] | None = None) -> None:
  """Writes a model directory at `path` atomically (replacing any old one).

  Args:
    path: the directory to write.
    arch: a key of `lipsync_jax.models.ARCHS`.
    config: the create() kwargs (dict or ConfigDict) of the model.
    variables: {"params": ..., "batch_stats": ...} (jax or numpy arrays).
    extra_meta: JSON-serialisable entries added to lipsync_meta.json.
  """
  from lipsync_jax import __version__, models
  cls = models.model_class(arch)  # validates arch
  path = pathlib.Path(path).absolute()
  if "params" not in variables:
    raise CheckpointError("variables must hold a 'params' collection")
  config = _plain_config(config)
  # A kwarg whose default changed is always written down, so that the file
  # keeps meaning what it was trained as.
  for k in getattr(cls, "LEGACY_DEFAULTS", {}):
    config.setdefault(k, getattr(cls, k))
  meta = {"format": FORMAT, "arch": arch, "config": config,
          "lipsync_jax_version": __version__,
          "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
  for k, v in dict(extra_meta or {}).items():
    if k in _RESERVED:
      raise CheckpointError(f"extra_meta may not override {k!r}")
    meta[k] = v
  try:
    meta_text = json.dumps(meta, indent=2, default=_json_default)
  except TypeError as e:
    raise CheckpointError(f"cannot store model metadata: {e}") from None

  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
  old = path.with_name(f"{path.name}.old-{os.getpid()}")
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    tmp.mkdir()
    with _local_checkpointer() as ckptr:
      ckptr.save(tmp / VARIABLES_DIR, _to_host(variables))
      ckptr.wait_until_finished()
    (tmp / META_FILE).write_text(meta_text)
    if path.exists():
      os.replace(path, old)
    os.replace(tmp, path)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    if old.exists() and not path.exists():
      os.replace(old, path)
    raise
  shutil.rmtree(old, ignore_errors=True)


def is_model_dir(path: str | os.PathLike) -> bool:
  return (pathlib.Path(path) / META_FILE).is_file()


def check_arch(arch: str, expected_arch: str | Sequence[str] | None, what: str) -> None:
  if expected_arch is None:
    return
  expected = (expected_arch,) if isinstance(expected_arch, str) else tuple(expected_arch)
  if arch not in expected:
    raise CheckpointError(f"{what} is a {arch} model, expected one of: {', '.join(expected)}")


def read_model_dir(path: pathlib.Path, expected_arch=None) -> LoadedModel:
  from lipsync_jax import models
  try:
    meta = json.loads((path / META_FILE).read_text())
  except (OSError, ValueError) as e:
    raise CheckpointError(f"cannot read {path / META_FILE}: {e}") from None
  if not isinstance(meta, dict) or meta.get("format") != FORMAT or "arch" not in meta:
    raise CheckpointError(f"{path / META_FILE} is not a format-{FORMAT} lipsync-jax model file")
  arch, config = meta["arch"], dict(meta.get("config") or {})
  if isinstance(config.get("dtype"), str):
    config["dtype"] = jnp.dtype(config["dtype"])
  if arch not in models.ARCHS:
    raise CheckpointError(f"checkpoint {path} has unknown arch {arch!r}")
  check_arch(arch, expected_arch, "checkpoint")
  for k, v in getattr(models.model_class(arch), "LEGACY_DEFAULTS", {}).items():
    config.setdefault(k, v)   # written before the kwarg existed
  if not (path / VARIABLES_DIR).is_dir():
    raise CheckpointError(f"checkpoint {path} has no {VARIABLES_DIR}/ folder")
  try:
    with _local_checkpointer() as ckptr:
      variables = ckptr.restore(path / VARIABLES_DIR)
  except Exception as e:  # orbax raises assorted types for corrupt trees
    raise CheckpointError(f"cannot restore {path / VARIABLES_DIR}: {e}") from None
  return LoadedModel(arch, config, dict(variables), models.create(arch, **config), meta)
