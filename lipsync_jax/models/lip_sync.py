"""Landmark sync expert: lip landmarks + mel -> two unit embeddings.

``LipSyncNet`` is the data-efficient sync expert (README, "The landmark sync
expert"). Its video side reads a 5-frame window of 40 FaceMesh lip points
(``lip_landmarks``: face-crop units) instead of pixels, so it never has to
learn what a face looks like; its audio side reads the same Wav2Lip mel window
as ``syncnet_color`` (80 bands x 16 steps = 0.2 s, aligned with the 5 frames).

    net = models.create("lip_sync")
    a, v = net.apply(variables, mel, lips)    # (B,80,16,1), (B,5,40,2) -> 2 x (B,D)

Both embeddings are L2-normalised, so the cosine is their dot product and the
LSE distances of ``metrics`` lie in [0, 2]. A learned logit scale and bias
(``head``, stored in the model's meta like the pixel expert's) turn the cosine
into an in-sync probability.

Video features (per frame, before the MLP): the 40 points minus their
centroid (mouth shape, free of where the mouth sits in the crop), the same
minus the window's mean shape (the motion within the window, free of the
speaker's resting mouth), and the centroid minus the window's mean centroid
(jaw motion). All are scaled by ``coord_scale`` to O(1).

``LipSyncExpert`` (arch ``lip_sync_pixels``) puts a lip-landmark regressor in
front of the same video tower, so a generator can be trained against the
expert with the pixel expert's calling convention:
``apply(v, mel (B,80,16,1), lower halves (B,48,96,15)) -> (a, v)``.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

WINDOW = 5
NUM_POINTS = 40


def _normalise(x: jax.Array) -> jax.Array:
  # rsqrt of the clamped squared norm: finite gradients at x = 0 (a zero
  # audio window off the clip's end), where the gradient of a norm is 0/0.
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=-1, keepdims=True), 1e-12))


def lip_window_features(lips: jax.Array, coord_scale: float = 10.0) -> jax.Array:
  """(B, T, 40, 2) lips in crop units -> (B, T, 40*2*2 + 2) features."""
  lips = lips.astype(jnp.float32)
  centroid = lips.mean(axis=2, keepdims=True)                 # (B, T, 1, 2)
  shape = lips - centroid                                     # mouth shape
  motion = shape - shape.mean(axis=1, keepdims=True)          # change in the window
  jaw = centroid - centroid.mean(axis=1, keepdims=True)       # (B, T, 1, 2)
  b, t = lips.shape[:2]
  feats = jnp.concatenate([shape.reshape(b, t, -1), 3.0 * motion.reshape(b, t, -1),
                           3.0 * jaw.reshape(b, t, -1)], axis=-1)
  return coord_scale * feats


class AudioTower(nn.Module):
  """Mel window (B, 80, 16, 1) -> (B, D) (not normalised)."""
  embed_dim: int = 128
  channels: Sequence[int] = (16, 32, 48, 64)
  width: int = 256
  band_pool: int = 1

  @nn.compact
  def __call__(self, mel: jax.Array) -> jax.Array:
    x = mel.astype(jnp.float32)
    if self.band_pool > 1:  # coarser bands: less of the voice, same speech
      x = nn.avg_pool(x, (self.band_pool, 1), (self.band_pool, 1))
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, (3, 3), strides=(2, 1) if i == 0 else (2, 2), name=f"conv{i}")(x)
      x = nn.LayerNorm(name=f"norm{i}")(x)
      x = nn.gelu(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.gelu(nn.Dense(self.width, name="fc")(x))
    return nn.Dense(self.embed_dim, name="out")(x)


class VideoTower(nn.Module):
  """Lip window (B, 5, 40, 2) -> (B, D) (not normalised)."""
  embed_dim: int = 128
  width: int = 256
  coord_scale: float = 10.0
  bottleneck: int = 0

  @nn.compact
  def __call__(self, lips: jax.Array) -> jax.Array:
    x = lip_window_features(lips, self.coord_scale)            # (B, 5, F)
    if self.bottleneck:  # a few learned lip measures per frame
      x = nn.Dense(self.bottleneck, name="measures")(x)
    x = nn.gelu(nn.Dense(self.width, name="frame")(x))         # per frame
    x = x.reshape(x.shape[0], -1)
    x = nn.LayerNorm(name="norm")(x)
    x = nn.gelu(nn.Dense(self.width, name="fc")(x))
    return nn.Dense(self.embed_dim, name="out")(x)


class LipSyncNet(nn.Module):
  """Landmark sync expert (see the module docstring).

  Attributes:
    embed_dim: D, the embedding size.
    width: hidden width of both towers.
    coord_scale: lip coordinates (crop units) are multiplied by this.
    audio_channels: channels of the audio tower's 4 strided convolutions.
    band_pool: the audio tower first averages this many adjacent mel bands.
    lip_bottleneck: > 0: the video tower first projects each frame's lip
      features to this many learned measures.
    window: W, frames per video window; the audio window covers the same
      time (16 * W / 5 mel columns at 25 fps).
  """
  embed_dim: int = 128
  width: int = 256
  coord_scale: float = 10.0
  audio_channels: Sequence[int] = (16, 32, 48, 64)
  band_pool: int = 1
  lip_bottleneck: int = 0
  window: int = WINDOW

  def setup(self):
    self.audio_tower = AudioTower(self.embed_dim, tuple(self.audio_channels), self.width,
                                  self.band_pool)
    self.video_tower = VideoTower(self.embed_dim, self.width, self.coord_scale,
                                  self.lip_bottleneck)

  def embed_audio(self, mel: jax.Array) -> jax.Array:
    """(B, 80, 16 W / 5, 1) -> (B, D) unit vectors."""
    return _normalise(self.audio_tower(mel))

  def embed_video(self, lips: jax.Array) -> jax.Array:
    """(B, W, 40, 2) lips (crop units) -> (B, D) unit vectors."""
    return _normalise(self.video_tower(lips))

  def __call__(self, mel: jax.Array, lips: jax.Array, train: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    del train  # no dropout or batch norm
    return self.embed_audio(mel), self.embed_video(lips)


# -----------------------------------------------------------------------------
# Pixels -> lips, for training generators against the landmark expert.
# -----------------------------------------------------------------------------

# Where the lips sit in a face crop, on average (crop units): the regressor
# predicts offsets from here.
LIP_CENTRE = (0.5, 0.78)


def gaussian_blur(images: jax.Array, sigma: float) -> jax.Array:
  """(N, H, W, C) -> the same, blurred per channel (edges replicated)."""
  r = max(1, int(round(2 * sigma)))
  x = jnp.arange(-r, r + 1, dtype=jnp.float32)
  k = jnp.exp(-0.5 * (x / sigma) ** 2)
  k = k / k.sum()
  c = images.shape[-1]
  pad = jnp.pad(images.astype(jnp.float32), ((0, 0), (r, r), (r, r), (0, 0)), mode="edge")
  dn = ("NHWC", "HWIO", "NHWC")
  kh = jnp.tile(k.reshape(-1, 1, 1, 1), (1, 1, 1, c))
  kw = jnp.tile(k.reshape(1, -1, 1, 1), (1, 1, 1, c))
  y = jax.lax.conv_general_dilated(pad, kh, (1, 1), "VALID", dimension_numbers=dn,
                                   feature_group_count=c)
  return jax.lax.conv_general_dilated(y, kw, (1, 1), "VALID", dimension_numbers=dn,
                                      feature_group_count=c)


class LipRegressor(nn.Module):
  """Lower half of a face crop (N, 48, 96, 3) in [0, 1] -> lips (N, 40, 2).

  A small CNN distilled from FaceMesh (``lip_landmarks.crop_lips`` on the
  same frames): a differentiable stand-in for FaceMesh on generated faces.
  Lips are in face-crop units (the lower half covers y in [0.5, 1]).
  """
  channels: Sequence[int] = (16, 32, 64, 96)
  width: int = 256

  @nn.compact
  def __call__(self, lower: jax.Array) -> jax.Array:
    x = lower.astype(jnp.float32) - 0.5
    for i, c in enumerate(self.channels):   # 48x96 -> 3x6
      x = nn.Conv(c, (3, 3), strides=(2, 2), name=f"conv{i}")(x)
      x = nn.gelu(nn.GroupNorm(num_groups=8, name=f"norm{i}")(x))
    x = nn.gelu(nn.Conv(self.channels[-1], (3, 3), name="conv_out")(x))
    x = x.reshape(x.shape[0], -1)
    x = nn.gelu(nn.Dense(self.width, name="fc")(x))
    d = nn.Dense(NUM_POINTS * 2, kernel_init=nn.initializers.zeros, name="out")(x)
    return jnp.asarray(LIP_CENTRE, jnp.float32) + 0.1 * d.reshape(-1, NUM_POINTS, 2)


class LipSyncPixels(nn.Module):
  """The landmark expert on pixels: `LipRegressor` then `LipSyncNet`.

  Same calling convention as ``syncnet_color``, so the generator trainer
  uses it unchanged: ``apply(v, mel (B,80,16,1), faces (B,48,96,3W))`` with
  the W lower halves stacked on channels (``losses.lower_half_stack``) ->
  two (B, 2) unit vectors whose cosine is the expert's in-sync probability
  ``p = sigmoid(head_scale * cos + head_bias)`` (its learned decision head).

  Why not the embeddings themselves: upstream's sync loss is BCE(cos, 1),
  made for SyncNet's non-negative embeddings (cos in [0, 1]); this expert's
  cosine ranges over [-1, 1], and a cosine <= 0 would hit the log's clamp
  with no gradient. With cos = p the same loss is -log p, the BCE of the
  expert's calibrated logit. ``embed_audio`` / ``embed_video`` still give
  the (B, D) embeddings.
  """
  sync: dict = None        # LipSyncNet kwargs
  regressor: dict = None   # LipRegressor kwargs
  head_scale: float = 10.0
  head_bias: float = -5.0
  # Gaussian blur (sigma, pixels) before the regressor: the expert reads the
  # mouth's shape, not its texture, so a generator cannot steer it with
  # high-frequency patterns that no face has (0 = off).
  blur: float = 1.0

  def setup(self):
    self.lip_regressor = LipRegressor(**dict(self.regressor or {}))
    self.lip_sync = LipSyncNet(**dict(self.sync or {}))

  def lips(self, faces: jax.Array) -> jax.Array:
    """(B, 48, 96, 3W) stacked lower halves -> (B, W, 40, 2) lips."""
    b, h, w, c = faces.shape
    frames = faces.reshape(b, h, w, c // 3, 3).transpose(0, 3, 1, 2, 4)
    frames = frames.reshape(-1, h, w, 3)
    if self.blur > 0:
      frames = gaussian_blur(frames, self.blur)
    lips = self.lip_regressor(frames)
    return lips.reshape(b, c // 3, NUM_POINTS, 2)

  def embed_audio(self, mel: jax.Array) -> jax.Array:
    return self.lip_sync.embed_audio(mel)

  def embed_video(self, faces: jax.Array) -> jax.Array:
    return self.lip_sync.embed_video(self.lips(faces))

  def __call__(self, mel: jax.Array, faces: jax.Array, train: bool = False
               ) -> tuple[jax.Array, jax.Array]:
    del train
    cos = jnp.sum(self.embed_audio(mel) * self.embed_video(faces), axis=-1)
    p = jax.nn.sigmoid(self.head_scale * cos + self.head_bias)
    one = jnp.stack([jnp.ones_like(p), jnp.zeros_like(p)], -1)
    return one, jnp.stack([p, jnp.sqrt(jnp.maximum(1.0 - p * p, 1e-12))], -1)
