"""Upstream `Wav2Lip_disc_qual` visual-quality discriminator (upstream.md §4), NHWC.

Submodule names mirror the PyTorch `state_dict` (see `lipsync_jax.convert`):

  face_encoder_blocks_{i}_{j}   <->  face_encoder_blocks.{i}.{j}.conv_block.0.*
  binary_pred_0                 <->  binary_pred.0.*
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import flax.linen as nn

from lipsync_jax.models.layers import ConvLReLU, bottleneck_side, extra_levels, fold_time, scaled

# (features, kernel, stride, padding) per layer, per block; no normalisation.
_BLOCKS = (
    ((32, 7, 1, 3),),
    ((64, 5, (1, 2), 2), (64, 5, 1, 2)),
    ((128, 5, 2, 2), (128, 5, 1, 2)),
    ((256, 5, 2, 2), (256, 5, 1, 2)),
    ((512, 3, 2, 1), (512, 3, 1, 1)),
    ((512, 3, 2, 1), (512, 3, 1, 1)),
    ((512, 3, 1, 0), (512, 1, 1, 0)),
)


def _layout(face_size: int):
  """The blocks for a `face_size` px face: upstream's at 96; the last block's
  k3 p0 conv becomes k4 where the map is 4x4 (128, 256); 192 and up add
  `layers.extra_levels` halving blocks after block 1 (like block 2, at 64
  channels)."""
  k, b = extra_levels(face_size), bottleneck_side(face_size)
  extra = ((64, 5, 2, 2), (64, 5, 1, 2))
  return (_BLOCKS[:2] + (extra,) * k + _BLOCKS[2:-1]
          + (((512, b, 1, 0),) + _BLOCKS[-1][1:],))


class Wav2LipDiscQual(nn.Module):
  """Wav2Lip_disc_qual: 14,113,793 parameters at `width_multiplier=1`.

  Takes full faces (B, T, 96, 96, 3) (or (N, 96, 96, 3)) BGR in [0, 1], folds
  time into the batch time-major (row t*B + b), crops the lower half (rows
  H//2..) itself and returns "real" probabilities (B*T, 1) float32. `logits`
  (same input) returns the pre-sigmoid scores for numerically stable losses.
  `train` is accepted for interface symmetry; the model has no batch norm.
  `face_size` S (96 upstream; 128, 192, 256, ...) takes (.., S, S, 3) faces.
  """
  width_multiplier: float = 1.0
  dtype: Any = None
  face_size: int = 96

  @nn.compact
  def logits(self, faces: jax.Array, train: bool = False) -> jax.Array:
    """(B, T, H, W, 3) or (N, H, W, 3) -> (B*T, 1) or (N, 1) logits, float32."""
    del train
    if faces.ndim == 5:
      faces, _ = fold_time(faces)
    elif faces.ndim != 4:
      raise ValueError(f"expected faces (B, T, H, W, 3) or (N, H, W, 3), got {faces.shape}")
    if faces.shape[1:3] != (self.face_size, self.face_size):
      raise ValueError(f"this discriminator takes {self.face_size}x{self.face_size} faces "
                       f"(face_size), got {faces.shape[1]}x{faces.shape[2]}")
    x = faces[:, faces.shape[1] // 2:]
    c = lambda n: scaled(n, self.width_multiplier)
    for i, block in enumerate(_layout(self.face_size)):
      for j, (f, k, s, p) in enumerate(block):
        x = ConvLReLU(c(f), k, s, p, dtype=self.dtype,
                      name=f"face_encoder_blocks_{i}_{j}")(x)
    x = nn.Conv(1, (1, 1), padding=((0, 0), (0, 0)), dtype=self.dtype,
                name="binary_pred_0")(x)
    return x.reshape(x.shape[0], -1).astype(jnp.float32)

  def __call__(self, faces: jax.Array, train: bool = False) -> jax.Array:
    """(B, T, H, W, 3) or (N, H, W, 3) -> (B*T, 1) or (N, 1) probabilities."""
    return nn.sigmoid(self.logits(faces, train))
