"""LPIPS-AttnWav2Lip generator: a residual-CBAM U-Net with an audio SAM.

This is the RECON design of upstream.md §5.3 (the authors' code is not
available; every choice below is ours and configurable):

  audio (N,80,16,1) -> AudioEncoder (Wav2Lip's) -> a (N,512)
  faces (N,96,96,6)
    enc0  CBR 6->32 k7 s1 p3, ResCBAM(32)            (N,96,96,32)
    enc1  CBR 32->64 k3 s2 p1, ResCBAM(64)           (N,48,48,64)
    enc2  ... 128                                    (N,24,24,128)
    enc3  ... 256                                    (N,12,12,256)
    enc4  ... 512                                    (N,6,6,512)
    SAM   x + FFC(FFC(x)), then AdaIN(x, a)          (N,6,6,512)
    dec3  ConvT-BN-ReLU 512->256 k3 s2 p1 op1, AdaIN(256, a),
          concat enc3, CBR 512->256, ResCBAM(256)    (N,12,12,256)
    dec2, dec1, dec0 likewise                        ... (N,96,96,32)
    out   Conv 32->3 k1 (bias), sigmoid              (N,96,96,3)

"CBR" is `layers.ConvBNReLU` (conv with bias). With the default config the
model has exactly the RECON count, 20,266,933 parameters: audio encoder
2,812,672, encoder 7,914,506, SAM 4,329,984, decoder 5,209,672, out 99.
That count pins the bias choices down (see models/attention.py): CBAM's MLP
and spatial conv and all FFC convs have no bias; every other conv, the
transposed convs and the AdaIN linears have one.

Audio reaches the image only through the AdaIN layers (in the SAM and, by
default, at every decoder level); their linears start at zero, so at init the
output does not depend on the audio and the dependence is learned.

Where the decoder's AdaIN sits (`decoder_adain`):
  "before_skip" (default): on the upsampled decoder stream, before the
    encoder's skip is concatenated. The skip reaches the output without an
    instance norm, so the face's own colours (skin tone, lip colour, the
    light) pass through.
  "after_fuse": after the level's CBR and ResCBAM (upstream.md's RECON table).
    The instance norm then removes every channel's per-image mean at every
    level, 96x96 included, and the output's colours can only come from the
    audio: trained, it drew grey lips with a cyan mouth on faces whose truth
    had red lips (issue 18). Checkpoints written before this field existed
    are read with it (`LEGACY_DEFAULTS`).

How each decoder level doubles its resolution (`decoder_upsample`):
  "transpose" (default, the RECON table's): ConvT-BN-ReLU k3 s2 p1 op1.
    A stride-2 transposed conv gives the four pixels of every 2x2 block
    different kernels, so a flat input comes out as a checkerboard (Odena et
    al., "Deconvolution and Checkerboard Artifacts", 2016): the initial
    output is dotted, and a few hundred steps leave the dots where the
    target keeps changing, the mouth (issue 18: a striped or dotted open
    mouth on the demo's seed 2).
  "resize": nearest-neighbour x2, then CBR k3 s1 p1. The same parameter
    count (a 3x3 kernel and a bias either way) and no checkerboard; the
    demo uses it (configs/demo.py).
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from lipsync_jax.models.attention import AdaIN, FFC, ResCBAM
from lipsync_jax.models.audio_encoder import AudioEncoder
from lipsync_jax.models.layers import (ConvBNReLU, ConvTBNReLU, extra_levels, fold_time,
                                       scaled, unfold_time)

Dtype = Any

ADAIN_POSITIONS = ("before_skip", "after_fuse")
UPSAMPLERS = ("transpose", "resize")


def level_widths(encoder_widths: Sequence[int], width_multiplier: float,
                 face_size: int | None) -> tuple[int, ...]:
  """The U-Net's level widths: `encoder_widths` scaled by the width
  multiplier, with the levels a large `face_size` adds (the first width
  again) in front (`layers.extra_levels`)."""
  widths = tuple(encoder_widths)
  if face_size is not None:
    widths = widths[:1] * extra_levels(int(face_size)) + widths
  return tuple(scaled(int(w), width_multiplier) for w in widths)


def encode_levels(levels: Sequence[nn.Module], x: jax.Array,
                  train: bool = False) -> list[jax.Array]:
  """The U-Net's encoder: (N, H, W, C) through bound `EncoderLevel`s ->
  every level's features, shallowest first."""
  feats = []
  for level in levels:
    x = level(x, train)
    feats.append(x)
  return feats


def decode_levels(sam: nn.Module, decoder: Sequence[nn.Module], out: nn.Module,
                  feats: Sequence[jax.Array], cond: jax.Array,
                  train: bool = False) -> jax.Array:
  """The U-Net's decoder (bound submodules): the SAM on the deepest
  feature, the `DecoderLevel`s with their skips, all conditioned on `cond`
  (N, D), then the 1x1 `out` conv and a float32 sigmoid -> (N, H, W, 3)."""
  x = sam(feats[-1], cond, train)
  for i in reversed(range(len(decoder))):
    x = decoder[i](x, feats[i], cond, train)
  return nn.sigmoid(out(x).astype(jnp.float32))


class EncoderLevel(nn.Module):
  """CBR (stride 1 k7 for level 0, stride 2 k3 after), then ResCBAM blocks.

  (N, H, W, C_in) -> (N, H / s, W / s, features).
  """
  features: int
  first: bool = False
  num_res: int = 1
  cbam_reduction: int = 16
  cbam_kernel: int = 7
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if self.first:
      x = ConvBNReLU(self.features, 7, 1, 3, dtype=self.dtype, name="conv")(x, train)
    else:
      x = ConvBNReLU(self.features, 3, 2, 1, dtype=self.dtype, name="conv")(x, train)
    for i in range(self.num_res):
      x = ResCBAM(self.features, self.cbam_reduction, self.cbam_kernel, self.dtype,
                  name=f"res_{i}")(x, train)
    return x


class SemanticAlignment(nn.Module):
  """The SAM: x + FFC^num_ffc(x), then AdaIN(x, audio) when `use_adain`.

  x (N, h, w, C) bottleneck features, audio (N, D) -> (N, h, w, C).
  """
  features: int
  num_ffc: int = 2
  ffc_ratio: float = 0.5
  use_adain: bool = True
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, audio: jax.Array, train: bool = False) -> jax.Array:
    if self.num_ffc > 0:
      y = x
      for i in range(self.num_ffc):
        y = FFC(self.features, self.ffc_ratio, dtype=self.dtype, name=f"ffc_{i}")(y, train)
      x = x + y
    if self.use_adain:
      x = AdaIN(self.features, dtype=self.dtype, name="adain")(x, audio)
    return x


class DecoderLevel(nn.Module):
  """x2 upsample (ConvT-BN-ReLU, or nearest + CBR), concat skip, CBR, ResCBAM
  blocks, AdaIN.

  x (N, h, w, C_in), skip (N, 2h, 2w, C_skip), audio (N, D)
  -> (N, 2h, 2w, features).
  """
  features: int
  num_res: int = 1
  cbam_reduction: int = 16
  cbam_kernel: int = 7
  use_adain: bool = True
  adain_position: str = "before_skip"
  upsample: str = "transpose"
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array, audio: jax.Array,
               train: bool = False) -> jax.Array:
    adain = (AdaIN(self.features, dtype=self.dtype, name="adain") if self.use_adain
             else None)
    if self.upsample == "resize":
      n, h, w, c = x.shape   # nearest x2: each pixel becomes a 2x2 block
      x = jnp.broadcast_to(x[:, :, None, :, None], (n, h, 2, w, 2, c))
      x = ConvBNReLU(self.features, 3, 1, 1, dtype=self.dtype, name="up")(
          x.reshape(n, 2 * h, 2 * w, c), train)
    else:
      x = ConvTBNReLU(self.features, dtype=self.dtype, name="up")(x, train)
    if adain is not None and self.adain_position == "before_skip":
      x = adain(x, audio)
    x = jnp.concatenate([x, skip.astype(x.dtype)], axis=-1)
    x = ConvBNReLU(self.features, 3, 1, 1, dtype=self.dtype, name="fuse")(x, train)
    for i in range(self.num_res):
      x = ResCBAM(self.features, self.cbam_reduction, self.cbam_kernel, self.dtype,
                  name=f"res_{i}")(x, train)
    if adain is not None and self.adain_position == "after_fuse":
      x = adain(x, audio)
    return x


class LPIPSAttnWav2Lip(nn.Module):
  """Residual-CBAM U-Net generator with FFC + AdaIN semantic alignment.

  Same interface as `Wav2Lip`:
    apply(variables, audio (B,T,80,16,1), faces (B,T,H,W,6)) -> (B,T,H,W,3)
    apply(variables, audio (N,80,16,1),   faces (N,H,W,6))   -> (N,H,W,3)
  faces: channels 0-2 the masked target, 3-5 the reference, BGR in [0, 1].
  Time is folded into batch time-major (`layers.fold_time`). H and W must be
  divisible by 2**(len(encoder_widths) - 1) (96x96 with the default 5 levels).
  Output: float32 sigmoid in [0, 1]. With train=True pass
  mutable=["batch_stats"].

  `face_size`: None (the default) takes any H, W divisible as above, with
  the levels of `encoder_widths`; a size (96, 128, 192, 256, ...; see
  `layers.extra_levels`) fixes it, and 192 and up add encoder and decoder
  levels at full resolution (the first width again) so that the bottleneck
  stays 6x6 (8x8 at 128 and 256).

  Submodules (parameter groups): `audio_encoder`, `encoder_{i}` (enc i),
  `sam`, `decoder_{i}` (dec i, i < len(widths) - 1) and `out`.
  """
  width_multiplier: float = 1.0
  dtype: Dtype | None = None
  encoder_widths: Sequence[int] = (32, 64, 128, 256, 512)
  res_blocks: int = 1
  cbam_reduction: int = 16
  cbam_kernel: int = 7
  ffc_ratio: float = 0.5
  num_ffc: int = 2
  adain_in_sam: bool = True
  adain_in_decoder: bool = True
  decoder_adain: str = "before_skip"
  decoder_upsample: str = "transpose"
  face_size: int | None = None

  # Create() kwargs that model files always store, and the value a file
  # written before the kwarg existed was trained with (model_dir reads it).
  LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {"decoder_adain": "after_fuse",
                                               "decoder_upsample": "transpose"}

  def setup(self):
    widths = self.widths
    if len(widths) < 2:
      raise ValueError(f"encoder_widths needs at least 2 levels, got {tuple(self.encoder_widths)}")
    if self.decoder_adain not in ADAIN_POSITIONS:
      raise ValueError(f"decoder_adain must be one of {ADAIN_POSITIONS}, "
                       f"got {self.decoder_adain!r}")
    if self.decoder_upsample not in UPSAMPLERS:
      raise ValueError(f"decoder_upsample must be one of {UPSAMPLERS}, "
                       f"got {self.decoder_upsample!r}")
    common = dict(num_res=self.res_blocks, cbam_reduction=self.cbam_reduction,
                  cbam_kernel=self.cbam_kernel, dtype=self.dtype)
    self.audio_encoder = AudioEncoder(self.width_multiplier, dtype=self.dtype)
    self.encoder = [EncoderLevel(w, first=(i == 0), **common)
                    for i, w in enumerate(widths)]
    self.sam = SemanticAlignment(widths[-1], self.num_ffc, self.ffc_ratio,
                                 self.adain_in_sam, self.dtype)
    self.decoder = [DecoderLevel(w, use_adain=self.adain_in_decoder,
                                 adain_position=self.decoder_adain,
                                 upsample=self.decoder_upsample, **common)
                    for w in widths[:-1]]
    self.out = nn.Conv(3, (1, 1), dtype=self.dtype)

  @property
  def widths(self) -> tuple[int, ...]:
    """Encoder level widths after the width multiplier, with the levels a
    large `face_size` adds (repeating the first width) in front."""
    return level_widths(self.encoder_widths, self.width_multiplier, self.face_size)

  def embed_audio(self, audio: jax.Array, train: bool = False) -> jax.Array:
    """The audio path: mel windows (N, 80, 16, 1) -> embedding a (N, 512*wm).

    `a` is what the SAM's and the decoder's AdaIN layers are conditioned on.
    """
    a = self.audio_encoder(audio, train)
    return a.reshape(a.shape[0], -1)

  def encode(self, faces: jax.Array, train: bool = False) -> list[jax.Array]:
    """Face encoder: (N, H, W, 6) -> per-level features, shallowest first."""
    return encode_levels(self.encoder, faces, train)

  def decode(self, feats: list[jax.Array], audio_emb: jax.Array,
             train: bool = False) -> jax.Array:
    """SAM on the deepest feature, then the decoder: -> (N, H, W, 3) sigmoid."""
    return decode_levels(self.sam, self.decoder, self.out, feats, audio_emb, train)

  def encode_faces(self, faces: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """The audio-independent half: (N, H, W, 6) -> per-level features.

    Same as `encode`; with `decode_faces`, the generator's interface for
    encoding a still photo's face once (see `models.encode_faces`).
    """
    return tuple(self.encode(faces, train))

  def decode_faces(self, audio: jax.Array, feats: Sequence[jax.Array],
                   train: bool = False) -> jax.Array:
    """Audio (N, 80, 16, 1) + `encode_faces` features -> (N, H, W, 3).

    Features with a leading axis of 1 are broadcast over the N windows.
    """
    n = audio.shape[0]
    feats = [jnp.broadcast_to(f, (n,) + f.shape[1:]) for f in feats]
    return self.decode(feats, self.embed_audio(audio, train), train)

  def __call__(self, audio: jax.Array, faces: jax.Array,
               train: bool = False) -> jax.Array:
    batch = None
    if faces.ndim == 5:
      if audio.ndim != 5 or audio.shape[:2] != faces.shape[:2]:
        raise ValueError(f"5-D faces {faces.shape} need audio (B, T, 80, 16, 1) with the "
                         f"same (B, T), got {audio.shape}")
      faces, batch = fold_time(faces)
      audio, _ = fold_time(audio)
    elif faces.ndim != 4 or audio.ndim != 4 or audio.shape[0] != faces.shape[0]:
      raise ValueError(f"expected faces (N, H, W, 6) and audio (N, 80, 16, 1) or their "
                       f"(B, T, ...) forms, got {faces.shape} and {audio.shape}")
    if faces.shape[-1] != 6:
      raise ValueError(f"faces need 6 channels (masked target + reference), got {faces.shape[-1]}")
    if self.face_size is not None and faces.shape[1:3] != (self.face_size, self.face_size):
      raise ValueError(f"this model takes {self.face_size}x{self.face_size} faces "
                       f"(face_size), got {faces.shape[1]}x{faces.shape[2]}")
    step = 2 ** (len(self.widths) - 1)
    if faces.shape[1] % step or faces.shape[2] % step:
      raise ValueError(f"face size {faces.shape[1]}x{faces.shape[2]} is not divisible by "
                       f"{step} ({len(self.widths)} encoder levels)")
    if self.dtype is not None:
      faces, audio = faces.astype(self.dtype), audio.astype(self.dtype)

    audio_emb = self.embed_audio(audio, train)
    out = self.decode(self.encode(faces, train), audio_emb, train)
    return out if batch is None else unfold_time(out, batch)
