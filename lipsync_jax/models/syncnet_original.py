"""The original SyncNet of Chung & Zisserman ("Out of time", ACCV-W 2016).

This is the network behind the published LSE-D / LSE-C numbers: the
`syncnet_v2.model` weights released with the `syncnet_python` repository. Its
weights cannot be downloaded here, so this module gives the architecture and a
converter for that PyTorch state dict; `lipsync_jax.evaluation.metrics.OriginalSyncNetScorer`
plugs it into the sync metrics.

Inputs (NHWC, float32, no normalisation, as the released model expects):
  * video: (N, 5, 224, 224, 3) five consecutive BGR face crops, values 0..255;
  * audio: (N, 13, 20, 1) MFCC windows (13 cepstra x 20 steps at 100 Hz, i.e.
    5 video frames at 25 fps), computed from int16-scaled 16 kHz audio by
    `python_speech_features.mfcc` with its defaults (see `mfcc_windows`).
Outputs: (N, embed_dim) unnormalised embeddings (1024-d for the release).

Architecture (from the public description of `syncnet_python`'s model):
  audio: 6 conv-BN-ReLU layers (64, 192, 384, 256, 256, 512 channels; 3x3 p1,
    last 5x4 valid) with max-pools (3x3 s(1,2)) after conv 2 and (3x3 s2)
    after conv 5, then FC 512 - BN - ReLU - FC embed_dim.
  video: Conv3d 96 k(5,7,7) s(1,2,2) collapses the 5 frames, then 2-D layers
    (256 k5 s2 p1, 256/256/256 k3 p1, 512 k6 valid) with max-pools, then the
    same FC head.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import numpy as np

from lipsync_jax.models.layers import batch_norm, scaled

WINDOW_FRAMES = 5
FACE_SIZE = 224
MFCC_STEPS = 20
MFCC_RATE = 100  # MFCC frames per second (python_speech_features winstep 10 ms)

# Index of each Conv / BatchNorm inside the upstream nn.Sequential blocks
# (`netcnnaud` and `netcnnlip` share the same layout) and in the FC heads.
_CNN_CONV_IDX = (0, 4, 8, 11, 14, 18)
_CNN_BN_IDX = (1, 5, 9, 12, 15, 19)
_FC_IDX = {"fc_0": 0, "fc_bn": 1, "fc_1": 3}


def _max_pool(x: jax.Array, window: tuple[int, int], strides: tuple[int, int],
              pad: int = 0) -> jax.Array:
  # PyTorch pads max-pool inputs with -inf, as nn.max_pool does.
  return nn.max_pool(x, window, strides, padding=((pad, pad), (pad, pad)))


class _Head(nn.Module):
  """Linear 512 - BatchNorm1d - ReLU - Linear embed_dim."""
  hidden: int
  embed_dim: int
  dtype: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    x = nn.Dense(self.hidden, dtype=self.dtype, name="fc_0")(x)
    x = batch_norm(train, self.dtype, name="fc_bn")(x)
    x = nn.relu(x)
    return nn.Dense(self.embed_dim, dtype=self.dtype, name="fc_1")(x)


def _conv_bn_relu(x, features, kernel, strides, padding, train, dtype, idx):
  pads = tuple((p, p) for p in padding)
  x = nn.Conv(features, kernel, strides, padding=pads, dtype=dtype,
              name=f"conv_{idx}")(x)
  x = batch_norm(train, dtype, name=f"bn_{idx}")(x)
  return nn.relu(x)


class AudioNet(nn.Module):
  """MFCC window (N, 13, 20, 1) -> (N, embed_dim)."""
  width_multiplier: float = 1.0
  embed_dim: int = 1024
  dtype: Any = None

  @nn.compact
  def __call__(self, mfcc: jax.Array, train: bool = False) -> jax.Array:
    c = lambda n: scaled(n, self.width_multiplier)
    x = _conv_bn_relu(mfcc, c(64), (3, 3), (1, 1), (1, 1), train, self.dtype, 0)
    x = _conv_bn_relu(x, c(192), (3, 3), (1, 1), (1, 1), train, self.dtype, 1)
    x = _max_pool(x, (3, 3), (1, 2))                       # (11, 9)
    x = _conv_bn_relu(x, c(384), (3, 3), (1, 1), (1, 1), train, self.dtype, 2)
    x = _conv_bn_relu(x, c(256), (3, 3), (1, 1), (1, 1), train, self.dtype, 3)
    x = _conv_bn_relu(x, c(256), (3, 3), (1, 1), (1, 1), train, self.dtype, 4)
    x = _max_pool(x, (3, 3), (2, 2))                       # (5, 4)
    x = _conv_bn_relu(x, c(512), (5, 4), (1, 1), (0, 0), train, self.dtype, 5)
    x = x.reshape(x.shape[0], -1)                          # 1x1 spatial
    return _Head(c(512), self.embed_dim, self.dtype, name="head")(x, train)


class LipNet(nn.Module):
  """Five face crops (N, 5, 224, 224, 3) -> (N, embed_dim)."""
  width_multiplier: float = 1.0
  embed_dim: int = 1024
  dtype: Any = None

  @nn.compact
  def __call__(self, frames: jax.Array, train: bool = False) -> jax.Array:
    c = lambda n: scaled(n, self.width_multiplier)
    # Conv3d over (T, H, W): the 5-frame kernel collapses time to 1.
    x = nn.Conv(c(96), (5, 7, 7), (1, 2, 2), padding="VALID", dtype=self.dtype,
                name="conv_0")(frames)
    x = nn.relu(batch_norm(train, self.dtype, name="bn_0")(x))
    x = x[:, 0]                                            # (N, 109, 109, C)
    x = _max_pool(x, (3, 3), (2, 2))                       # 54
    x = _conv_bn_relu(x, c(256), (5, 5), (2, 2), (1, 1), train, self.dtype, 1)
    x = _max_pool(x, (3, 3), (2, 2), pad=1)                # 13
    x = _conv_bn_relu(x, c(256), (3, 3), (1, 1), (1, 1), train, self.dtype, 2)
    x = _conv_bn_relu(x, c(256), (3, 3), (1, 1), (1, 1), train, self.dtype, 3)
    x = _conv_bn_relu(x, c(256), (3, 3), (1, 1), (1, 1), train, self.dtype, 4)
    x = _max_pool(x, (3, 3), (2, 2))                       # 6
    x = _conv_bn_relu(x, c(512), (6, 6), (1, 1), (0, 0), train, self.dtype, 5)
    x = x.reshape(x.shape[0], -1)
    return _Head(c(512), self.embed_dim, self.dtype, name="head")(x, train)


class SyncNetOriginal(nn.Module):
  """The released SyncNet: `apply(v, audio, video) -> (audio_emb, video_emb)`.

  audio (N, 13, 20, 1) MFCC windows, video (N, 5, 224, 224, 3) BGR 0..255;
  both embeddings (N, embed_dim), unnormalised (the LSE metrics use plain
  euclidean distances between them). `method="embed_audio"` /
  `method="embed_video"` run one tower.
  """
  width_multiplier: float = 1.0
  embed_dim: int = 1024
  dtype: Any = None

  def setup(self):
    self.audio_net = AudioNet(self.width_multiplier, self.embed_dim, self.dtype)
    self.lip_net = LipNet(self.width_multiplier, self.embed_dim, self.dtype)

  def embed_audio(self, mfcc: jax.Array, train: bool = False) -> jax.Array:
    return self.audio_net(mfcc, train)

  def embed_video(self, frames: jax.Array, train: bool = False) -> jax.Array:
    return self.lip_net(frames, train)

  def __call__(self, audio: jax.Array, video: jax.Array,
               train: bool = False) -> tuple[jax.Array, jax.Array]:
    return self.audio_net(audio, train), self.lip_net(video, train)


# -----------------------------------------------------------------------------
# Audio features.
# -----------------------------------------------------------------------------

def mfcc(wav: np.ndarray, sample_rate: int = 16000) -> np.ndarray:
  """(n,) float audio in [-1, 1] -> (13, M) MFCC at 100 Hz, as syncnet_python.

  syncnet_python reads 16-bit PCM with scipy (int16 values) and calls
  `python_speech_features.mfcc(audio, 16000)` with the library defaults; the
  int16 scale changes the log energies, so the float signal is rescaled.
  """
  try:
    import python_speech_features  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError("the original SyncNet scorer needs python_speech_features: "
                      "pip install python-speech-features") from None
  pcm = np.round(np.clip(wav, -1.0, 1.0) * 32767.0)
  return python_speech_features.mfcc(pcm, sample_rate).T.astype(np.float32)


def mfcc_windows(feats: np.ndarray, num_windows: int, fps: float) -> np.ndarray:
  """(13, M) MFCC -> (num_windows, 13, 20, 1) windows for 5-frame chunks.

  Window w starts at MFCC step int(100 * w / fps) (4*w at 25 fps, as upstream);
  windows past the end are filled by repeating the last step.
  """
  starts = (MFCC_RATE * np.arange(num_windows) / fps).astype(np.int64)
  idx = starts[:, None] + np.arange(MFCC_STEPS)[None]
  idx = np.clip(idx, 0, feats.shape[1] - 1)
  return np.ascontiguousarray(feats[:, idx].transpose(1, 0, 2)[..., None])


# -----------------------------------------------------------------------------
# Converter for the released PyTorch state dict.
# -----------------------------------------------------------------------------

def _np(t) -> np.ndarray:
  if hasattr(t, "detach"):
    t = t.detach().cpu().numpy()
  return np.asarray(t, dtype=np.float32)


def _bn(sd, prefix) -> tuple[dict, dict]:
  return ({"scale": _np(sd[prefix + ".weight"]), "bias": _np(sd[prefix + ".bias"])},
          {"mean": _np(sd[prefix + ".running_mean"]),
           "var": _np(sd[prefix + ".running_var"])})


def _tower(sd: Mapping[str, Any], cnn: str, fc: str, is_lip: bool) -> tuple[dict, dict]:
  params, stats = {}, {}
  for i, (ci, bi) in enumerate(zip(_CNN_CONV_IDX, _CNN_BN_IDX)):
    w = _np(sd[f"{cnn}.{ci}.weight"])
    if w.ndim == 5:          # Conv3d (O, I, kt, kh, kw)
      w = w.transpose(2, 3, 4, 1, 0)
      if not (is_lip and i == 0):
        w = w[0]             # kt == 1: a 2-D conv in the port
    else:                    # Conv2d (O, I, kh, kw)
      w = w.transpose(2, 3, 1, 0)
    params[f"conv_{i}"] = {"kernel": w, "bias": _np(sd[f"{cnn}.{ci}.bias"])}
    params[f"bn_{i}"], stats[f"bn_{i}"] = _bn(sd, f"{cnn}.{bi}")
  head_p, head_s = {}, {}
  for name, j in _FC_IDX.items():
    if name == "fc_bn":
      head_p[name], head_s[name] = _bn(sd, f"{fc}.{j}")
    else:
      head_p[name] = {"kernel": _np(sd[f"{fc}.{j}.weight"]).T,
                      "bias": _np(sd[f"{fc}.{j}.bias"])}
  params["head"], stats["head"] = head_p, head_s
  return params, stats


def is_original_state_dict(sd: Mapping[str, Any]) -> bool:
  return any(k.startswith(("netcnnaud.", "module.netcnnaud.")) for k in sd)


def convert_state_dict(state_dict: Mapping[str, Any]) -> dict:
  """syncnet_python `S` state dict (torch or numpy) -> Flax variables.

  Accepts keys with or without a `module.` prefix and with or without the
  `num_batches_tracked` buffers. Returns {"params", "batch_stats"} for
  `SyncNetOriginal(embed_dim=...)`; the embedding size is read from the
  weights (`netfcaud.3.weight`).
  """
  sd = {k.removeprefix("module."): v for k, v in state_dict.items()
        if not k.endswith("num_batches_tracked")}
  if not is_original_state_dict(sd):
    raise ValueError("not a syncnet_python state dict (no netcnnaud.* keys)")
  try:
    ap, as_ = _tower(sd, "netcnnaud", "netfcaud", is_lip=False)
    lp, ls = _tower(sd, "netcnnlip", "netfclip", is_lip=True)
  except KeyError as e:
    raise ValueError(f"syncnet_python state dict is missing {e.args[0]!r}") from None
  return {"params": {"audio_net": ap, "lip_net": lp},
          "batch_stats": {"audio_net": as_, "lip_net": ls}}


def embed_dim_of(state_dict: Mapping[str, Any]) -> int:
  for k, v in state_dict.items():
    if k.removeprefix("module.") == "netfcaud.3.weight":
      return int(v.shape[0])
  raise ValueError("syncnet_python state dict has no netfcaud.3.weight")


def read_torch_state_dict(path: str) -> Mapping[str, Any]:
  """A PyTorch state dict from a file (bare, or under a "state_dict" key)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError("reading a PyTorch SyncNet checkpoint needs torch: "
                      "pip install 'lipsync-jax[torch]'") from None
  try:
    sd = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{path}: not a readable PyTorch file ({type(e).__name__})") from None
  if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
    sd = sd["state_dict"]
  if not isinstance(sd, Mapping):
    raise ValueError(f"{path}: not a PyTorch state dict")
  return sd


def load_torch_weights(path: str) -> tuple[SyncNetOriginal, dict]:
  """Loads a released `syncnet_v2.model` file -> (module, variables)."""
  sd = read_torch_state_dict(path)
  return SyncNetOriginal(embed_dim=embed_dim_of(sd)), convert_state_dict(sd)
