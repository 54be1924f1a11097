"""Audio- and AU-driven generator with TCN self-attention fusion (variants.md Part B).

Our Wav2Lip-family design (B3) of Chen et al., arXiv 2204.12756: the audio
and speech-related facial action units (AUs) predicted from it drive a
Wav2Lip decoder through a dilated non-causal temporal convolutional
self-attention network (TCSAN). NHWC, (B, T, ...) sequences:

  audio (B,T,80,16,1) -> AudioEncoder (Wav2Lip's)             -> a (B,T,512)
                      -> AudioToAU (conv trunk, BiLSTM, K heads)
                                        -> u (B,T,K*64), logits (B,T,K)
  faces               -> FaceEncoder (Wav2Lip's)  -> skips, v = e6 (B,T,512)
  TCSAN([a ; u ; v])  (B,T,1344) -> z (B,T,512)
  FaceDecoder (Wav2Lip's) on z (N,1,1,512) and the skips     -> (B,T,S,S,3)

Modes: "inpaint" (default; Wav2Lip's input, faces (B,T,S,S,6) masked target
+ reference) and "one_shot" (the papers' task; one identity image
(B,S,S,3), fed as its own reference, i.e. 6 channels = the image twice, and
the whole face is generated).

Also here: `AUClassifier`, the small CNN (lower-half crop -> K AU logits)
that, trained on the proxy labels and frozen, gives the AU loss; and
`AudioToAU` on its own (arch "audio_to_au"), trained before the generator
and then loaded into its `audio_to_au` group (same parameter tree).

Every size here is ours [assumed], as config fields with the spec's values.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import flax.linen as nn

from lipsync_jax.models.audio_encoder import AudioEncoder
from lipsync_jax.models.layers import (Conv2D, ConvBNReLU, batch_norm, fold_time, scaled,
                                       unfold_time)
from lipsync_jax.models.synctalkface import (OUTPUT_ACTIVATIONS, FaceDecoder, FaceEncoder,
                                             bottleneck_kernel)

Dtype = Any

SPEECH_AUS = (10, 14, 20, 25, 26)
"""The later code's speech-related AUs (variants.md B2), the default set."""
LOWER_FACE_AUS = (10, 12, 14, 15, 17, 20, 23, 25, 26)
"""All lower-face AUs OpenFace predicts, the extended option."""

MODES = ("inpaint", "one_shot")
ATTENTION_AXES = ("time", "channel")


def _check_mel(audio: jax.Array) -> None:
  if audio.ndim != 5 or audio.shape[2:] != (80, 16, 1):
    raise ValueError(f"expected audio (B, T, 80, 16, 1), got {audio.shape}")


# -----------------------------------------------------------------------------
# Audio-to-AU.
# -----------------------------------------------------------------------------


class ConvBNLReLU(nn.Module):
  """Conv2d (bias) -> BN -> LeakyReLU(0.2). (N, H, W, C) -> (N, Ho, Wo, features)."""
  features: int
  kernel_size: int | tuple[int, int] = 3
  strides: int | tuple[int, int] = 1
  padding: int | tuple[int, int] = 1
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = Conv2D(self.features, self.kernel_size, self.strides, self.padding,
               dtype=self.dtype, name="conv")(x)
    y = batch_norm(train, self.dtype, name="bn")(y)
    return nn.leaky_relu(y, 0.2)


# (features, kernel, stride, padding): 80x16 -> 40x16 -> 20x8 -> 10x4 -> 5x2 -> 1x1.
_MEL_TRUNK = (
    (16, 3, (2, 1), 1),
    (32, 3, 2, 1),
    (64, 3, 2, 1),
    (128, 3, 2, 1),
    (256, (5, 2), 1, 0),
)


class MelAUTrunk(nn.Module):
  """Per-frame conv trunk on the mel window, then a BiLSTM over time.

  (B, T, 80, 16, 1) -> (B, T, 2 * lstm_hidden). Conv layers (`layers_{i}`):
  conv k3 p1 + BN + LeakyReLU 0.2, 1->16 s(2,1), ->32 s2, ->64 s2, ->128 s2,
  ->256 kernel (5,2) p0 (1x1). Then `lstm_layers` bidirectional LSTM layers
  (`lstm_{i}`, hidden `lstm_hidden` per direction), run in float32 whatever
  the compute dtype.
  """
  width_multiplier: float = 1.0
  lstm_hidden: int = 128
  lstm_layers: int = 2
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, mel: jax.Array, train: bool = False) -> jax.Array:
    _check_mel(mel)
    b, t = mel.shape[:2]
    x = mel.reshape((b * t,) + mel.shape[2:])
    for i, (f, k, s, p) in enumerate(_MEL_TRUNK):
      x = ConvBNLReLU(scaled(f, self.width_multiplier), k, s, p, self.dtype,
                      name=f"layers_{i}")(x, train)
    x = x.reshape(b, t, -1).astype(jnp.float32)
    hidden = scaled(self.lstm_hidden, self.width_multiplier)
    for i in range(self.lstm_layers):
      x = nn.Bidirectional(nn.RNN(nn.OptimizedLSTMCell(hidden)),
                           nn.RNN(nn.OptimizedLSTMCell(hidden)), name=f"lstm_{i}")(x)
    return x


class AUHead(nn.Module):
  """One AU's head: FC -> hidden, FC -> feature (LeakyReLU 0.2 and dropout
  after each), FC -> 1.

  (B, T, D) -> (feature (B, T, feature_dim), logit (B, T) float32).
  """
  hidden: int = 128
  feature_dim: int = 64
  dropout: float = 0.5
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    for name, width in (("fc1", self.hidden), ("fc2", self.feature_dim)):
      x = nn.leaky_relu(nn.Dense(width, dtype=self.dtype, name=name)(x), 0.2)
      x = nn.Dropout(self.dropout)(x, deterministic=not train)
    logit = nn.Dense(1, dtype=self.dtype, name="fc3")(x)
    return x, logit[..., 0].astype(jnp.float32)


class AudioToAU(nn.Module):
  """Audio-to-AU module: mel windows -> per-frame AU features and logits.

  apply(v, audio (B, T, 80, 16, 1)) -> (u (B, T, K * au_feature_dim),
  logits (B, T, K) float32), K = len(aus), features concatenated in `aus`
  order. One shared `MelAUTrunk` (`trunk`) with K heads (`head_au{n}`) by
  default; `per_au_networks=True` gives each AU its own trunk
  (`trunk_au{n}`), as the later code. Dropout 0.5 in the heads (training
  needs rngs={"dropout": key}). Sizes scale with `width_multiplier`.
  """
  aus: Sequence[int] = SPEECH_AUS
  width_multiplier: float = 1.0
  dtype: Dtype | None = None
  per_au_networks: bool = False
  lstm_hidden: int = 128
  lstm_layers: int = 2
  head_hidden: int = 128
  au_feature_dim: int = 64
  dropout: float = 0.5

  @nn.compact
  def __call__(self, audio: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    if not self.aus:
      raise ValueError("aus must name at least one AU")
    trunk = lambda name: MelAUTrunk(self.width_multiplier, self.lstm_hidden,
                                    self.lstm_layers, self.dtype, name=name)
    shared = None if self.per_au_networks else trunk("trunk")(audio, train)
    feats, logits = [], []
    for au in self.aus:
      h = trunk(f"trunk_au{au}")(audio, train) if self.per_au_networks else shared
      f, l = AUHead(scaled(self.head_hidden, self.width_multiplier),
                    scaled(self.au_feature_dim, self.width_multiplier), self.dropout,
                    self.dtype, name=f"head_au{au}")(h, train)
      feats.append(f)
      logits.append(l)
    return jnp.concatenate(feats, axis=-1), jnp.stack(logits, axis=-1)


# -----------------------------------------------------------------------------
# TCSAN fusion.
# -----------------------------------------------------------------------------


class WNConv1D(nn.Module):
  """Weight-normalised dilated Conv1d with non-causal "same" padding.

  (B, T, C_in) -> (B, T, features). Kernel = g * v / ||v|| (norm per output
  channel, PyTorch's `weight_norm` on dim 0): `weight_v` (k, C_in, features)
  ~ N(0, init_std), `weight_g` (features,) starts at ||v||, `bias`
  (features,) zeros. Padding dilation * (k - 1) / 2 on both sides.
  """
  features: int
  kernel_size: int = 3
  dilation: int = 1
  init_std: float = 0.01
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.kernel_size % 2 != 1:
      raise ValueError(f"a non-causal 'same' conv needs an odd kernel, got {self.kernel_size}")
    v = self.param("weight_v", nn.initializers.normal(self.init_std),
                   (self.kernel_size, x.shape[-1], self.features), jnp.float32)
    norm = lambda w: jnp.sqrt(jnp.sum(jnp.square(w), axis=(0, 1)))
    g = self.param("weight_g", lambda _: norm(v))
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    kernel = v * (g / jnp.maximum(norm(v), 1e-12))
    dtype = self.dtype or x.dtype
    pad = self.dilation * (self.kernel_size - 1) // 2
    y = jax.lax.conv_general_dilated(x.astype(dtype), kernel.astype(dtype), (1,), [(pad, pad)],
                                     rhs_dilation=(self.dilation,),
                                     dimension_numbers=("NWC", "WIO", "NWC"))
    return y + bias.astype(dtype)


class MultiHeadSelfAttention(nn.Module):
  """Post-LN multi-head self-attention over the token axis.

  (B, L, D) -> (B, L, D): Q, K, V linears (no bias) to heads * head_dim,
  softmax(Q K^T / sqrt(head_dim)) with dropout `attn_dropout`, output linear
  (no bias) to D with dropout `out_dropout`, + input, LayerNorm (eps 1e-6).
  Softmax in float32. Attention weights are sown as
  intermediates["attention"] (B, heads, L, L).
  """
  num_heads: int = 4
  head_dim: int | None = None
  attn_dropout: float = 0.1
  out_dropout: float = 0.25
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    b, l, d = x.shape
    dk = self.head_dim or max(1, d // self.num_heads)
    proj = lambda name: nn.Dense(self.num_heads * dk, use_bias=False, dtype=self.dtype,
                                 name=name)(x).reshape(b, l, self.num_heads, dk)
    q, k, v = proj("query"), proj("key"), proj("value")
    scores = jnp.einsum("blhd,bmhd->bhlm", q, k).astype(jnp.float32) / math.sqrt(dk)
    attn = jax.nn.softmax(scores, axis=-1)
    self.sow("intermediates", "attention", attn)
    attn = nn.Dropout(self.attn_dropout)(attn, deterministic=not train)
    y = jnp.einsum("bhlm,bmhd->blhd", attn.astype(v.dtype), v).reshape(b, l, -1)
    y = nn.Dense(d, use_bias=False, dtype=self.dtype, name="out")(y)
    y = nn.Dropout(self.out_dropout)(y, deterministic=not train)
    return nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name="norm")(y + x)


class TemporalBlock(nn.Module):
  """One TCSAN level: (WN conv -> ReLU -> dropout) x 2 -> self-attention,
  then ReLU(out + residual); the residual is a 1x1 conv when the width
  changes (`downsample`, N(0, 0.01) init).

  (B, T, C_in) -> (B, T, features). attention_axis "time": tokens are the
  frames (any T); "channel": tokens are the channels and the feature axis is
  time (the later code's layout; its linears are sized by T, so T is fixed).
  """
  features: int
  kernel_size: int = 3
  dilation: int = 1
  dropout: float = 0.2
  attention_axis: str = "time"
  num_heads: int = 4
  head_dim: int | None = None
  attn_dropout: float = 0.1
  attn_out_dropout: float = 0.25
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    y = x
    for i in (1, 2):
      y = WNConv1D(self.features, self.kernel_size, self.dilation, dtype=self.dtype,
                   name=f"conv{i}")(y)
      y = nn.Dropout(self.dropout)(nn.relu(y), deterministic=not train)
    attention = MultiHeadSelfAttention(self.num_heads, self.head_dim, self.attn_dropout,
                                       self.attn_out_dropout, self.dtype, name="attention")
    if self.attention_axis == "time":
      y = attention(y, train)
    elif self.attention_axis == "channel":
      y = jnp.swapaxes(attention(jnp.swapaxes(y, 1, 2), train), 1, 2)
    else:
      raise ValueError(f"attention_axis must be one of {ATTENTION_AXES}, "
                       f"got {self.attention_axis!r}")
    res = x
    if x.shape[-1] != self.features:
      res = nn.Conv(self.features, (1,), kernel_init=nn.initializers.normal(0.01),
                    dtype=self.dtype, name="downsample")(x)
    return nn.relu(y + res.astype(y.dtype))


class TCSANFusion(nn.Module):
  """Dilated non-causal temporal conv self-attention network.

  (B, T, D) -> (B, T, channels[-1]); level i (`levels_{i}`) is a
  `TemporalBlock` with dilation 2**i. With k3 and two levels the conv stack
  sees 13 frames; the attention sees the whole sequence.
  """
  channels: Sequence[int] = (512, 512)
  kernel_size: int = 3
  dropout: float = 0.2
  attention_axis: str = "time"
  num_heads: int = 4
  head_dim: int | None = None
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    for i, c in enumerate(self.channels):
      x = TemporalBlock(c, self.kernel_size, 2 ** i, self.dropout, self.attention_axis,
                        self.num_heads, self.head_dim, dtype=self.dtype,
                        name=f"levels_{i}")(x, train)
    return x


# -----------------------------------------------------------------------------
# The generator.
# -----------------------------------------------------------------------------


class AUTCNOutput(NamedTuple):
  """images (B, T, S, S, 3) float32; au_logits (B, T, K) float32 (the
  audio-to-AU presence logits); au_features (B, T, K * 64)."""
  images: jax.Array
  au_logits: jax.Array
  au_features: jax.Array


class AUTCN(nn.Module):
  """Audio + AU driven generator with TCSAN fusion (variants.md B3).

  mode "inpaint" (default):
    apply(v, audio (B,T,80,16,1), faces (B,T,S,S,6)) -> (B,T,S,S,3)
    faces: masked target + reference, as Wav2Lip.
  mode "one_shot":
    apply(v, audio (B,T,80,16,1), identity (B,S,S,3)) -> (B,T,S,S,3)
    the identity image is its own reference (6 channels = the image twice),
    encoded once and shared by the T frames.
  Any T (time-axis attention); T must equal `seq_len` with
  attention_axis="channel". `return_aux=True` returns an `AUTCNOutput`.
  Training (train=True) needs mutable=["batch_stats"] and
  rngs={"dropout": key}.

  The audio-to-AU module (`audio_to_au`, trained beforehand) is frozen by
  default: it runs in eval mode (running BN statistics, no dropout) and its
  outputs are stop-gradient; `finetune_audio_to_au=True` trains it jointly.

  Config [assumed, variants.md B3]: image_size 96 (any multiple of 32),
  output_activation "sigmoid" ("tanh" for [-1, 1]), aus (10, 14, 20, 25, 26),
  per_au_networks False, au_feature_dim 64, use_au_features True,
  fuse_visual True (e6 enters the fusion), tcn_channels (512, 512),
  tcn_kernel 3, tcn_dropout 0.2, attention_axis "time", attention_heads 4,
  attention_head_dim None (width / heads for "time", 14 for "channel"),
  seq_len None.
  """
  width_multiplier: float = 1.0
  dtype: Dtype | None = None
  mode: str = "inpaint"
  image_size: int = 96
  output_activation: str = "sigmoid"
  aus: Sequence[int] = SPEECH_AUS
  per_au_networks: bool = False
  au_feature_dim: int = 64
  finetune_audio_to_au: bool = False
  use_au_features: bool = True
  fuse_visual: bool = True
  tcn_channels: Sequence[int] = (512, 512)
  tcn_kernel: int = 3
  tcn_dropout: float = 0.2
  attention_axis: str = "time"
  attention_heads: int = 4
  attention_head_dim: int | None = None
  seq_len: int | None = None

  def setup(self):
    if self.mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
    if self.output_activation not in OUTPUT_ACTIVATIONS:
      raise ValueError(f"output_activation must be one of {OUTPUT_ACTIVATIONS}, "
                       f"got {self.output_activation!r}")
    if self.attention_axis not in ATTENTION_AXES:
      raise ValueError(f"attention_axis must be one of {ATTENTION_AXES}, "
                       f"got {self.attention_axis!r}")
    if self.attention_axis == "channel" and not self.seq_len:
      raise ValueError("attention_axis='channel' needs a fixed seq_len")
    bottleneck_kernel(self.image_size)
    kw = dict(width_multiplier=self.width_multiplier, image_size=self.image_size,
              dtype=self.dtype)
    head_dim = self.attention_head_dim
    if head_dim is None and self.attention_axis == "channel":
      head_dim = 14
    self.audio_encoder = AudioEncoder(self.width_multiplier, dtype=self.dtype)
    self.audio_to_au = AudioToAU(tuple(self.aus), self.width_multiplier, self.dtype,
                                 self.per_au_networks, au_feature_dim=self.au_feature_dim)
    self.identity_encoder = FaceEncoder(**kw)
    self.fusion = TCSANFusion(tuple(scaled(c, self.width_multiplier) for c in self.tcn_channels),
                              self.tcn_kernel, self.tcn_dropout, self.attention_axis,
                              self.attention_heads, head_dim, self.dtype)
    self.decoder = FaceDecoder(output_activation=self.output_activation, **kw)

  @property
  def pixel_range(self) -> tuple[float, float]:
    """Range of the input and output pixels: (0, 1) or (-1, 1)."""
    return (0.0, 1.0) if self.output_activation == "sigmoid" else (-1.0, 1.0)

  def predict_aus(self, audio: jax.Array, train: bool = False) -> tuple[jax.Array, jax.Array]:
    """audio (B, T, 80, 16, 1) -> (u (B, T, K * 64), logits (B, T, K)), frozen
    unless `finetune_audio_to_au`."""
    _check_mel(audio)
    if self.dtype is not None:
      audio = audio.astype(self.dtype)
    if not self.finetune_audio_to_au:
      u, logits = self.audio_to_au(audio, False)
      return jax.lax.stop_gradient(u), jax.lax.stop_gradient(logits)
    return self.audio_to_au(audio, train)

  def __call__(self, audio: jax.Array, faces: jax.Array, train: bool = False,
               return_aux: bool = False):
    _check_mel(audio)
    b, t = audio.shape[:2]
    s = self.image_size
    if self.attention_axis == "channel" and t != self.seq_len:
      raise ValueError(f"attention_axis='channel' is built for T = {self.seq_len}, got T = {t}")
    if self.mode == "inpaint":
      if faces.shape != (b, t, s, s, 6):
        raise ValueError(f"inpaint mode needs faces (B, T, {s}, {s}, 6) matching audio "
                         f"{audio.shape}, got {faces.shape}")
    elif faces.shape != (b, s, s, 3):
      raise ValueError(f"one_shot mode needs an identity image (B, {s}, {s}, 3), got {faces.shape}")
    if self.dtype is not None:
      faces, audio = faces.astype(self.dtype), audio.astype(self.dtype)

    mel, _ = fold_time(audio)
    a = unfold_time(self.audio_encoder(mel, train).reshape(b * t, -1), b)
    u, logits = self.predict_aus(audio, train)

    if self.mode == "inpaint":
      folded, _ = fold_time(faces)
      skips = self.identity_encoder(folded, train)
      v = unfold_time(skips[-1].reshape(b * t, -1), b)
    else:
      ident = self.identity_encoder(jnp.concatenate([faces, faces], axis=-1), train)
      v = jnp.broadcast_to(ident[-1].reshape(b, 1, -1), (b, t, ident[-1].shape[-1]))
      # Time-major fold of the per-clip features: row t*B + b is clip b.
      skips = tuple(jnp.tile(f, (t,) + (1,) * (f.ndim - 1)) for f in ident)

    parts = [a]
    if self.use_au_features:
      parts.append(u.astype(a.dtype))
    if self.fuse_visual:
      parts.append(v.astype(a.dtype))
    z = self.fusion(jnp.concatenate(parts, axis=-1), train)      # (B, T, C)
    z, _ = fold_time(z)
    images = unfold_time(self.decoder(z.reshape(b * t, 1, 1, -1), skips, train), b)
    return AUTCNOutput(images, logits, u) if return_aux else images


# -----------------------------------------------------------------------------
# AU classifier (the AU loss network).
# -----------------------------------------------------------------------------


class AUClassifier(nn.Module):
  """Small CNN: face crop -> AU presence logits (variants.md B5).

  (..., H, W, 3) -> (..., K) float32 logits, K = len(aus). Four stride-2
  CBR blocks (`layers_{i}`, k3 p1, 32-64-128-256), global average pool, a
  linear (`head`). Any crop size (48x96 lower halves by default); with
  `crop_lower_half=True` it takes full faces and keeps rows H//2.. itself.
  390,661 parameters at the defaults.
  """
  aus: Sequence[int] = SPEECH_AUS
  widths: Sequence[int] = (32, 64, 128, 256)
  width_multiplier: float = 1.0
  crop_lower_half: bool = False
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, crops: jax.Array, train: bool = False) -> jax.Array:
    lead = crops.shape[:-3]
    x = crops.reshape((-1,) + crops.shape[-3:])
    if self.crop_lower_half:
      x = x[:, x.shape[1] // 2:]
    if self.dtype is not None:
      x = x.astype(self.dtype)
    for i, w in enumerate(self.widths):
      x = ConvBNReLU(scaled(w, self.width_multiplier), 3, 2, 1, dtype=self.dtype,
                     name=f"layers_{i}")(x, train)
    x = jnp.mean(x, axis=(1, 2))
    logits = nn.Dense(len(self.aus), dtype=self.dtype, name="head")(x)
    return logits.astype(jnp.float32).reshape(lead + (len(self.aus),))
