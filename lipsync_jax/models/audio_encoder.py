"""Wav2Lip's audio encoder, shared by the generators and the SyncNet expert."""

from __future__ import annotations

from typing import Any

import jax
import flax.linen as nn

from lipsync_jax.models.layers import ConvBNReLU, scaled


class AudioEncoder(nn.Module):
  """Mel window -> 512-d embedding (upstream.md §2 "Audio encoder").

  Input (N, 80, 16, 1) mel windows; output (N, 1, 1, C) with C = 512 scaled by
  `width_multiplier`. `extra_res256` adds SyncNet_color's second residual
  layer at 3x3 (upstream.md §3), which shifts the later layer indices by one.
  """
  width_multiplier: float = 1.0
  extra_res256: bool = False
  dtype: Any = None

  @nn.compact
  def __call__(self, mel: jax.Array, train: bool = False) -> jax.Array:
    c = lambda n: scaled(n, self.width_multiplier)
    # (features, kernel, stride, padding, residual)
    spec = [
        (c(32), 3, 1, 1, False), (c(32), 3, 1, 1, True), (c(32), 3, 1, 1, True),
        (c(64), 3, (3, 1), 1, False), (c(64), 3, 1, 1, True), (c(64), 3, 1, 1, True),
        (c(128), 3, 3, 1, False), (c(128), 3, 1, 1, True), (c(128), 3, 1, 1, True),
        (c(256), 3, (3, 2), 1, False), (c(256), 3, 1, 1, True),
    ]
    if self.extra_res256:
      spec.append((c(256), 3, 1, 1, True))
    spec += [(c(512), 3, 1, 0, False), (c(512), 1, 1, 0, False)]
    x = mel
    for i, (f, k, s, p, res) in enumerate(spec):
      x = ConvBNReLU(f, k, s, p, residual=res, dtype=self.dtype, name=f"layers_{i}")(x, train)
    return x
