"""Attention and audio-conditioning blocks of LPIPS-AttnWav2Lip (NHWC).

The module math follows upstream.md §5.2:

  * CBAM (Woo et al. 2018): `ChannelAttention`, `SpatialAttention` and the
    residual block `ResCBAM` (conv3-BN-ReLU, conv3-BN, CBAM, + x, ReLU).
  * FFC, the fast Fourier convolution (Chi et al. 2020, as used in LaMa):
    `FFC` with its `SpectralTransform` and `FourierUnit`.
  * AdaIN driven by the audio embedding: `AdaIN`.

Bias choices reproduce the parameter counts of the RECON table (§5.3):
CBAM's MLP and spatial conv have no bias, the FFC convolutions have no bias
(each is followed by a BatchNorm), the ResCBAM convolutions keep theirs, and
the AdaIN linears have one.

Both attention maps are recorded with `sow("intermediates", ...)`: apply with
`mutable=["intermediates"]` to inspect them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from lipsync_jax.models.layers import ConvBNReLU, batch_norm

Dtype = Any


def _split_channels(channels: int, ratio_global: float) -> tuple[int, int]:
  """(local, global) channel counts of an FFC tensor with `channels`."""
  if not 0.0 <= ratio_global <= 1.0:
    raise ValueError(f"FFC ratio_global must be in [0, 1], got {ratio_global}")
  c_global = int(channels * ratio_global)
  return channels - c_global, c_global


class ChannelAttention(nn.Module):
  """CBAM channel attention: x * sigmoid(MLP(avgpool x) + MLP(maxpool x)).

  The MLP C -> max(1, C // reduction) -> C (ReLU in between, no biases) is
  shared by both pooled descriptors. Input and output (N, H, W, C); the map
  (N, 1, 1, C) is sown as intermediates["attention"].
  """
  reduction: int = 16
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    hidden = max(1, c // self.reduction)
    pooled = jnp.stack([jnp.mean(x, axis=(1, 2)), jnp.max(x, axis=(1, 2))])  # (2, N, C)
    h = nn.Dense(hidden, use_bias=False, dtype=self.dtype, name="fc1")(pooled)
    h = nn.Dense(c, use_bias=False, dtype=self.dtype, name="fc2")(nn.relu(h))
    attention = nn.sigmoid(h[0] + h[1])[:, None, None, :]
    self.sow("intermediates", "attention", attention)
    return x * attention.astype(x.dtype)


class SpatialAttention(nn.Module):
  """CBAM spatial attention: x * sigmoid(conv_kxk([mean_c x, max_c x])).

  The k x k conv maps 2 -> 1 channels with padding k // 2 and no bias.
  Input and output (N, H, W, C); the map (N, H, W, 1) is sown as
  intermediates["attention"].
  """
  kernel_size: int = 7
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kernel_size % 2 != 1:
      raise ValueError(f"spatial attention kernel must be odd, got {self.kernel_size}")
    desc = jnp.concatenate([jnp.mean(x, axis=-1, keepdims=True),
                            jnp.max(x, axis=-1, keepdims=True)], axis=-1)
    p = self.kernel_size // 2
    logits = nn.Conv(1, (self.kernel_size, self.kernel_size),
                     padding=((p, p), (p, p)), use_bias=False, dtype=self.dtype,
                     name="conv")(desc)
    attention = nn.sigmoid(logits)
    self.sow("intermediates", "attention", attention)
    return x * attention.astype(x.dtype)


class CBAM(nn.Module):
  """Channel attention followed by spatial attention. (N, H, W, C) -> same."""
  reduction: int = 16
  kernel_size: int = 7
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ChannelAttention(self.reduction, self.dtype, name="channel")(x)
    return SpatialAttention(self.kernel_size, self.dtype, name="spatial")(x)


class ResCBAM(nn.Module):
  """Residual CBAM block: relu(x + CBAM(BN(conv3(relu(BN(conv3 x)))))).

  Input and output (N, H, W, C) with C == `features` (identity shortcut).
  """
  features: int
  reduction: int = 16
  kernel_size: int = 7
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if x.shape[-1] != self.features:
      raise ValueError(f"ResCBAM({self.features}) got {x.shape[-1]} input channels")
    y = ConvBNReLU(self.features, 3, 1, 1, dtype=self.dtype, name="conv1")(x, train)
    y = nn.Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype,
                name="conv2")(y)
    y = batch_norm(train, self.dtype, name="bn2")(y)
    y = CBAM(self.reduction, self.kernel_size, self.dtype, name="cbam")(y)
    return nn.relu(y + x)


def _conv1x1(features: int, dtype: Dtype | None, name: str) -> nn.Conv:
  return nn.Conv(features, (1, 1), use_bias=False, dtype=dtype, name=name)


class FourierUnit(nn.Module):
  """Spectral conv: irfft2(ReLU(BN(conv1x1([Re, Im] rfft2(x))))).

  The FFT runs over (H, W) with norm="ortho" in float32 whatever the compute
  dtype (bf16 FFTs are not supported everywhere and lose too much precision);
  the 1x1 conv and BN run in the compute dtype. Real and imaginary parts are
  stacked on channels as [Re_0..Re_{C-1}, Im_0..Im_{C-1}].
  Input (N, H, W, C) with any H, W (odd included) -> (N, H, W, features).
  """
  features: int
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    in_dtype = x.dtype
    h, w = x.shape[1:3]
    spec = jnp.fft.rfft2(x.astype(jnp.float32), axes=(1, 2), norm="ortho")
    z = jnp.concatenate([spec.real, spec.imag], axis=-1)  # (N, H, W//2+1, 2C)
    if self.dtype is not None:
      z = z.astype(self.dtype)
    z = _conv1x1(2 * self.features, self.dtype, "conv")(z)
    z = nn.relu(batch_norm(train, self.dtype, name="bn")(z))
    z = z.astype(jnp.float32)
    re, im = jnp.split(z, 2, axis=-1)
    y = jnp.fft.irfft2(jax.lax.complex(re, im), s=(h, w), axes=(1, 2), norm="ortho")
    return y.astype(self.dtype or in_dtype)


class SpectralTransform(nn.Module):
  """FFC's global branch: conv1x1 -> C/2, BN, ReLU; FourierUnit; + skip; conv1x1.

  Input (N, H, W, C_in) -> (N, H, W, features).
  """
  features: int
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    half = max(1, self.features // 2)
    y = _conv1x1(half, self.dtype, "reduce")(x)
    y = nn.relu(batch_norm(train, self.dtype, name="reduce_bn")(y))
    y = y + FourierUnit(half, self.dtype, name="fourier")(y, train)
    return _conv1x1(self.features, self.dtype, "expand")(y)


class FFC(nn.Module):
  """Fast Fourier convolution with a local and a global (spectral) branch.

  Input and output channels are split as [local | global] with
  C_global = int(C * ratio_global):
    y_l = ReLU(BN(conv3(x_l) + conv3(x_g)))
    y_g = ReLU(BN(conv3(x_l) + SpectralTransform(x_g)))
  and the output is concat([y_l, y_g], -1). A branch with zero channels is
  dropped (ratio 0 gives a plain conv-BN-ReLU). No conv has a bias.
  Input (N, H, W, C_in), any H, W -> (N, H, W, features).
  """
  features: int
  ratio_global: float = 0.5
  kernel_size: int = 3
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    in_l, in_g = _split_channels(x.shape[-1], self.ratio_global)
    out_l, out_g = _split_channels(self.features, self.ratio_global)
    x_l, x_g = x[..., :in_l], x[..., in_l:]
    k, p = self.kernel_size, self.kernel_size // 2

    def conv(features: int, name: str) -> nn.Conv:
      return nn.Conv(features, (k, k), padding=((p, p), (p, p)), use_bias=False,
                     dtype=self.dtype, name=name)

    outputs = []
    if out_l:
      terms = []
      if in_l:
        terms.append(conv(out_l, "local_to_local")(x_l))
      if in_g:
        terms.append(conv(out_l, "global_to_local")(x_g))
      y_l = batch_norm(train, self.dtype, name="bn_local")(sum(terms))
      outputs.append(nn.relu(y_l))
    if out_g:
      terms = []
      if in_l:
        terms.append(conv(out_g, "local_to_global")(x_l))
      if in_g:
        terms.append(SpectralTransform(out_g, self.dtype, name="spectral")(x_g, train))
      y_g = batch_norm(train, self.dtype, name="bn_global")(sum(terms))
      outputs.append(nn.relu(y_g))
    return jnp.concatenate(outputs, axis=-1)


class AdaIN(nn.Module):
  """Audio-driven adaptive instance norm.

    y = (1 + gamma(a)) * (x - mean_hw x) / sqrt(var_hw x + eps) + beta(a)

  gamma and beta are Dense(D -> C) layers with zero-initialised kernel and
  bias, so at init the block is a plain (affine-free) instance norm and the
  audio starts to matter once they move. Statistics are computed in float32.

  Args (call): x (N, H, W, C) visual features; audio (N, D) embedding.
  Returns: (N, H, W, C) in the compute dtype.
  """
  features: int
  epsilon: float = 1e-5
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, audio: jax.Array) -> jax.Array:
    if x.shape[-1] != self.features:
      raise ValueError(f"AdaIN({self.features}) got {x.shape[-1]} channels")
    if audio.ndim != 2 or audio.shape[0] != x.shape[0]:
      raise ValueError(f"AdaIN audio must be (N, D) with N={x.shape[0]}, got {audio.shape}")
    zeros = nn.initializers.zeros
    gamma = nn.Dense(self.features, kernel_init=zeros, bias_init=zeros,
                     dtype=self.dtype, name="gamma")(audio)
    beta = nn.Dense(self.features, kernel_init=zeros, bias_init=zeros,
                    dtype=self.dtype, name="beta")(audio)
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=(1, 2), keepdims=True)
    var = jnp.var(xf, axis=(1, 2), keepdims=True)
    normed = (xf - mean) * jax.lax.rsqrt(var + self.epsilon)
    gamma = gamma.astype(jnp.float32)[:, None, None, :]
    beta = beta.astype(jnp.float32)[:, None, None, :]
    return ((1.0 + gamma) * normed + beta).astype(self.dtype or x.dtype)
