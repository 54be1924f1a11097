"""Building blocks shared by the models. All tensors are NHWC.

The blocks mirror upstream Wav2Lip's `models/conv.py` (ConvBNReLU with an
optional identity residual, ConvTranspose-BN-ReLU, Conv-LeakyReLU) so that
PyTorch checkpoints map onto them one to one, but the transposed convolution
is computed in a way that is both exact and fast on every backend (see
`conv_transpose_torch`), and the plain convolutions go through `conv2d`, whose
kernel gradient is computed as per-tap matmuls where that beats XLA:CPU's
convolution filter-gradient (see `conv2d`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn
from flax.linen import dtypes as flax_dtypes

Dtype = Any
IntPair = int | tuple[int, int]


def _pair(v: IntPair) -> tuple[int, int]:
  return (v, v) if isinstance(v, int) else tuple(v)


def scaled(channels: int, width_multiplier: float) -> int:
  """Channel count scaled by a width multiplier, at least 1."""
  return max(1, int(round(channels * width_multiplier)))


FACE_SIZES = (96, 128, 192, 256, 384, 512)


def extra_levels(face_size: int) -> int:
  """Stride-2 levels a `face_size` px face needs beyond the 96/128 px layout.

  Wav2Lip's U-Nets halve a 96 px face 5 times to 3x3 (128: 4x4) before the
  k3 (k4) p0 bottleneck; a larger face gets k more halvings, where
  face_size / 2**k is 96 or 128: 0 for 96 and 128, 1 for 192 and 256, 2 for
  384 and 512.

  Raises:
    ValueError: for any other size.
  """
  for k in range(3):
    if face_size in (96 << k, 128 << k):
      return k
  raise ValueError(f"face size must be one of {FACE_SIZES}, got {face_size}")


def bottleneck_side(face_size: int) -> int:
  """The side of the map the U-Nets' last k x k p0 conv reduces to 1x1: 3
  for 96, 192, 384 px faces; 4 for 128, 256, 512."""
  return face_size >> (5 + extra_levels(face_size))


_DN = ("NHWC", "HWIO", "NHWC")
Padding2D = IntPair | Sequence[tuple[int, int]]


# -----------------------------------------------------------------------------
# 2-D convolution with a fast kernel gradient.
# -----------------------------------------------------------------------------

# `conv2d(method="auto")` uses the per-tap kernel gradient when
# Ho * Wo * Cin * Cout (per sample and tap) is at least this. Measured on
# XLA:CPU (bench/README.md): below it XLA's own filter gradient is as fast or
# faster (small spatial sizes, or few channels such as the 6->16 k7 stem);
# above it the per-tap matmuls are 1.5-9x faster.
TAPS_MIN_WORK = 8 * 2**20
IMAGES_PER_STEP = 2  # kernel_grad_taps, stride 1: images per loop step


def _explicit_padding(padding: Padding2D) -> tuple[tuple[int, int], tuple[int, int]]:
  """int | (ph, pw) | ((top, bottom), (left, right)) -> the last form."""
  if isinstance(padding, int):
    return ((padding, padding), (padding, padding))
  ph, pw = padding
  pad = tuple((p, p) if isinstance(p, int) else (int(p[0]), int(p[1])) for p in (ph, pw))
  if min(min(p) for p in pad) < 0:
    raise ValueError(f"conv2d padding must be non-negative, got {padding}")
  return pad  # type: ignore[return-value]


def _lax_conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
              padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DN)


def kernel_grad_taps(x: jax.Array, dy: jax.Array, kernel_size: tuple[int, int],
                     strides: tuple[int, int],
                     padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  """Kernel gradient of a NHWC/HWIO conv as one matmul per kernel tap.

  dW[a, b] = sum_{n, h, w} xp[n, a + h*sh, b + w*sw, :]^T dy[n, h, w, :], with
  xp the zero-padded input: a (Cin x N*Ho*Wo) @ (N*Ho*Wo x Cout) matmul over a
  strided slice of xp for every (a, b). Accumulates in float32.

  Args:
    x: (N, H, W, Cin) conv input.
    dy: (N, Ho, Wo, Cout) output cotangent.
    kernel_size: (kh, kw).
    strides: (sh, sw).
    padding: ((top, bottom), (left, right)).
  Returns:
    (kh, kw, Cin, Cout) float32.
  """
  kh, kw = kernel_size
  sh, sw = strides
  n, ho, wo, c_out = dy.shape
  c_in = x.shape[-1]
  xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  dy2 = dy.reshape(n * ho * wo, c_out)

  def tap_grad(patch: jax.Array) -> jax.Array:
    # A 2-D dot contracting the rows of both operands: XLA:CPU runs it as a
    # single GEMM (a 4-D einsum here is several times slower).
    return jax.lax.dot_general(patch.reshape(n * ho * wo, c_in), dy2,
                               (((0,), (0,)), ((), ())),
                               preferred_element_type=jnp.float32)

  if (sh, sw) == (1, 1):
    # A loop over groups of IMAGES_PER_STEP images, all taps of a group at
    # once: the patch copies stay small (cache-sized) and the kh*kw GEMMs
    # share the group's cotangent (bench/README.md: faster than a loop over
    # taps, and than 1 or >= 4 images per step).
    per = IMAGES_PER_STEP if n % IMAGES_PER_STEP == 0 else 1
    rows = per * ho * wo

    def body(acc, group):
      xg, dyg = group
      dyg = dyg.reshape(rows, c_out)
      taps = [jax.lax.dot_general(xg[:, a:a + ho, b:b + wo].reshape(rows, c_in), dyg,
                                  (((0,), (0,)), ((), ())),
                                  preferred_element_type=jnp.float32)
              for a in range(kh) for b in range(kw)]
      return acc + jnp.stack(taps), None

    acc0 = jnp.zeros((kh * kw, c_in, c_out), jnp.float32)
    groups = (xp.reshape((n // per, per) + xp.shape[1:]),
              dy.reshape((n // per, per) + dy.shape[1:]))
    taps, _ = jax.lax.scan(body, acc0, groups)
    return taps.reshape(kh, kw, c_in, c_out)
  taps = []
  for a in range(kh):
    for b in range(kw):
      patch = jax.lax.slice(xp, (0, a, b, 0),
                            (n, a + (ho - 1) * sh + 1, b + (wo - 1) * sw + 1, c_in),
                            (1, sh, sw, 1))
      taps.append(tap_grad(patch))
  return jnp.stack(taps).reshape(kh, kw, c_in, c_out)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv2d_taps(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 padding: tuple[tuple[int, int], tuple[int, int]]) -> jax.Array:
  return _lax_conv(x, kernel, strides, padding)


def _conv2d_taps_fwd(x, kernel, strides, padding):
  return _lax_conv(x, kernel, strides, padding), (x, kernel)


def _conv2d_taps_bwd(strides, padding, residuals, dy):
  x, kernel = residuals
  _, vjp_x = jax.vjp(lambda x_: _lax_conv(x_, kernel, strides, padding), x)
  (dx,) = vjp_x(dy)
  dk = kernel_grad_taps(x, dy, kernel.shape[:2], strides, padding)
  return dx, dk.astype(kernel.dtype)


_conv2d_taps.defvjp(_conv2d_taps_fwd, _conv2d_taps_bwd)


def conv2d(x: jax.Array, kernel: jax.Array, strides: IntPair = 1,
           padding: Padding2D = 0, method: str = "auto") -> jax.Array:
  """Cross-correlation like PyTorch's Conv2d (dilation 1, groups 1), NHWC, no bias.

  Values and the input gradient are XLA's (`lax.conv_general_dilated` and its
  transpose); only the kernel gradient differs by method:
    "lax": XLA's convolution filter-gradient;
    "taps": `kernel_grad_taps` (one GEMM per kernel tap), which is much faster
      on CPU for large spatial sizes with many channels and equal up to float
      summation order;
    "auto": "taps" when Ho * Wo * Cin * Cout >= TAPS_MIN_WORK, else "lax".

  Args:
    x: (N, H, W, Cin).
    kernel: (kh, kw, Cin, Cout), same dtype as x.
    strides: int or (sh, sw).
    padding: int, (ph, pw) (symmetric) or ((top, bottom), (left, right)).
    method: "auto", "lax" or "taps".
  Returns:
    (N, (H + top + bottom - kh) // sh + 1, (W + left + right - kw) // sw + 1, Cout).
  """
  strides = _pair(strides)
  pad = _explicit_padding(padding)
  if method not in ("auto", "lax", "taps"):
    raise ValueError(f"unknown conv2d method {method!r}; expected auto, lax or taps")
  if method == "auto":
    kh, kw = kernel.shape[:2]
    ho = (x.shape[1] + sum(pad[0]) - kh) // strides[0] + 1
    wo = (x.shape[2] + sum(pad[1]) - kw) // strides[1] + 1
    work = ho * wo * kernel.shape[2] * kernel.shape[3]
    method = "taps" if work >= TAPS_MIN_WORK else "lax"
  if method == "lax":
    return _lax_conv(x, kernel, strides, pad)
  return _conv2d_taps(x, kernel, strides, pad)


class Conv2D(nn.Module):
  """`nn.Conv` replacement (explicit padding, NHWC) computed with `conv2d`.

  Parameters are named and shaped as nn.Conv's: `kernel` (kh, kw, Cin, Cout)
  and `bias` (Cout,), float32; `dtype` is the compute dtype (None: promote the
  input and parameter dtypes, as nn.Conv does).
  """
  features: int
  kernel_size: IntPair = 3
  strides: IntPair = 1
  padding: Padding2D = 0
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros
  method: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(N, H, W, Cin) -> (N, Ho, Wo, features)."""
    kh, kw = _pair(self.kernel_size)
    kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features),
                        self.param_dtype)
    bias = (self.param("bias", self.bias_init, (self.features,), self.param_dtype)
            if self.use_bias else None)
    x, kernel, bias = flax_dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = conv2d(x, kernel, self.strides, self.padding, self.method)
    if bias is not None:
      y = y + bias
    return y


# -----------------------------------------------------------------------------
# Transposed convolution with PyTorch's ConvTranspose2d semantics.
# -----------------------------------------------------------------------------


def _subpixel_kernel_k3s2(kernel: jax.Array) -> jax.Array:
  """Fused 2x2 kernel for ConvTranspose2d(k=3, s=2, p=1, output_padding=1).

  In 1-D that transposed conv gives, for input x (x[H] = 0) and taps w:
    y[2m]   = w[1] x[m]
    y[2m+1] = w[2] x[m] + w[0] x[m+1]
  so every output phase is a stride-1 conv of x with a 2-tap kernel. In 2-D
  the four phases (py, px) become one 2x2 conv with 4*Cout output channels,
  followed by a depth-to-space. The result is bit-for-bit the same sum as the
  transposed conv (same products, no zero-stuffed input), and its gradient is
  an ordinary stride-1 conv gradient, which XLA handles well.

  Args:
    kernel: (3, 3, Cin, Cout), with kernel[kh, kw, i, o] = torch_w[i, o, kh, kw].
  Returns:
    (2, 2, Cin, 4 * Cout) kernel; output channel index is (py * 2 + px) * Cout + o.
  """
  # taps[phase][offset] = index into the 3-tap kernel (or None for zero).
  taps = {0: (1, None), 1: (2, 0)}
  zeros = jnp.zeros_like(kernel[0, 0])
  phases = []
  for py in (0, 1):
    for px in (0, 1):
      rows = []
      for dy in (0, 1):
        cols = []
        for dx in (0, 1):
          ky, kx = taps[py][dy], taps[px][dx]
          cols.append(zeros if ky is None or kx is None else kernel[ky, kx])
        rows.append(jnp.stack(cols))
      phases.append(jnp.stack(rows))  # (2, 2, Cin, Cout)
  return jnp.concatenate(phases, axis=-1)


def depth_to_space(x: jax.Array, block: int) -> jax.Array:
  """(B, H, W, b*b*C) -> (B, H*b, W*b, C), channel index (py*b + px)*C + c."""
  b, h, w, c = x.shape
  c_out = c // (block * block)
  x = x.reshape(b, h, w, block, block, c_out)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, h * block, w * block, c_out)


def conv_transpose_torch(x: jax.Array, kernel: jax.Array, stride: IntPair,
                         padding: IntPair, output_padding: IntPair = 0,
                         method: str = "auto") -> jax.Array:
  """PyTorch `ConvTranspose2d` (dilation 1, groups 1) without bias, NHWC.

  Args:
    x: (B, H, W, Cin).
    kernel: (kh, kw, Cin, Cout) with kernel[a, b, i, o] = torch_weight[i, o, a, b].
    stride, padding, output_padding: as in PyTorch.
    method: "auto" picks the sub-pixel route for k3/s2/p1/op1 (Wav2Lip's
      upsampling layer) and a plain conv for stride 1; "dilated" forces the
      textbook zero-stuffed (lhs-dilated) conv, which is exact but slow to
      differentiate on CPU.
  Returns:
    (B, (H-1)*s - 2p + k + op, (W-1)*s - 2p + k + op, Cout).
  """
  sh, sw = _pair(stride)
  ph, pw = _pair(padding)
  oph, opw = _pair(output_padding)
  kh, kw = kernel.shape[:2]
  if (method == "auto" and (sh, sw) == (2, 2) and (kh, kw) == (3, 3)
      and (ph, pw) == (1, 1) and (oph, opw) == (1, 1)):
    fused = _subpixel_kernel_k3s2(kernel)
    y = conv2d(x, fused.astype(x.dtype), 1, ((0, 1), (0, 1)))
    return depth_to_space(y, 2)
  # General case: a conv of the (stride-dilated) input with the flipped kernel.
  flipped = kernel[::-1, ::-1].astype(x.dtype)
  pad = ((kh - 1 - ph, kh - 1 - ph + oph), (kw - 1 - pw, kw - 1 - pw + opw))
  return jax.lax.conv_general_dilated(
      x, flipped, window_strides=(1, 1), padding=pad,
      lhs_dilation=(sh, sw), dimension_numbers=_DN)


# How `ConvTransposeTorch` layers compute (see `conv_transpose_torch`'s
# `method`); changed only inside `conv_transpose_method`.
_CONV_TRANSPOSE_METHOD = contextvars.ContextVar("conv_transpose_method", default="auto")


@contextlib.contextmanager
def conv_transpose_method(method: str) -> Iterator[None]:
  """Within the block, `ConvTransposeTorch` layers trace with `method`
  ("auto" or "dilated"); the result is the same up to float rounding.

  The ONNX export traces with "dilated": its lhs-dilated conv becomes a native
  ConvTranspose, which onnxruntime runs faster than the sub-pixel conv plus
  depth-to-space that XLA prefers (full-size Wav2Lip, batch 32: 43.2 against
  32.5 frames/s).
  """
  if method not in ("auto", "dilated"):
    raise ValueError(f"unknown transposed-conv method {method!r}")
  token = _CONV_TRANSPOSE_METHOD.set(method)
  try:
    yield
  finally:
    _CONV_TRANSPOSE_METHOD.reset(token)


class ConvTransposeTorch(nn.Module):
  """`nn.ConvTranspose2d` with PyTorch's output size and numerics (NHWC)."""
  features: int
  kernel_size: IntPair = 3
  strides: IntPair = 1
  padding: IntPair = 0
  output_padding: IntPair = 0
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Any = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kh, kw = _pair(self.kernel_size)
    kernel = self.param("kernel", self.kernel_init,
                        (kh, kw, x.shape[-1], self.features), self.param_dtype)
    dtype = self.dtype or x.dtype
    y = conv_transpose_torch(x.astype(dtype), kernel.astype(dtype), self.strides,
                             self.padding, self.output_padding,
                             method=_CONV_TRANSPOSE_METHOD.get())
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros, (self.features,),
                        self.param_dtype)
      y = y + bias.astype(dtype)
    return y


# -----------------------------------------------------------------------------
# Upstream conv blocks.
# -----------------------------------------------------------------------------


def batch_norm(train: bool, dtype: Dtype | None, name: str | None = None):
  """BatchNorm2d with PyTorch's defaults (momentum 0.1 -> Flax 0.9, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      dtype=dtype, name=name)


class ConvBNReLU(nn.Module):
  """Conv2d(bias) -> BN -> (+x if residual) -> ReLU; upstream `Conv2d` block.

  Explicit PyTorch-style padding (never 'SAME'): several upstream layers rely
  on asymmetric results such as k5/s(1,2)/p1.
  """
  features: int
  kernel_size: IntPair = 3
  strides: IntPair = 1
  padding: IntPair = 1
  residual: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = Conv2D(self.features, self.kernel_size, self.strides, self.padding,
               dtype=self.dtype, name="conv")(x)
    y = batch_norm(train, self.dtype, name="bn")(y)
    if self.residual:
      y = y + x
    return nn.relu(y)


class ConvTBNReLU(nn.Module):
  """ConvTranspose2d(bias) -> BN -> ReLU; upstream `Conv2dTranspose` block."""
  features: int
  kernel_size: IntPair = 3
  strides: IntPair = 2
  padding: IntPair = 1
  output_padding: IntPair = 1
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = ConvTransposeTorch(self.features, self.kernel_size, self.strides,
                           self.padding, self.output_padding, dtype=self.dtype,
                           name="conv")(x)
    y = batch_norm(train, self.dtype, name="bn")(y)
    return nn.relu(y)


class ConvLReLU(nn.Module):
  """Conv2d(bias) -> LeakyReLU(0.01); upstream `nonorm_Conv2d` block."""
  features: int
  kernel_size: IntPair = 3
  strides: IntPair = 1
  padding: IntPair = 1
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = Conv2D(self.features, self.kernel_size, self.strides, self.padding,
               dtype=self.dtype, name="conv")(x)
    return nn.leaky_relu(y, 0.01)


def fold_time(x: jax.Array) -> tuple[jax.Array, int | None]:
  """(B, T, ...) -> (T*B, ...) folded time-major (row t*B + b), as upstream.

  Returns the folded array and B (None when x had no time axis).
  """
  b, t = x.shape[:2]
  return jnp.swapaxes(x, 0, 1).reshape((t * b,) + x.shape[2:]), b


def unfold_time(x: jax.Array, batch: int) -> jax.Array:
  """(T*B, ...) time-major -> (B, T, ...)."""
  t = x.shape[0] // batch
  return jnp.swapaxes(x.reshape((t, batch) + x.shape[1:]), 0, 1)
