"""PyTorch (upstream Wav2Lip) <-> Flax weight conversion, and its CLI.

    python -m lipsync_jax.convert wav2lip_gan.pth models/wav2lip_gan [--arch wav2lip]

The Flax models name their submodules after the PyTorch modules, so a Flax
variable path maps to a PyTorch key by renaming alone:

  Flax path                                      PyTorch key
  params/face_encoder_blocks_1_2/conv/kernel     face_encoder_blocks.1.2.conv_block.0.weight
  params/face_encoder_blocks_1_2/bn/scale        face_encoder_blocks.1.2.conv_block.1.weight
  batch_stats/.../bn/mean, var                   ....conv_block.1.running_mean, running_var
  params/audio_encoder/layers_3/conv/bias        audio_encoder.3.conv_block.0.bias
  params/face_encoder_7/...  (syncnet_color)     face_encoder.7.conv_block...
  params/output_block_1/kernel                   output_block.1.weight
  params/binary_pred_0/kernel                    binary_pred.0.weight

i.e. `layers_K` -> `K`, `name_i_j` -> `name.i.j`, `conv` -> `conv_block.0`,
`bn` -> `conv_block.1`, `kernel`/`scale` -> `weight`, `mean`/`var` ->
`running_mean`/`running_var`. Tensor layouts:

  Conv2d weight (out, in, kh, kw)           -> kernel (kh, kw, in, out)
  ConvTranspose2d weight (in, out, kh, kw)  -> kernel (kh, kw, in, out), no flip
                                               (`layers.ConvTransposeTorch`)

PyTorch is only imported to read `.pth` files (`load_torch_checkpoint`).
"""

from __future__ import annotations

import argparse
import functools
import re
import sys
from typing import Any, Iterable, Mapping

import numpy as np

from lipsync_jax import model_dir

CONVERTIBLE_ARCHS = ("wav2lip", "syncnet_color", "wav2lip_disc_qual")

# First conv of each arch: its output channel count at width 1, used to infer
# the width multiplier of a state dict.
_FIRST_CONV = {
    "wav2lip": ("face_encoder_blocks.0.0.conv_block.0.weight", 16),
    "syncnet_color": ("face_encoder.0.conv_block.0.weight", 32),
    "wav2lip_disc_qual": ("face_encoder_blocks.0.0.conv_block.0.weight", 32),
}

# Flax kernels that belong to a transposed conv (PyTorch (in, out, kh, kw)).
_TRANSPOSED = {
    "wav2lip": re.compile(r"^face_decoder_blocks_[1-9]\d*_0/conv/kernel$"),
}

# Top-level modules in upstream definition (= state_dict) order.
_TOP_ORDER = {
    "wav2lip": ("face_encoder_blocks", "audio_encoder", "face_decoder_blocks", "output_block"),
    "syncnet_color": ("face_encoder", "audio_encoder"),
    "wav2lip_disc_qual": ("face_encoder_blocks", "binary_pred"),
}
_LEAF_ORDER = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")

_MAX_NAMES = 10
_TORCH_HINT = ("PyTorch is needed to read .pth files: pip install 'lipsync-jax[torch]' "
               "(or pip install torch==2.13.0 for the CPU build)")


class ConversionError(ValueError):
  """A state dict does not match the architecture it is converted to."""


# -----------------------------------------------------------------------------
# Naming.
# -----------------------------------------------------------------------------

_LEAF_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias",
               "mean": "running_mean", "var": "running_var"}


def _torch_segment(seg: str) -> str:
  if seg == "conv":
    return "conv_block.0"
  if seg == "bn":
    return "conv_block.1"
  m = re.fullmatch(r"layers_(\d+)", seg)
  if m:
    return m.group(1)
  return re.sub(r"_(\d+)", r".\1", seg)


def flax_path_to_torch_key(path: Iterable[str]) -> str:
  """('face_decoder_blocks_2_0', 'conv', 'kernel') -> 'face_decoder_blocks.2.0.conv_block.0.weight'."""
  *modules, leaf = path
  return ".".join([_torch_segment(s) for s in modules] + [_LEAF_NAMES[leaf]])


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()):
  for k, v in tree.items():
    if isinstance(v, Mapping):
      yield from _flatten(v, prefix + (k,))
    else:
      yield prefix + (k,), v


def _set(tree: dict, path: tuple[str, ...], value: Any) -> None:
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value


def _upstream_order(arch: str, key: str) -> tuple:
  """Sort key reproducing upstream `state_dict()` order."""
  parts = key.split(".")
  top = _TOP_ORDER[arch]
  rank = top.index(parts[0]) if parts[0] in top else len(top)
  leaf = _LEAF_ORDER.index(parts[-1]) if parts[-1] in _LEAF_ORDER else len(_LEAF_ORDER)
  return (rank, tuple(int(p) for p in parts[1:-1] if p.isdigit()), leaf, key)


def _names(items: Iterable[str]) -> str:
  items = list(items)
  head = ", ".join(items[:_MAX_NAMES])
  return head + (f", ... ({len(items) - _MAX_NAMES} more)" if len(items) > _MAX_NAMES else "")


# -----------------------------------------------------------------------------
# State dict handling.
# -----------------------------------------------------------------------------

def _to_numpy(v: Any) -> np.ndarray:
  if hasattr(v, "detach") and hasattr(v, "cpu"):  # a torch.Tensor, without importing torch
    v = v.detach().cpu()
    if v.is_floating_point():
      v = v.float()  # numpy has no bfloat16
    return v.numpy()
  return np.asarray(v)


def unwrap_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
  """Returns the bare model state dict of a checkpoint as torch.load gives it.

  Accepts upstream training checkpoints ({"state_dict": ..., "optimizer": ...,
  "global_step": ..., "global_epoch": ...}) or a bare state dict; strips
  `module.` prefixes (DataParallel) and drops `num_batches_tracked` buffers.
  """
  if not isinstance(checkpoint, Mapping):
    raise ConversionError(f"expected a state dict (a mapping), got {type(checkpoint).__name__}")
  sd = checkpoint.get("state_dict", checkpoint)
  if not isinstance(sd, Mapping):
    raise ConversionError("checkpoint 'state_dict' entry is not a mapping")
  out = {}
  for k, v in sd.items():
    if not isinstance(k, str):
      raise ConversionError(f"state dict key {k!r} is not a string")
    while k.startswith("module."):
      k = k[len("module."):]
    if k.endswith("num_batches_tracked"):
      continue
    out[k] = v
  return out


def infer_arch(state_dict: Mapping[str, Any]) -> str:
  """Guesses the architecture of an upstream state dict from its keys."""
  keys = unwrap_state_dict(state_dict).keys()
  has = lambda prefix: any(k.startswith(prefix) for k in keys)
  if has("face_decoder_blocks.") and has("audio_encoder."):
    return "wav2lip"
  if has("binary_pred."):
    return "wav2lip_disc_qual"
  if has("face_encoder.") and has("audio_encoder."):
    return "syncnet_color"
  raise ConversionError("cannot tell the architecture of this state dict (keys start with "
                        f"{_names(sorted({k.split('.')[0] for k in keys}))}); pass the arch "
                        f"explicitly, one of: {', '.join(CONVERTIBLE_ARCHS)}")


def infer_config(arch: str, state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Model config (create() kwargs) of an upstream state dict: {} at full width."""
  sd = unwrap_state_dict(state_dict)
  key, full = _FIRST_CONV[_check_arch(arch)]
  if key not in sd:
    return {}
  width = int(np.shape(_to_numpy(sd[key]))[0]) / full
  return {} if width == 1.0 else {"width_multiplier": width}


def _check_arch(arch: str) -> str:
  if arch not in CONVERTIBLE_ARCHS:
    raise ConversionError(f"no PyTorch conversion for arch {arch!r}; expected one of: "
                          f"{', '.join(CONVERTIBLE_ARCHS)}")
  return arch


@functools.lru_cache(maxsize=16)
def _expected(arch: str, config_items: tuple[tuple[str, Any], ...]) -> dict[str, tuple]:
  """torch key -> (collection, flax path, flax shape, transposed) for a model."""
  import jax
  import jax.numpy as jnp
  from lipsync_jax import models

  module = models.create(arch, **dict(config_items))
  if arch == "wav2lip":
    args = (jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, 96, 96, 6)))
  elif arch == "syncnet_color":
    args = (jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, 48, 96, 15)))
  else:
    args = (jnp.zeros((1, 96, 96, 3)),)
  shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), *args))
  transposed = _TRANSPOSED.get(arch)
  out = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in _flatten(shapes.get(collection, {})):
      is_t = bool(transposed and transposed.match("/".join(path)))
      out[flax_path_to_torch_key(path)] = (collection, path, tuple(leaf.shape), is_t)
  return {k: out[k] for k in sorted(out, key=functools.partial(_upstream_order, arch))}


def _to_flax_layout(a: np.ndarray, is_transposed: bool) -> np.ndarray:
  if a.ndim == 4:
    return a.transpose(2, 3, 0, 1) if is_transposed else a.transpose(2, 3, 1, 0)
  return a


def _to_torch_layout(a: np.ndarray, is_transposed: bool) -> np.ndarray:
  if a.ndim == 4:
    return a.transpose(2, 3, 0, 1) if is_transposed else a.transpose(3, 2, 0, 1)
  return a


def _torch_shape(shape: tuple[int, ...], is_transposed: bool) -> tuple[int, ...]:
  if len(shape) == 4:
    order = (2, 3, 0, 1) if is_transposed else (3, 2, 0, 1)
    return tuple(shape[i] for i in order)
  return tuple(shape)


def torch_to_flax(arch: str, state_dict: Mapping[str, Any],
                  config: Mapping[str, Any] | None = None) -> dict[str, dict]:
  """Converts an upstream PyTorch state dict to Flax variables.

  Args:
    arch: one of CONVERTIBLE_ARCHS.
    state_dict: as torch.load gives it: a bare state dict or a training
      checkpoint dict with "state_dict"; values are torch tensors or arrays.
    config: the model's create() kwargs; inferred from the weights when None.
  Returns:
    {"params": ..., "batch_stats": ...} nested dicts of float32 numpy arrays
    ("batch_stats" is absent for the discriminator).
  Raises:
    ConversionError naming missing, unexpected or mis-shaped keys.
  """
  _check_arch(arch)
  sd = unwrap_state_dict(state_dict)
  if config is None:
    config = infer_config(arch, sd)
  expected = _expected(arch, tuple(sorted(dict(config).items())))
  missing = [k for k in expected if k not in sd]
  unexpected = [k for k in sd if k not in expected]
  problems = []
  if missing:
    problems.append(f"missing keys: {_names(missing)}")
  if unexpected:
    problems.append(f"unexpected keys: {_names(unexpected)}")
  variables: dict[str, dict] = {}
  bad_shapes = []
  for key, (collection, path, shape, is_t) in expected.items():
    if key not in sd:
      continue
    a = _to_flax_layout(_to_numpy(sd[key]).astype(np.float32), is_t)
    if a.shape != shape:
      bad_shapes.append(f"{key} (expected {_torch_shape(shape, is_t)}, "
                        f"got {tuple(np.shape(_to_numpy(sd[key])))})")
      continue
    _set(variables.setdefault(collection, {}), path, a)
  if bad_shapes:
    problems.append(f"mis-shaped keys: {_names(bad_shapes)}")
  if problems:
    raise ConversionError(f"state dict does not match {arch}: " + "; ".join(problems))
  return variables


def flax_to_torch(arch: str, variables: Mapping[str, Any],
                  include_num_batches_tracked: bool = False) -> dict[str, np.ndarray]:
  """Inverse of `torch_to_flax`: Flax variables -> PyTorch-layout numpy state dict.

  Keys come in upstream `state_dict()` order. With `include_num_batches_tracked`
  every BN layer also gets an int64 zero `num_batches_tracked`.
  """
  transposed = _TRANSPOSED.get(_check_arch(arch))
  out: dict[str, np.ndarray] = {}
  for collection in ("params", "batch_stats"):
    for path, leaf in _flatten(variables.get(collection, {})):
      is_t = bool(transposed and transposed.match("/".join(path)))
      key = flax_path_to_torch_key(path)
      out[key] = _to_torch_layout(np.asarray(leaf, np.float32), is_t)
      if include_num_batches_tracked and path[-1] == "var":
        out[key.replace("running_var", "num_batches_tracked")] = np.zeros((), np.int64)
  return {k: out[k] for k in sorted(out, key=functools.partial(_upstream_order, arch))}


# -----------------------------------------------------------------------------
# Reading .pth files and the CLI.
# -----------------------------------------------------------------------------

def load_torch_checkpoint(path: str, unsafe_pickle: bool = False) -> Mapping[str, Any]:
  """torch.load on the CPU, safely (weights_only) unless `unsafe_pickle`.

  Raises ConversionError when torch is missing or the file cannot be read.
  """
  try:
    import torch
  except ImportError:
    raise ConversionError(_TORCH_HINT) from None
  try:
    return torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
  except FileNotFoundError:
    raise ConversionError(f"no such file: {path}") from None
  except Exception as e:  # torch raises UnpicklingError, RuntimeError, ...
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    hint = ("" if unsafe_pickle else
            " (if you trust this file, retry with --unsafe-pickle to allow arbitrary pickles)")
    raise ConversionError(f"cannot read {path} with torch.load: {reason}{hint}") from None


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  parser = argparse.ArgumentParser(
      prog="python -m lipsync_jax.convert",
      description="Convert an upstream PyTorch Wav2Lip checkpoint (.pth) into a "
                  "lipsync-jax model directory.")
  parser.add_argument("input", help="PyTorch checkpoint (.pth)")
  parser.add_argument("output", help="model directory to write")
  parser.add_argument("--arch", choices=CONVERTIBLE_ARCHS,
                      help="architecture (default: inferred from the keys)")
  parser.add_argument("--unsafe-pickle", action="store_true",
                      help="allow torch.load to unpickle arbitrary objects (only for "
                           "trusted files that weights_only loading rejects)")
  return parser


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    raw = load_torch_checkpoint(args.input, unsafe_pickle=args.unsafe_pickle)
    arch = args.arch or infer_arch(raw)
    config = infer_config(arch, raw)
    variables = torch_to_flax(arch, raw, config)
    meta = {"source": {"file": str(args.input)}}
    if isinstance(raw, Mapping):
      for k in ("global_step", "global_epoch"):
        if isinstance(raw.get(k), int):
          meta["source"][k] = raw[k]
    model_dir.save_model(args.output, arch, config, variables, extra_meta=meta)
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  n = sum(int(np.prod(a.shape)) for a in (leaf for _, leaf in _flatten(variables["params"])))
  print(f"converted {args.input} -> {args.output}: {arch}, {n:,} parameters")
  return 0


if __name__ == "__main__":
  sys.exit(main())
