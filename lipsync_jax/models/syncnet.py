"""Upstream `SyncNet_color` lip-sync expert (upstream.md §3), NHWC.

Submodule names mirror the PyTorch `state_dict` (see `lipsync_jax.convert`):

  face_encoder_{k}           <->  face_encoder.{k}.conv_block.*
  audio_encoder/layers_{k}   <->  audio_encoder.{k}.conv_block.*
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from lipsync_jax.models.audio_encoder import AudioEncoder
from lipsync_jax.models.layers import ConvBNReLU, scaled

# (features, kernel, stride, padding, residual); layer 1 (k5 s(1,2) p1) turns
# 48x96 into 46x47, exactly as upstream.
_FACE_ENCODER = (
    (32, 7, 1, 3, False),
    (64, 5, (1, 2), 1, False), (64, 3, 1, 1, True), (64, 3, 1, 1, True),
    (128, 3, 2, 1, False), (128, 3, 1, 1, True), (128, 3, 1, 1, True), (128, 3, 1, 1, True),
    (256, 3, 2, 1, False), (256, 3, 1, 1, True), (256, 3, 1, 1, True),
    (512, 3, 2, 1, False), (512, 3, 1, 1, True), (512, 3, 1, 1, True),
    (512, 3, 2, 1, False),
    (512, 3, 1, 0, False),
    (512, 1, 1, 0, False),
)


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """`torch.nn.functional.normalize(x, dim=-1)`: x / max(||x||, eps)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True))
  return x / jnp.maximum(norm, eps)


class SyncNetColor(nn.Module):
  """SyncNet_color: 16,435,072 parameters at `width_multiplier=1`.

  `apply(variables, audio (B, 80, 16, 1), faces (B, 48, 96, 15))` returns
  (audio_emb, face_emb), each (B, 512 * width_multiplier) float32, L2-normalised
  and non-negative (the encoders end in a ReLU, kept as upstream), so their
  dot product, the sync score, lies in [0, 1]. Faces are the lower halves of 5
  BGR frames in [0, 1] stacked on channels in frame order.
  """
  width_multiplier: float = 1.0
  dtype: Any = None

  @nn.compact
  def __call__(self, audio: jax.Array, faces: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    c = lambda n: scaled(n, self.width_multiplier)
    x = faces
    for k, (f, ks, s, p, res) in enumerate(_FACE_ENCODER):
      x = ConvBNReLU(c(f), ks, s, p, residual=res, dtype=self.dtype,
                     name=f"face_encoder_{k}")(x, train)
    a = AudioEncoder(self.width_multiplier, extra_res256=True, dtype=self.dtype,
                     name="audio_encoder")(audio, train)
    a = a.reshape(a.shape[0], -1).astype(jnp.float32)
    x = x.reshape(x.shape[0], -1).astype(jnp.float32)
    return l2_normalize(a), l2_normalize(x)
