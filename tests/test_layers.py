"""layers.conv2d / Conv2D against lax, and conv_transpose_torch against lax and PyTorch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import flax.linen as nn

from lipsync_jax.models import layers

# (kernel, stride, padding, output_padding): Wav2Lip's two transposed convs.
CASES = [(3, 2, 1, 1), (3, 1, 0, 0)]


def _inputs(k: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(2, 5, 4, 3)).astype(np.float32)
  torch_w = rng.normal(size=(3, 6, k, k)).astype(np.float32)  # (in, out, kh, kw)
  return x, torch_w


def _lax_conv_transpose(x, torch_w, k, s, p, op):
  # transpose_kernel=True takes the forward conv's kernel: torch's (in, out, kh, kw)
  # read as OIHW, i.e. HWIO (kh, kw, out, in), and flips and swaps it itself.
  pad = ((k - 1 - p, k - 1 - p + op),) * 2
  return jax.lax.conv_transpose(x, jnp.asarray(torch_w.transpose(2, 3, 1, 0)), (s, s), pad,
                                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                transpose_kernel=True)


@pytest.mark.parametrize("k,s,p,op", CASES)
def test_conv_transpose_matches_lax_and_torch(k, s, p, op):
  x, torch_w = _inputs(k)
  kernel = jnp.asarray(torch_w.transpose(2, 3, 0, 1))
  y = np.asarray(layers.conv_transpose_torch(jnp.asarray(x), kernel, s, p, op))
  y_dilated = np.asarray(layers.conv_transpose_torch(jnp.asarray(x), kernel, s, p, op,
                                                     method="dilated"))
  y_lax = np.asarray(_lax_conv_transpose(jnp.asarray(x), torch_w, k, s, p, op))
  y_torch = torch.nn.functional.conv_transpose2d(
      torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(torch_w),
      stride=s, padding=p, output_padding=op).numpy().transpose(0, 2, 3, 1)
  expected_hw = ((x.shape[1] - 1) * s - 2 * p + k + op, (x.shape[2] - 1) * s - 2 * p + k + op)
  assert y.shape == (2, *expected_hw, 6) == y_torch.shape
  np.testing.assert_allclose(y, y_torch, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y_lax, y_torch, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(y_dilated, y_torch, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("k,s,p,op", CASES)
def test_conv_transpose_gradients_match_dilated_route(k, s, p, op):
  x, torch_w = _inputs(k, seed=1)
  kernel = jnp.asarray(torch_w.transpose(2, 3, 0, 1))
  y_shape = layers.conv_transpose_torch(jnp.asarray(x), kernel, s, p, op).shape
  cotangent = jnp.asarray(np.random.default_rng(2).normal(size=y_shape), jnp.float32)

  def loss(x, kernel, method):
    return jnp.sum(layers.conv_transpose_torch(x, kernel, s, p, op, method=method) * cotangent)

  grads = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), kernel, "auto")
  grads_dilated = jax.grad(loss, argnums=(0, 1))(jnp.asarray(x), kernel, "dilated")
  for g, g_ref in zip(grads, grads_dilated):
    assert float(jnp.abs(g_ref).max()) > 0
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-5, atol=1e-5)


def test_conv_transpose_torch_module_adds_bias():
  x, torch_w = _inputs(3)
  bias = np.arange(6, dtype=np.float32)
  module = layers.ConvTransposeTorch(6, 3, 2, 1, 1)
  variables = {"params": {"kernel": jnp.asarray(torch_w.transpose(2, 3, 0, 1)),
                          "bias": jnp.asarray(bias)}}
  y = np.asarray(module.apply(variables, jnp.asarray(x)))
  y_torch = torch.nn.functional.conv_transpose2d(
      torch.from_numpy(x.transpose(0, 3, 1, 2)), torch.from_numpy(torch_w),
      torch.from_numpy(bias), stride=2, padding=1, output_padding=1).numpy()
  np.testing.assert_allclose(y, y_torch.transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


# conv2d: (kernel, strides, padding). Padding is an int, a (ph, pw) pair or
# explicit ((top, bottom), (left, right)); includes upstream's k5/s(1,2)/p1
# and the sub-pixel transposed conv's asymmetric ((0, 1), (0, 1)).
CONV_CASES = [
    (1, 1, 0), (3, 1, 1), (3, 2, 1), (3, (3, 1), 1), (3, (1, 2), 2), (3, (3, 2), 0),
    (5, (1, 2), 1), (5, 2, 2), (5, (3, 1), 3), (7, 1, 3), (7, 2, 2), (7, (3, 2), 1),
    (1, 2, 0), (2, 1, ((0, 1), (0, 1))), (3, 1, ((2, 0), (1, 3))), (3, 2, (0, 2)),
]


def _rel_err(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("k,s,p", CONV_CASES)
def test_conv2d_values_and_gradients_match_lax(k, s, p, method="taps"):
  rng = np.random.default_rng(k * 7 + len(str((s, p))))
  x = jnp.asarray(rng.normal(size=(3, 13, 12, 5)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(k, k, 5, 4)), jnp.float32)
  pad = layers._explicit_padding(p)
  ref_fn = lambda x, w: jax.lax.conv_general_dilated(
      x, w, layers._pair(s), pad, dimension_numbers=("NHWC", "HWIO", "NHWC"))
  y_ref = ref_fn(x, kernel)
  y = layers.conv2d(x, kernel, s, p, method=method)
  assert y.shape == y_ref.shape
  assert _rel_err(y, y_ref) < 1e-6
  cotangent = jnp.asarray(rng.normal(size=y_ref.shape), jnp.float32)
  loss = lambda f: (lambda x, w: jnp.sum(f(x, w) * cotangent))
  grads = jax.jit(jax.grad(loss(lambda x, w: layers.conv2d(x, w, s, p, method=method)),
                           argnums=(0, 1)))(x, kernel)
  grads_ref = jax.grad(loss(ref_fn), argnums=(0, 1))(x, kernel)
  for g, g_ref in zip(grads, grads_ref):
    assert g.shape == g_ref.shape and g.dtype == g_ref.dtype
    assert float(jnp.abs(g_ref).max()) > 0
    assert _rel_err(g, g_ref) < 1e-5


@pytest.mark.parametrize("n,strides,padding", [
    (2, (2, 3), ((1, 0), (2, 1))),   # strided: one slice per tap
    (4, (1, 1), ((1, 1), (0, 2))),   # stride 1: a loop over pairs of images
    (3, (1, 1), ((1, 1), (1, 1))),   # stride 1, odd batch: one image per step
])
def test_kernel_grad_taps_matches_float64_numpy(n, strides, padding):
  # Independent reference: the kernel gradient written out with numpy loops.
  rng = np.random.default_rng(5)
  x = rng.normal(size=(n, 9, 10, 3))
  xp = np.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  ho = (xp.shape[1] - 3) // strides[0] + 1
  wo = (xp.shape[2] - 3) // strides[1] + 1
  dy = rng.normal(size=(n, ho, wo, 2))
  want = np.zeros((3, 3, 3, 2))
  for a in range(3):
    for b in range(3):
      for h in range(ho):
        for w in range(wo):
          want[a, b] += xp[:, a + strides[0] * h, b + strides[1] * w, :].T @ dy[:, h, w, :]
  got = layers.kernel_grad_taps(jnp.asarray(x, jnp.float32), jnp.asarray(dy, jnp.float32),
                                (3, 3), strides, padding)
  assert _rel_err(got, want) < 1e-5


def test_conv2d_auto_picks_taps_for_large_layers_only(monkeypatch):
  calls = []
  real = layers.kernel_grad_taps
  monkeypatch.setattr(layers, "kernel_grad_taps", lambda *a: calls.append(a) or real(*a))
  grad = lambda x, w: jax.grad(lambda w: jnp.sum(layers.conv2d(x, w, 1, 1)), argnums=0)(w)
  small = jnp.ones((1, 6, 6, 8)), jnp.ones((3, 3, 8, 8))
  grad(*small)
  assert not calls
  side = int(np.ceil(np.sqrt(layers.TAPS_MIN_WORK / (64 * 64))))
  large = jnp.ones((1, side, side, 64)), jnp.ones((3, 3, 64, 64))
  g = grad(*large)
  assert len(calls) == 1
  # All-ones input and cotangent: the centre tap sums side^2 products of 1.
  assert float(g[1, 1, 0, 0]) == side * side


def test_conv2d_rejects_bad_method_and_padding():
  x, w = jnp.ones((1, 4, 4, 1)), jnp.ones((3, 3, 1, 1))
  with pytest.raises(ValueError, match="unknown conv2d method"):
    layers.conv2d(x, w, 1, 1, method="fft")
  with pytest.raises(ValueError, match="non-negative"):
    layers.conv2d(x, w, 1, ((-1, 0), (0, 0)))


@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_conv2d_module_matches_nn_conv(dtype):
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.random((2, 11, 9, 3)), jnp.float32)
  pad = ((1, 1), (1, 1))
  ours = layers.Conv2D(8, 5, (1, 2), pad, dtype=dtype, method="taps")
  ref = nn.Conv(8, (5, 5), (1, 2), padding=pad, dtype=dtype)
  variables = ref.init(jax.random.key(0), x)
  ours_vars = ours.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, ours_vars) == jax.tree.map(jnp.shape, variables)
  assert all(l.dtype == jnp.float32 for l in jax.tree.leaves(ours_vars))
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # non-zero bias
  y, y_ref = ours.apply(variables, x), ref.apply(variables, x)
  assert y.dtype == y_ref.dtype == (dtype or jnp.float32)
  tol = 1e-6 if dtype is None else 2e-2
  assert _rel_err(y.astype(jnp.float32), y_ref.astype(jnp.float32)) < tol
  loss = lambda m: (lambda v: jnp.sum(jnp.square(m.apply(v, x).astype(jnp.float32))))
  g, g_ref = jax.grad(loss(ours))(variables), jax.grad(loss(ref))(variables)
  for name in ("kernel", "bias"):
    assert g["params"][name].dtype == jnp.float32
    assert _rel_err(g["params"][name], g_ref["params"][name]) < (1e-5 if dtype is None else 5e-2)
