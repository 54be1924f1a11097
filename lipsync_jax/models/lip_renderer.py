"""The renderer of the two-stage model: a face U-Net driven by lip landmarks.

The two-stage model splits *what* the mouth does from *how* it looks:

  audio --AudioToLips--> lip landmarks --LipRenderer--> mouth pixels

`LipRenderer` never sees audio. It is trained by reconstruction (L1 + LPIPS
+ GAN) with the target frame's *true* FaceMesh lips, so no sync gradient
flows through pixels and there is nothing for it to exploit: the only way to
lower the loss is to draw the mouth the landmarks describe, in the colours
of the reference frame.

    lips (N, 40, 2)  FaceMesh lip points (`vision.lip_landmarks.LIP_POINTS`)
                     in face-crop units ((0, 0) top-left, (1, 1) bottom-right)
    faces (N, S, S, 6)  channels 0-2 the masked target (lower half zeroed),
                     3-5 a reference frame of the same face, BGR in [0, 1]
      -> lip map (N, S, S, 2): the outer and inner lip contours drawn as
         Gaussian lines (`lip_map`, differentiable in the points)
      -> U-Net on the 8 channels (LPIPS-AttnWav2Lip's residual-CBAM levels,
         nearest-x2 upsampling), its SAM and decoder AdaIN driven by an
         embedding of the lip shape (`LipEmbedding`)
      -> (N, S, S, 3) sigmoid, BGR in [0, 1]

Time may be folded in as with the other generators: lips (B, T, 40, 2) and
faces (B, T, S, S, 6) give (B, T, S, S, 3).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lipsync_jax.models import lip_sync
from lipsync_jax.models.layers import fold_time, unfold_time
from lipsync_jax.models.lpips_attnwav2lip import (DecoderLevel, EncoderLevel,
                                                  SemanticAlignment, decode_levels,
                                                  encode_levels, level_widths)

Dtype = Any

NUM_POINTS = lip_sync.NUM_POINTS
# Closed contours as indices into LIP_POINTS (lip_landmarks): the lower lip
# runs corner to corner (0-10 outer, 20-30 inner), the upper lip's points
# (11-19, 31-39) run the same way, so each loop is lower + reversed upper.
OUTER_LOOP = tuple(range(0, 11)) + tuple(range(19, 10, -1))
INNER_LOOP = tuple(range(20, 31)) + tuple(range(39, 30, -1))
SAMPLES_PER_SEGMENT = 3


def _loop_samples(points: jax.Array, loop: Sequence[int]) -> jax.Array:
  """(..., 40, 2) -> (..., len(loop) * SAMPLES_PER_SEGMENT, 2): points along
  each segment of the closed `loop` (its corners included)."""
  a = points[..., list(loop), :]
  b = jnp.roll(a, -1, axis=-2)
  t = jnp.arange(SAMPLES_PER_SEGMENT, dtype=points.dtype) / SAMPLES_PER_SEGMENT
  seg = a[..., :, None, :] + (b - a)[..., :, None, :] * t[:, None]
  return seg.reshape(seg.shape[:-3] + (-1, 2))


def lip_map(lips: jax.Array, size: int, sigma: float = 1.0) -> jax.Array:
  """Draws lip contours as an image.

  Args:
    lips: (N, 40, 2) lip points in face-crop units.
    size: S, the side of the map in pixels.
    sigma: line half-width in pixels of a 96 px crop (scaled with S).

  Returns:
    (N, S, S, 2) float32 in [0, 1]: channel 0 the outer lip contour, 1 the
    inner. Each pixel is the largest Gaussian of its distance to points
    sampled along the contour, so the map moves smoothly with the points.
  """
  lips = lips.astype(jnp.float32) * size - 0.5      # pixel centres at k + 0.5
  s = sigma * size / 96.0
  coords = jnp.arange(size, dtype=jnp.float32)
  out = []
  for loop in (OUTER_LOOP, INNER_LOOP):
    p = _loop_samples(lips, loop)                   # (N, P, 2) as (x, y)
    dx = coords[None, None, :] - p[..., 0][..., None]   # (N, P, S)
    dy = coords[None, None, :] - p[..., 1][..., None]
    # exp(-(dx^2 + dy^2) / 2s^2) separates into an outer product per point.
    gx = jnp.exp(-0.5 * (dx / s) ** 2)
    gy = jnp.exp(-0.5 * (dy / s) ** 2)
    out.append(jnp.max(gy[..., :, None] * gx[..., None, :], axis=1))  # (N, S, S)
  return jnp.stack(out, axis=-1)


class LipEmbedding(nn.Module):
  """(N, 40, 2) lips -> (N, features): the mouth's shape (points minus their
  centroid) and where it sits, scaled to O(1), through a two-layer MLP."""
  features: int
  hidden: int = 256
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, lips: jax.Array) -> jax.Array:
    lips = lips.astype(jnp.float32)
    centroid = lips.mean(axis=1, keepdims=True)
    x = jnp.concatenate([10.0 * (lips - centroid).reshape(lips.shape[0], -1),
                         4.0 * (centroid[:, 0] - 0.5)], axis=-1)
    x = nn.gelu(nn.Dense(self.hidden, dtype=self.dtype, name="fc")(x))
    return nn.Dense(self.features, dtype=self.dtype, name="out")(x)


class LipRenderer(nn.Module):
  """Lip landmarks + masked target + reference -> face (see module docstring).

  apply(variables, lips (N,40,2), faces (N,S,S,6)) -> (N,S,S,3), or the
  (B, T, ...) forms. Submodules: `lip_embedding`, `encoder_{i}`, `sam`,
  `decoder_{i}`, `out`.
  """
  width_multiplier: float = 0.25
  dtype: Dtype | None = None
  encoder_widths: Sequence[int] = (32, 64, 128, 256, 512)
  res_blocks: int = 1
  cbam_reduction: int = 16
  cbam_kernel: int = 7
  num_ffc: int = 2
  ffc_ratio: float = 0.5
  map_sigma: float = 1.0
  face_size: int | None = None

  @property
  def widths(self) -> tuple[int, ...]:
    return level_widths(self.encoder_widths, self.width_multiplier, self.face_size)

  def setup(self):
    widths = self.widths
    common = dict(num_res=self.res_blocks, cbam_reduction=self.cbam_reduction,
                  cbam_kernel=self.cbam_kernel, dtype=self.dtype)
    self.lip_embedding = LipEmbedding(widths[-1], dtype=self.dtype)
    self.encoder = [EncoderLevel(w, first=(i == 0), **common) for i, w in enumerate(widths)]
    self.sam = SemanticAlignment(widths[-1], self.num_ffc, self.ffc_ratio, True, self.dtype)
    self.decoder = [DecoderLevel(w, use_adain=True, adain_position="before_skip",
                                 upsample="resize", **common) for w in widths[:-1]]
    self.out = nn.Conv(3, (1, 1), dtype=self.dtype)

  def __call__(self, lips: jax.Array, faces: jax.Array, train: bool = False) -> jax.Array:
    batch = None
    if faces.ndim == 5:
      if lips.ndim != 4 or lips.shape[:2] != faces.shape[:2]:
        raise ValueError(f"5-D faces {faces.shape} need lips (B, T, 40, 2) with the same "
                         f"(B, T), got {lips.shape}")
      faces, batch = fold_time(faces)
      lips, _ = fold_time(lips)
    if faces.ndim != 4 or faces.shape[-1] != 6:
      raise ValueError(f"faces must be (N, S, S, 6) (masked target + reference), got "
                       f"{faces.shape}")
    if lips.shape != (faces.shape[0], NUM_POINTS, 2):
      raise ValueError(f"lips must be (N, {NUM_POINTS}, 2) with N={faces.shape[0]}, got "
                       f"{lips.shape}")
    size = faces.shape[1]
    if self.face_size is not None and faces.shape[1:3] != (self.face_size, self.face_size):
      raise ValueError(f"this renderer takes {self.face_size}x{self.face_size} faces, got "
                       f"{faces.shape[1]}x{faces.shape[2]}")
    step = 2 ** (len(self.widths) - 1)
    if size % step or faces.shape[2] != size:
      raise ValueError(f"faces must be square with a side divisible by {step}, got "
                       f"{faces.shape[1]}x{faces.shape[2]}")
    x = jnp.concatenate([faces.astype(jnp.float32), lip_map(lips, size, self.map_sigma)],
                        axis=-1)
    if self.dtype is not None:
      x = x.astype(self.dtype)
    feats = encode_levels(self.encoder, x, train)
    out = decode_levels(self.sam, self.decoder, self.out, feats, self.lip_embedding(lips), train)
    return out if batch is None else unfold_time(out, batch)
