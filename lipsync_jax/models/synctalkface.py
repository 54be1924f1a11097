"""SyncTalkFace (Park et al., AAAI 2022): Wav2Lip plus an Audio-Lip Memory.

Model definitions of variants.md Part A (NHWC; see that file for sources):

  audio (N,80,16,1) -> AudioEncoder (Wav2Lip's)         -> f_aud (N,512)
  faces (N,S,S,6)   -> FaceEncoder  (Wav2Lip's, "identity encoder")
                       -> 7 skips, (N,S,S,16) ... (N,1,1,512)
  lips (N,5,S,S,3)  -> LipEncoder (Conv3d stem, training only) -> f_lip (N,512)
  AudioLipMemory:
    A_aud = softmax_S(kappa cos(q_embd(f_aud), M_aud))     (N,S)  key address
    A_lip = softmax_S(kappa cos(v_embd(f_lip), M_lip))     (N,S)  value address
    key recall   A_aud M_lip,  value recall   A_lip M_lip  (N,512)
    z = fusion(dropout([f_aud ; recall]))                  (N,512)
  FaceDecoder (Wav2Lip's) on z (N,1,1,512) and the skips  -> (N,S,S,3)

S is the face size: 96 for `SyncTalkFace` (arch "synctalkface", sigmoid,
[0, 1], Wav2Lip's weights fit) and 128 for `SyncTalkFacePaper`
("synctalkface_paper", tanh, [-1, 1], the authors' code). Any multiple of 32
works: the bottleneck kernels (the identity encoder's and lip encoder's last
k-by-k p0 conv, the decoder's first k s1 p0 transposed conv) are S // 32.

Parameter counts (width 1): 45,654,963 at 96 (Wav2Lip's 36,298,035 + lip
encoder 8,208,512 + memory 1,148,416) and 52,994,995 at 128.

Training runs both decoding paths (`__call__` with `lip`); inference needs
only faces and audio (`__call__` without `lip`, the key path). The alignment
and storage losses are `lipsync_jax.losses.memory_alignment_kl` and
`memory_store_loss`; `SyncTalkFace.encode_lip` gives the lip embeddings of the
visual-visual sync loss and `forced_slot_decode` the memory-inspection grid.

Submodules (parameter groups): `audio_encoder` (as Wav2Lip's),
`identity_encoder` (Wav2Lip's `face_encoder_blocks_{i}_{j}`), `lip_encoder`
(`layers_0` the Conv3d stem, `layers_{i}_{j}` for l1..l5), `memory`
(`key_memory`, `value_memory`, `q_embd`, `v_embd`, `fusion`) and `decoder`
(Wav2Lip's `face_decoder_blocks_{i}_{j}`, `output_block_{0,1}`);
`from_wav2lip` copies a 96 px Wav2Lip's weights into the shared parts.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import flax
import jax
import jax.numpy as jnp
import flax.linen as nn
from flax import traverse_util

from lipsync_jax.models.audio_encoder import AudioEncoder
from lipsync_jax.models.layers import (ConvBNReLU, ConvTBNReLU, conv2d, fold_time, scaled,
                                       unfold_time)
from lipsync_jax.models.wav2lip import _DECODER_UP, _ENCODER

Dtype = Any

OUTPUT_ACTIVATIONS = ("sigmoid", "tanh")
VALUE_PATH_SOURCES = ("recalled", "raw")


def bottleneck_kernel(image_size: int) -> int:
  """Kernel of the k-by-k p0 bottleneck layers at face size `image_size`.

  Five stride-2 stages take S to S / 32 (3 at 96, 4 at 128), which one k p0
  conv (or k s1 p0 transposed conv) maps to 1x1 and back.
  """
  if image_size < 32 or image_size % 32:
    raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
  return image_size // 32


def _activate(x: jax.Array, activation: str) -> jax.Array:
  x = x.astype(jnp.float32)
  if activation == "sigmoid":
    return nn.sigmoid(x)
  if activation == "tanh":
    return jnp.tanh(x)
  raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {activation!r}")


# -----------------------------------------------------------------------------
# Wav2Lip's face encoder and decoder at any size (shared with au_tcn).
# -----------------------------------------------------------------------------


class FaceEncoder(nn.Module):
  """Wav2Lip's face encoder (upstream.md §2) at face size `image_size`.

  (N, S, S, C_in) -> a tuple of 7 skip features, shallowest first:
  (N,S,S,16), (N,S/2,S/2,32), ..., (N,S/32,S/32,512), (N,1,1,512) (channels
  times `width_multiplier`). At 96 this is Wav2Lip's encoder exactly (same
  parameter names, 8,171,056 parameters); at 128 the last block's first conv
  is k4 p0 (10,006,064 parameters).
  """
  width_multiplier: float = 1.0
  image_size: int = 96
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, faces: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    k = bottleneck_kernel(self.image_size)
    if faces.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f"faces must be {self.image_size}x{self.image_size}, got {faces.shape}")
    blocks = list(_ENCODER)
    blocks[-1] = ((512, k, 1, 0, False), (512, 1, 1, 0, False))
    c = lambda n: scaled(n, self.width_multiplier)
    feats, x = [], faces
    for i, block in enumerate(blocks):
      for j, (f, kk, s, p, res) in enumerate(block):
        x = ConvBNReLU(c(f), kk, s, p, residual=res, dtype=self.dtype,
                       name=f"face_encoder_blocks_{i}_{j}")(x, train)
      feats.append(x)
    return tuple(feats)


class FaceDecoder(nn.Module):
  """Wav2Lip's face decoder and output block (upstream.md §2) at any size.

  z (N, 1, 1, C) (any C; d0 maps it to 512) and the encoder's 7 skips
  (a sequence, never consumed) -> (N, S, S, 3) float32 through
  `output_activation` ("sigmoid" for [0, 1], "tanh" for [-1, 1]). The first
  transposed conv is k(S/32) s1 p0. At 96 this is Wav2Lip's decoder exactly
  (25,291,072 + output block 23,235 parameters); 28,961,088 + 23,235 at 128.
  """
  width_multiplier: float = 1.0
  image_size: int = 96
  output_activation: str = "sigmoid"
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, z: jax.Array, skips: Sequence[jax.Array],
               train: bool = False) -> jax.Array:
    k = bottleneck_kernel(self.image_size)
    if len(skips) != len(_DECODER_UP) + 1:
      raise ValueError(f"expected {len(_DECODER_UP) + 1} skip features, got {len(skips)}")
    up = list(_DECODER_UP)
    up[0] = (512, k, 1, 0, 0, 1)
    c = lambda n: scaled(n, self.width_multiplier)
    x = ConvBNReLU(c(512), 1, 1, 0, dtype=self.dtype, name="face_decoder_blocks_0_0")(z, train)
    x = jnp.concatenate([x, skips[-1].astype(x.dtype)], axis=-1)
    for i, (f, kk, s, p, op, n_res) in enumerate(up, start=1):
      x = ConvTBNReLU(c(f), kk, s, p, op, dtype=self.dtype,
                      name=f"face_decoder_blocks_{i}_0")(x, train)
      for j in range(1, n_res + 1):
        x = ConvBNReLU(c(f), 3, 1, 1, residual=True, dtype=self.dtype,
                       name=f"face_decoder_blocks_{i}_{j}")(x, train)
      x = jnp.concatenate([x, skips[-1 - i].astype(x.dtype)], axis=-1)
    x = ConvBNReLU(c(32), 3, 1, 1, dtype=self.dtype, name="output_block_0")(x, train)
    x = nn.Conv(3, (1, 1), padding=((0, 0), (0, 0)), dtype=self.dtype,
                name="output_block_1")(x)
    return _activate(x, self.output_activation)


# -----------------------------------------------------------------------------
# Lip encoder.
# -----------------------------------------------------------------------------


class Conv3DStem(nn.Module):
  """The lip encoder's l0: Conv3d 3->C, kernel (L,7,7), stride (2,2,2),
  padding (0,3,3), with bias, no BN, no activation, over an L-frame window.

  (N, L, S, S, 3) -> (N, S/2, S/2, C): the time kernel covers the whole
  window, so the output has one time step, squeezed. Kernel (L, 7, 7, 3, C)
  (PyTorch's (C, 3, L, 7, 7) transposed to DHWIO), bias (C,). Computed as the
  equal 2-D conv over the frames stacked on channels (channel t*3 + c).
  """
  features: int
  window: int = 5
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, lips: jax.Array) -> jax.Array:
    n, t, h, w, c = lips.shape
    if t != self.window:
      raise ValueError(f"the lip window must have {self.window} frames, got {lips.shape}")
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (self.window, 7, 7, c, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    dtype = self.dtype or lips.dtype
    x = jnp.transpose(lips, (0, 2, 3, 1, 4)).reshape(n, h, w, t * c).astype(dtype)
    k2 = jnp.transpose(kernel, (1, 2, 0, 3, 4)).reshape(7, 7, t * c, self.features)
    return conv2d(x, k2.astype(dtype), 2, 3) + bias.astype(dtype)


class LipEncoder(nn.Module):
  """Lip encoder (variants.md A3.3): a 5-frame mouth window -> f_lip.

  (N, 5, S, S, 3) windows (upper half set to the mask value) -> (N, C) with
  C = 512 * `width_multiplier`, non-negative (ends in a ReLU). Layers:
  l0 `Conv3DStem` (S/2), l1 CBR 64 s2 + 3 res, l2 128 s2 + 2 res, l3 256 s2
  + 2 res, l4 512 s2 + 1 res (S/32), l5 CBR 512 k(S/32) p0 + CBR 512 k1.
  8,208,512 parameters at 96, 10,043,520 at 128.
  """
  width_multiplier: float = 1.0
  image_size: int = 96
  window: int = 5
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, lips: jax.Array, train: bool = False) -> jax.Array:
    k = bottleneck_kernel(self.image_size)
    if lips.ndim != 5 or lips.shape[2:4] != (self.image_size, self.image_size):
      raise ValueError(f"lips must be (N, {self.window}, {self.image_size}, "
                       f"{self.image_size}, 3), got {lips.shape}")
    c = lambda n: scaled(n, self.width_multiplier)
    x = Conv3DStem(c(64), self.window, self.dtype, name="layers_0")(lips)
    blocks = (
        ((64, 3, 2, 1, False),) + ((64, 3, 1, 1, True),) * 3,
        ((128, 3, 2, 1, False),) + ((128, 3, 1, 1, True),) * 2,
        ((256, 3, 2, 1, False),) + ((256, 3, 1, 1, True),) * 2,
        ((512, 3, 2, 1, False), (512, 3, 1, 1, True)),
        ((512, k, 1, 0, False), (512, 1, 1, 0, False)),
    )
    for i, block in enumerate(blocks, start=1):
      for j, (f, kk, s, p, res) in enumerate(block):
        x = ConvBNReLU(c(f), kk, s, p, residual=res, dtype=self.dtype,
                       name=f"layers_{i}_{j}")(x, train)
    return x.reshape(x.shape[0], -1)


def mask_upper_half(frames: jax.Array, mask_value: float = 0.0) -> jax.Array:
  """Sets rows [0, H // 2) of (..., H, W, C) frames to `mask_value`."""
  h = frames.shape[-3]
  return frames.at[..., : h // 2, :, :].set(mask_value)


def lip_windows(frames: jax.Array, window: int = 5, mask_value: float = 0.0) -> jax.Array:
  """Lip-encoder input from consecutive frames.

  Args:
    frames: (B, T + window - 1, H, W, 3), e.g. the 9 frames target start - 2
      ... + 6 for T = 5.
    window: frames per lip window (5).
    mask_value: value of the masked upper half (0 in both presets' pixel
      spaces: black in [0, 1], mid-grey in [-1, 1]).
  Returns:
    (B, T, window, H, W, 3): window t is frames t .. t + window - 1 (centred on
    target frame t), upper half masked.
  """
  t = frames.shape[1] - window + 1
  if t < 1:
    raise ValueError(f"need at least {window} frames, got {frames.shape}")
  stacked = jnp.stack([frames[:, i:i + window] for i in range(t)], axis=1)
  return mask_upper_half(stacked, mask_value)


# -----------------------------------------------------------------------------
# Audio-Lip Memory.
# -----------------------------------------------------------------------------


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||_2, eps) along the last axis (PyTorch `F.normalize`)."""
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def cosine_address(query: jax.Array, memory: jax.Array, kappa: float) -> jax.Array:
  """Memory address softmax_S(kappa * cos(query, memory rows)).

  Args:
    query: (N, C).
    memory: (S, C) slot matrix.
    kappa: softmax scale (inverse temperature; the code's `radius`).
  Returns:
    (N, S) float32, rows summing to 1.
  """
  q = l2_normalize(query.astype(jnp.float32))
  m = l2_normalize(memory.astype(jnp.float32))
  return jax.nn.softmax(kappa * (q @ m.T), axis=-1)


class AudioLipMemory(nn.Module):
  """Key (audio) and value (lip) slot memories with their projections.

  Parameters: `key_memory` M_aud and `value_memory` M_lip, (slots, dim),
  i.i.d. N(0, init_std); `q_embd` and `v_embd`, Linear -> dim (when
  `query_proj` / `value_proj`; else identity, which needs input width dim);
  `fusion`, Linear (C_aud + dim) -> out_features after dropout
  `fusion_dropout` (training only; needs rngs={"dropout": key}). At the
  defaults (96 x 512, 512-d inputs and output): 1,148,416 parameters.
  The addressing runs in float32.
  """
  slots: int = 96
  dim: int = 512
  out_features: int = 512
  kappa: float = 16.0
  init_std: float = 0.5
  query_proj: bool = True
  value_proj: bool = True
  fusion_dropout: float = 0.5
  dtype: Dtype | None = None

  def setup(self):
    init = nn.initializers.normal(self.init_std)
    self.key_memory = self.param("key_memory", init, (self.slots, self.dim), jnp.float32)
    self.value_memory = self.param("value_memory", init, (self.slots, self.dim), jnp.float32)
    if self.query_proj:
      self.q_embd = nn.Dense(self.dim, dtype=self.dtype)
    if self.value_proj:
      self.v_embd = nn.Dense(self.dim, dtype=self.dtype)
    self.dropout = nn.Dropout(self.fusion_dropout)
    self.fusion = nn.Dense(self.out_features, dtype=self.dtype)

  def address_audio(self, f_aud: jax.Array) -> jax.Array:
    """Key addressing: f_aud (N, C_aud) -> A_aud (N, slots) float32."""
    q = self.q_embd(f_aud) if self.query_proj else f_aud
    return cosine_address(q, self.key_memory, self.kappa)

  def address_lip(self, f_lip: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Value addressing: f_lip (N, C_lip) -> (A_lip (N, slots) float32,
    v_embd(f_lip) (N, dim) float32, the storage loss's target)."""
    v = self.v_embd(f_lip) if self.value_proj else f_lip
    return cosine_address(v, self.value_memory, self.kappa), v.astype(jnp.float32)

  def recall(self, address: jax.Array) -> jax.Array:
    """address (N, slots) -> address @ M_lip (N, dim) float32, raw value rows.

    Both addresses read the value memory.
    """
    return address.astype(jnp.float32) @ self.value_memory

  def fuse(self, f_aud: jax.Array, lip_feature: jax.Array, train: bool = False) -> jax.Array:
    """Decoder seed z = fusion(dropout([f_aud ; lip_feature])), (N, out_features)."""
    x = jnp.concatenate([f_aud, lip_feature.astype(f_aud.dtype)], axis=-1)
    return self.fusion(self.dropout(x, deterministic=not train))

  def __call__(self, f_aud: jax.Array, train: bool = False) -> jax.Array:
    """Inference path: f_aud -> key address -> recall -> z (N, out_features)."""
    return self.fuse(f_aud, self.recall(self.address_audio(f_aud)), train)


# -----------------------------------------------------------------------------
# The generator.
# -----------------------------------------------------------------------------


class SyncTalkFaceOutput(NamedTuple):
  """Everything a training step needs; (B, T, ...) or (N, ...) like the input.

  images: key-path frames Î_g (..., S, S, 3), the inference output.
  audio_address: A_aud (..., slots) float32.
  key_recall: A_aud M_lip (..., dim) float32.
  value_images: value-path frames Î_G, or None without `lip`.
  lip_address: A_lip (..., slots) float32, or None.
  lip_feature: f_lip (..., C) raw lip-encoder output (the ground-truth side of
    the visual-visual sync loss), or None.
  lip_query: v_embd(f_lip) (..., dim) float32, the storage loss's target, or None.
  value_recall: A_lip M_lip (..., dim) float32, the storage loss's prediction,
    or None.
  """
  images: jax.Array
  audio_address: jax.Array
  key_recall: jax.Array
  value_images: jax.Array | None = None
  lip_address: jax.Array | None = None
  lip_feature: jax.Array | None = None
  lip_query: jax.Array | None = None
  value_recall: jax.Array | None = None


class SyncTalkFace(nn.Module):
  """SyncTalkFace generator, 96 px default (45,654,963 parameters at width 1).

  Inference (Wav2Lip's contract; the key path):
    apply(v, audio (B,T,80,16,1), faces (B,T,S,S,6)) -> (B,T,S,S,3)
    apply(v, audio (N,80,16,1),   faces (N,S,S,6))   -> (N,S,S,3)
  Training (both paths):
    apply(v, audio, faces, lip (B,T,5,S,S,3) or (N,5,S,S,3), train=True,
          mutable=["batch_stats"], rngs={"dropout": key}) -> SyncTalkFaceOutput
  faces: channels 0-2 the target with its lower half set to the mask value,
  3-5 the reference, in the preset's pixel range (`pixel_range`). lip: per
  target frame the 5-frame window centred on it, upper half masked
  (`lip_windows`). `return_aux` (default: whether `lip` is given) selects the
  `SyncTalkFaceOutput` instead of the images alone. Time is folded into the
  batch time-major. `init` without `lip` still creates every parameter.

  Config (variants.md A9; [code] defaults unless noted):
    image_size 96 [ours; 128 in the paper preset], output_activation
    "sigmoid" [ours; "tanh"], memory_slots 96, memory_dim 512, kappa 16,
    memory_init_std 0.5, query_proj / value_proj True, fusion_dropout 0.5,
    value_path_source "recalled" (or "raw": f_lip itself, the paper's
    equation), fuse_paths_in_batch False [ours: True decodes both paths in
    one 2N batch, which changes BN batch statistics in training],
    lip_window 5.
  """
  width_multiplier: float = 1.0
  dtype: Dtype | None = None
  image_size: int = 96
  output_activation: str = "sigmoid"
  memory_slots: int = 96
  memory_dim: int = 512
  kappa: float = 16.0
  memory_init_std: float = 0.5
  query_proj: bool = True
  value_proj: bool = True
  fusion_dropout: float = 0.5
  value_path_source: str = "recalled"
  fuse_paths_in_batch: bool = False
  lip_window: int = 5

  def setup(self):
    bottleneck_kernel(self.image_size)
    if self.output_activation not in OUTPUT_ACTIVATIONS:
      raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, "
                       f"got {self.output_activation!r}")
    if self.value_path_source not in VALUE_PATH_SOURCES:
      raise ValueError(f"value_path_source must be one of {VALUE_PATH_SOURCES}, "
                       f"got {self.value_path_source!r}")
    c = scaled(512, self.width_multiplier)
    dim = scaled(self.memory_dim, self.width_multiplier)
    if dim != c and (self.value_path_source == "raw" or not self.query_proj
                     or not self.value_proj):
      raise ValueError("memory_dim must equal the encoders' width (512) when a projection "
                       "is off or value_path_source is 'raw'")
    kw = dict(width_multiplier=self.width_multiplier, image_size=self.image_size,
              dtype=self.dtype)
    self.audio_encoder = AudioEncoder(self.width_multiplier, dtype=self.dtype)
    self.identity_encoder = FaceEncoder(**kw)
    self.lip_encoder = LipEncoder(window=self.lip_window, **kw)
    self.memory = AudioLipMemory(self.memory_slots, dim, c, self.kappa, self.memory_init_std,
                                 self.query_proj, self.value_proj, self.fusion_dropout,
                                 self.dtype)
    self.decoder = FaceDecoder(output_activation=self.output_activation, **kw)

  @property
  def pixel_range(self) -> tuple[float, float]:
    """Range of the input and output pixels: (0, 1) or (-1, 1)."""
    return (0.0, 1.0) if self.output_activation == "sigmoid" else (-1.0, 1.0)

  @property
  def mask_value(self) -> float:
    """Value of masked pixels (0 in both pixel ranges)."""
    return 0.0

  # -- building blocks (also usable with `apply(..., method=...)`) -----------

  def embed_audio(self, audio: jax.Array, train: bool = False) -> jax.Array:
    """Mel windows (N, 80, 16, 1) -> f_aud (N, 512 * width)."""
    a = self.audio_encoder(audio, train)
    return a.reshape(a.shape[0], -1)

  def encode_identity(self, faces: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
    """Faces (N, S, S, 6) -> the 7 skip features (see `FaceEncoder`)."""
    return self.identity_encoder(faces, train)

  def encode_lip(self, lips: jax.Array, train: bool = False) -> jax.Array:
    """Lip windows (..., 5, S, S, 3) -> f_lip (..., 512 * width).

    For the visual-visual sync loss, call it on the generated window with
    stop-gradient parameters (the generated side) and on the ground-truth
    window centred on the same frame.
    """
    lead = lips.shape[:-4]
    x = lips.reshape((-1,) + lips.shape[-4:])
    if self.dtype is not None:
      x = x.astype(self.dtype)
    return self.lip_encoder(x, train).reshape(lead + (-1,))

  def decode(self, z: jax.Array, skips: Sequence[jax.Array], train: bool = False) -> jax.Array:
    """Decoder seed z (N, C) and skips -> (N, S, S, 3) float32."""
    return self.decoder(z.reshape(z.shape[0], 1, 1, -1), skips, train)

  def decode_with_address(self, faces: jax.Array, address: jax.Array,
                          audio: jax.Array | None = None, train: bool = False) -> jax.Array:
    """Decodes with a given key address instead of the audio's.

    Args:
      faces: (N, S, S, 6).
      address: (N, slots) weights over the memory slots (rows need not sum
        to 1). The recalled lip feature is address @ M_lip.
      audio: (N, 80, 16, 1) mel windows giving f_aud, or None for f_aud = 0
        (the recalled lip feature alone drives the mouth).
      train: BN/dropout mode.
    Returns:
      (N, S, S, 3) float32.
    """
    if self.dtype is not None:
      faces = faces.astype(self.dtype)
    skips = self.encode_identity(faces, train)
    if audio is None:
      f_aud = jnp.zeros((faces.shape[0], scaled(512, self.width_multiplier)), faces.dtype)
    else:
      f_aud = self.embed_audio(audio.astype(self.dtype) if self.dtype else audio, train)
    z = self.memory.fuse(f_aud, self.memory.recall(address), train)
    return self.decode(z, skips, train)

  def forced_slot_decode(self, faces: jax.Array, audio: jax.Array | None = None,
                         slots: Sequence[int] | None = None) -> jax.Array:
    """Memory inspection: decode with a one-hot address on each slot (eval mode).

    Args:
      faces: (N, S, S, 6) identity inputs (masked target + reference).
      audio: (N, 80, 16, 1) or None (f_aud = 0).
      slots: slot indices (static), default all `memory_slots`.
    Returns:
      (len(slots), N, S, S, 3) float32: row k decodes slot slots[k].
    """
    slots = tuple(range(self.memory_slots)) if slots is None else tuple(int(s) for s in slots)
    n, k = faces.shape[0], len(slots)
    onehot = jax.nn.one_hot(jnp.asarray(slots), self.memory_slots, dtype=jnp.float32)
    address = jnp.repeat(onehot, n, axis=0)                       # row k*N + n
    faces_k = jnp.tile(faces, (k, 1, 1, 1))
    audio_k = None if audio is None else jnp.tile(audio, (k, 1, 1, 1))
    out = self.decode_with_address(faces_k, address, audio_k, train=False)
    return out.reshape((k, n) + out.shape[1:])

  # -- forward ----------------------------------------------------------------

  def __call__(self, audio: jax.Array, faces: jax.Array, lip: jax.Array | None = None,
               train: bool = False, return_aux: bool | None = None):
    if return_aux is None:
      return_aux = lip is not None
    s = self.image_size
    batch = None
    if faces.ndim == 5:
      if audio.ndim != 5 or audio.shape[:2] != faces.shape[:2]:
        raise ValueError(f"5-D faces {faces.shape} need audio (B, T, 80, 16, 1) with the "
                         f"same (B, T), got {audio.shape}")
      if lip is not None and (lip.ndim != 6 or lip.shape[:2] != faces.shape[:2]):
        raise ValueError(f"5-D faces {faces.shape} need lip (B, T, {self.lip_window}, {s}, "
                         f"{s}, 3), got {lip.shape}")
      faces, batch = fold_time(faces)
      audio, _ = fold_time(audio)
      if lip is not None:
        lip, _ = fold_time(lip)
    elif faces.ndim != 4 or audio.ndim != 4 or audio.shape[0] != faces.shape[0]:
      raise ValueError(f"expected faces (N, {s}, {s}, 6) and audio (N, 80, 16, 1) or their "
                       f"(B, T, ...) forms, got {faces.shape} and {audio.shape}")
    elif lip is not None and (lip.ndim != 5 or lip.shape[0] != faces.shape[0]):
      raise ValueError(f"4-D faces need lip (N, {self.lip_window}, {s}, {s}, 3), got {lip.shape}")
    if faces.shape[1:] != (s, s, 6):
      raise ValueError(f"faces must be ({s}, {s}, 6) per frame, got {faces.shape}")
    if self.dtype is not None:
      faces, audio = faces.astype(self.dtype), audio.astype(self.dtype)

    f_aud = self.embed_audio(audio, train)
    skips = self.encode_identity(faces, train)
    a_aud = self.memory.address_audio(f_aud)
    key_recall = self.memory.recall(a_aud)
    z_key = self.memory.fuse(f_aud, key_recall, train)

    if lip is None:
      if self.is_initializing():  # create the training-only parameters too
        dummy = jnp.zeros((1, self.lip_window, s, s, 3), faces.dtype)
        self.memory.address_lip(self.encode_lip(dummy))
      images = self.decode(z_key, skips, train)
      aux = SyncTalkFaceOutput(images, a_aud, key_recall)
    else:
      f_lip = self.encode_lip(lip, train)
      a_lip, lip_query = self.memory.address_lip(f_lip)
      value_recall = self.memory.recall(a_lip)
      source = value_recall if self.value_path_source == "recalled" else f_lip
      z_val = self.memory.fuse(f_aud, source, train)
      if self.fuse_paths_in_batch:
        both = self.decode(jnp.concatenate([z_key, z_val]),
                           tuple(jnp.concatenate([f, f]) for f in skips), train)
        images, value_images = jnp.split(both, 2)
      else:
        images = self.decode(z_key, skips, train)
        value_images = self.decode(z_val, skips, train)
      aux = SyncTalkFaceOutput(images, a_aud, key_recall, value_images, a_lip,
                               f_lip.astype(jnp.float32), lip_query, value_recall)

    if batch is not None:
      aux = jax.tree_util.tree_map(lambda x: unfold_time(x, batch), aux)
    return aux if return_aux else aux.images


class SyncTalkFacePaper(SyncTalkFace):
  """The authors' configuration: 128x128, tanh output, pixels in [-1, 1]
  (masked pixels 0, i.e. mid-grey). 52,994,995 parameters at width 1."""
  image_size: int = 128
  output_activation: str = "tanh"


# -----------------------------------------------------------------------------
# Weight transplant.
# -----------------------------------------------------------------------------

# Parameter groups of SyncTalkFace / AUTCN that have Wav2Lip's layout, and the
# Wav2Lip names they hold.
_WAV2LIP_GROUPS = {
    "audio_encoder": lambda name: name == "audio_encoder",
    "identity_encoder": lambda name: name.startswith("face_encoder_blocks_"),
    "decoder": lambda name: name.startswith(("face_decoder_blocks_", "output_block_")),
}


def from_wav2lip(variables: dict, wav2lip_variables: dict) -> dict:
  """Copies a Wav2Lip's weights into a model with Wav2Lip-shaped parts.

  Works for 96 px `SyncTalkFace` and `AUTCN` (same width multiplier as the
  Wav2Lip): `audio_encoder`, `identity_encoder` and `decoder` receive the
  Wav2Lip's audio encoder, face encoder, face decoder and output block, in
  every collection ("params", "batch_stats"); everything else is kept.

  Args:
    variables: the model's variables, e.g. from `init`.
    wav2lip_variables: a `Wav2Lip`'s variables.
  Returns:
    A new variables dict.
  Raises:
    ValueError: when names or shapes differ.
  """
  def shapes(tree):
    flat = traverse_util.flatten_dict(flax.core.unfreeze(tree))
    return {k: tuple(v.shape) for k, v in flat.items()}

  out = {}
  for col, tree in variables.items():
    tree = dict(tree)
    source = dict(wav2lip_variables.get(col, {}))
    for group, wanted in _WAV2LIP_GROUPS.items():
      if group not in tree:
        continue
      picked = {k: v for k, v in source.items() if wanted(k)}
      if group == "audio_encoder":
        picked = picked.get("audio_encoder", {})
      if shapes(tree[group]) != shapes(picked):
        raise ValueError(f"{col}/{group} does not match the Wav2Lip's names and shapes")
      tree[group] = picked
    out[col] = tree
  return out
