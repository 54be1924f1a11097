"""layers.conv_transpose_torch against jax.lax.conv_transpose and PyTorch."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

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
