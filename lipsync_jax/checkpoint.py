"""Loading models: a model directory, a training workdir or an upstream `.pth`.

    save_model("models/w2l", "wav2lip", {"width_multiplier": 1.0}, variables)
    loaded = load_model("models/w2l", expected_arch=("wav2lip", "lpips_attnwav2lip"))
    out = loaded.module.apply(loaded.variables, audio, faces)

The model directory (its layout, `save_model`) lives in `model_dir`, and is
re-exported here. `load_model` also accepts a training workdir (holding
`model/` and `model_best/`, exported by the trainer) and an upstream PyTorch
`.pth` (converted on the fly by `convert`; needs torch).
"""

from __future__ import annotations

import os
import pathlib
from typing import Sequence

from lipsync_jax import convert
from lipsync_jax.model_dir import (FORMAT, META_FILE, VARIABLES_DIR, CheckpointError,
                                   LoadedModel, check_arch, is_model_dir, read_model_dir,
                                   save_model)

__all__ = ["FORMAT", "META_FILE", "VARIABLES_DIR", "CheckpointError", "LoadedModel",
           "is_model_dir", "load_model", "save_model"]


def _read_pth(path: pathlib.Path, expected_arch, unsafe_pickle: bool) -> LoadedModel:
  from lipsync_jax import models  # pylint: disable=import-outside-toplevel
  try:
    raw = convert.load_torch_checkpoint(str(path), unsafe_pickle=unsafe_pickle)
    arch = convert.infer_arch(raw)
    check_arch(arch, expected_arch, f"{path.name}")
    config = convert.infer_config(arch, raw)
    variables = convert.torch_to_flax(arch, raw, config)
  except convert.ConversionError as e:
    raise CheckpointError(str(e)) from None
  meta = {"format": FORMAT, "arch": arch, "config": config, "source": {"file": str(path)}}
  return LoadedModel(arch, config, variables, models.create(arch, **config), meta)


def load_model(path: str | os.PathLike, expected_arch: str | Sequence[str] | None = None,
               prefer_best: bool = False, unsafe_pickle: bool = False) -> LoadedModel:
  """Loads a model directory, a training workdir or an upstream `.pth`.

  Args:
    path: a directory written by `save_model`; a training workdir (loads its
      `model/`, or `model_best/` when `prefer_best` and it exists); or a
      PyTorch `.pth`/`.pt` file, converted on the fly (needs torch).
    expected_arch: an arch name or several; anything else raises.
    prefer_best: for a workdir, load `model_best/` rather than `model/`.
    unsafe_pickle: let torch.load unpickle arbitrary objects (trusted files only).
  Returns:
    LoadedModel(arch, config, variables (numpy arrays), module, meta).
  Raises:
    CheckpointError (a ValueError) with a one-line reason.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise CheckpointError(f"no such checkpoint: {path}")
  path = path.absolute()  # orbax restores absolute paths only
  if path.is_file():
    if path.suffix.lower() in (".pth", ".pt", ".ckpt", ".bin"):
      return _read_pth(path, expected_arch, unsafe_pickle)
    raise CheckpointError(f"{path} is not a model: expected a model directory, a training "
                          "workdir or a PyTorch .pth file")
  if is_model_dir(path):
    return read_model_dir(path, expected_arch)
  if is_model_dir(path / "model"):
    best = path / "model_best"
    return read_model_dir(best if prefer_best and is_model_dir(best) else path / "model",
                           expected_arch)
  raise CheckpointError(f"{path} holds no model: expected {META_FILE} in it or in its model/ "
                        "folder (a training workdir)")
