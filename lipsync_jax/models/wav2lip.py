"""Upstream Wav2Lip generator (upstream.md §2), NHWC, PyTorch-checkpoint compatible.

Submodule names mirror the PyTorch `state_dict` so that conversion is a pure
renaming (see `lipsync_jax.convert`):

  face_encoder_blocks_{i}_{j}   <->  face_encoder_blocks.{i}.{j}.conv_block.*
  audio_encoder/layers_{k}      <->  audio_encoder.{k}.conv_block.*
  face_decoder_blocks_{i}_{j}   <->  face_decoder_blocks.{i}.{j}.conv_block.*
  output_block_0                <->  output_block.0.conv_block.*
  output_block_1                <->  output_block.1.*
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from lipsync_jax.models.audio_encoder import AudioEncoder
from lipsync_jax.models.layers import (ConvBNReLU, ConvTBNReLU, bottleneck_side, extra_levels,
                                       fold_time, scaled, unfold_time)

# (features, kernel, stride, padding, residual) per layer, per block.
_ENCODER = (
    ((16, 7, 1, 3, False),),
    ((32, 3, 2, 1, False), (32, 3, 1, 1, True), (32, 3, 1, 1, True)),
    ((64, 3, 2, 1, False), (64, 3, 1, 1, True), (64, 3, 1, 1, True), (64, 3, 1, 1, True)),
    ((128, 3, 2, 1, False), (128, 3, 1, 1, True), (128, 3, 1, 1, True)),
    ((256, 3, 2, 1, False), (256, 3, 1, 1, True), (256, 3, 1, 1, True)),
    ((512, 3, 2, 1, False), (512, 3, 1, 1, True)),
    ((512, 3, 1, 0, False), (512, 1, 1, 0, False)),
)

# Decoder blocks 1..6 open with a transposed conv (features, kernel, stride,
# padding, output_padding) followed by `n_res` residual ConvBNReLU layers.
_DECODER_UP = (
    (512, 3, 1, 0, 0, 1),
    (512, 3, 2, 1, 1, 2),
    (384, 3, 2, 1, 1, 2),
    (256, 3, 2, 1, 1, 2),
    (128, 3, 2, 1, 1, 2),
    (64, 3, 2, 1, 1, 2),
)


# A face larger than 96/128 px gets `layers.extra_levels` more of these: in
# the encoder after block 0 (halving, 16 channels), in the decoder after the
# last block (doubling, 32 channels), joined by the same skips.
_EXTRA_DOWN = ((16, 3, 2, 1, False), (16, 3, 1, 1, True))
_EXTRA_UP = (32, 3, 2, 1, 1, 1)


def _layout(face_size: int):
  """(encoder blocks, decoder up-blocks) for a `face_size` px face: the
  upstream layout at 96; at 128 (256) the k3 p0 bottleneck conv and the
  first transposed conv are k4 (a 4x4 map); 192 and up add levels."""
  k, b = extra_levels(face_size), bottleneck_side(face_size)
  encoder = (_ENCODER[:1] + (_EXTRA_DOWN,) * k + _ENCODER[1:-1]
             + (((512, b, 1, 0, False),) + _ENCODER[-1][1:],))
  decoder = ((512, b, 1, 0, 0, 1),) + _DECODER_UP[1:] + (_EXTRA_UP,) * k
  return encoder, decoder


def decoder_transposed_blocks(face_size: int = 96) -> range:
  """Indices i of the decoder blocks whose layer (i, 0) is a transposed conv."""
  return range(1, len(_layout(face_size)[1]) + 1)


class Wav2Lip(nn.Module):
  """Wav2Lip generator: 36,298,035 parameters at `width_multiplier=1`.

  Call with audio (B, T, 80, 16, 1) and faces (B, T, 96, 96, 6) to get
  (B, T, 96, 96, 3), or with the 4-D forms (N, 80, 16, 1), (N, 96, 96, 6) to get
  (N, 96, 96, 3). Face channels 0-2 are the target frame with rows 48.. zeroed,
  3-5 the reference frame, BGR in [0, 1]. Output is a sigmoid, float32. Time is
  folded into the batch time-major (row t*B + b), as upstream.

  `face_size` (96, 128, 192, 256, ...; see `layers.extra_levels`) sets the
  face side S: faces (.., S, S, 6) -> (.., S, S, 3). 96 is upstream's layout
  exactly; larger faces add stride-2 levels at the top of the encoder and the
  bottom of the decoder (names after upstream's shift by those levels).

  The face path does not depend on the audio: `encode_faces` and
  `decode_faces` split the call there (inference on a still photo encodes
  its face once).
  """
  width_multiplier: float = 1.0
  dtype: Any = None
  face_size: int = 96

  def setup(self):
    c = lambda n: scaled(n, self.width_multiplier)
    encoder, decoder = _layout(self.face_size)
    # Nested lists name their modules face_encoder_blocks_{i}_{j}, ...: the
    # PyTorch state_dict's names (see the module docstring).
    self.face_encoder_blocks = [
        [ConvBNReLU(c(f), k, s, p, residual=res, dtype=self.dtype) for f, k, s, p, res in block]
        for block in encoder]
    self.audio_encoder = AudioEncoder(self.width_multiplier, dtype=self.dtype)
    self.face_decoder_blocks = [[ConvBNReLU(c(512), 1, 1, 0, dtype=self.dtype)]] + [
        [ConvTBNReLU(c(f), k, s, p, op, dtype=self.dtype)]
        + [ConvBNReLU(c(f), 3, 1, 1, residual=True, dtype=self.dtype) for _ in range(n_res)]
        for f, k, s, p, op, n_res in decoder]
    self.output_block = [ConvBNReLU(c(32), 3, 1, 1, dtype=self.dtype),
                         nn.Conv(3, (1, 1), padding=((0, 0), (0, 0)), dtype=self.dtype)]

  def encode_faces(self, faces: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """Face encoder: (N, 96, 96, 6) -> its 7 block outputs, shallowest first."""
    feats, x = [], faces
    for block in self.face_encoder_blocks:
      for layer in block:
        x = layer(x, train)
      feats.append(x)
    return tuple(feats)

  def decode_faces(self, audio: jax.Array, feats: Sequence[jax.Array],
                   train: bool = False) -> jax.Array:
    """Audio (N, 80, 16, 1) + `encode_faces` features -> (N, 96, 96, 3).

    Features with a leading axis of 1 are broadcast over the N windows.
    """
    n = audio.shape[0]
    feats = [jnp.broadcast_to(f, (n,) + f.shape[1:]) for f in feats]
    x = self.audio_encoder(audio, train)
    x = self.face_decoder_blocks[0][0](x, train)
    x = jnp.concatenate([x, feats.pop().astype(x.dtype)], axis=-1)
    for block in self.face_decoder_blocks[1:]:
      for layer in block:
        x = layer(x, train)
      x = jnp.concatenate([x, feats.pop().astype(x.dtype)], axis=-1)
    x = self.output_block[0](x, train)
    x = self.output_block[1](x)
    return nn.sigmoid(x.astype(jnp.float32))

  def __call__(self, audio: jax.Array, faces: jax.Array, train: bool = False) -> jax.Array:
    if faces.ndim != audio.ndim or faces.ndim not in (4, 5):
      raise ValueError(f"expected 4-D or 5-D audio and faces, got shapes "
                       f"{audio.shape} and {faces.shape}")
    batch = None
    if faces.shape[-3:-1] != (self.face_size, self.face_size):
      raise ValueError(f"this Wav2Lip takes {self.face_size}x{self.face_size} faces "
                       f"(face_size), got {faces.shape[-3]}x{faces.shape[-2]}")
    if faces.ndim == 5:
      audio, batch = fold_time(audio)
      faces, _ = fold_time(faces)
    out = self.decode_faces(audio, self.encode_faces(faces, train), train)
    if batch is not None:
      out = unfold_time(out, batch)
    return out
