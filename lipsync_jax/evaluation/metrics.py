"""Evaluation metrics: LSE-D / LSE-C (lip sync), PSNR, SSIM and LPIPS.

Lip-sync error (LSE), as computed by `syncnet_python` (Chung & Zisserman) and
reported by Wav2Lip and its successors:

  1. A SyncNet embeds every 5-frame video window v_i (frames i..i+4) and the
     audio window a_i aligned with it, i = 0..N-1 (N = T - 4 complete windows;
     syncnet_python stops one window earlier, an off-by-one we do not copy).
  2. The audio feature sequence is zero-padded by `vshift` (15) on both sides,
     and for every shift j in 0..2*vshift the distance
        d[i, j] = || v_i - a_pad[i + j] + 1e-6 ||_2
     is taken (PyTorch's `pairwise_distance`, eps included). Windows that fall
     off the clip are NOT dropped: they meet the zero padding, exactly as in
     syncnet_python, so short clips are penalised the same way.
     `padding="exclude"` instead averages each shift over the windows that
     meet real audio only. This matters for L2-normalised embeddings (our
     expert): a zero vector is at distance 1 from every embedding, closer than
     a badly mismatched one, so on an untrained or weak scorer the zero padding
     can pull the best shift to +-vshift. Reports name the padding used.
  3. mean_dist[j] = mean_i d[i, j];  LSE-D = min_j mean_dist;
     LSE-C = median_j mean_dist - LSE-D  (the lower median, as torch.median).
  4. Frame-wise confidence: median(mean_dist) - d[:, j*], median-filtered with
     a kernel of 9 (scipy.signal.medfilt), as syncnet_python's `fconfm`.

Offset sign. With j* the best shift, video window i matches audio window
i + (j* - vshift). We report `offset = j* - vshift`: the number of frames by
which the audio LAGS the video (positive: the sound comes after the mouth
moves). syncnet_python prints `vshift - j*`, the opposite sign.

The SyncNet is pluggable (`SyncScorer`): `ExpertScorer` wraps our
`syncnet_color` expert, `OriginalSyncNetScorer` the original architecture
(`models/syncnet_original.py`), and `LipSyncScorer` the landmark sync expert
(`models/lip_sync.py`, FaceMesh lip points + mel), whose trained weights ship
inside the package and score real videos when no SyncNet is given. Every result carries the
scorer's name; numbers from different scorers are not comparable.

PSNR and SSIM come from dm-pix, jit-compiled and batched over frames; LPIPS
from `lipsync_jax.lpips`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import warnings
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import cv2
import dm_pix
import jax
import jax.numpy as jnp
import numpy as np
import scipy.signal

from lipsync_jax.vision import lip_landmarks

VSHIFT = 15
WINDOW_FRAMES = 5
CONF_MEDFILT = 9
PADDINGS = ("zeros", "exclude")
_PAIRWISE_EPS = 1e-6  # torch.nn.functional.pairwise_distance default


class MetricError(ValueError):
  """A clip or scorer that cannot be evaluated; the message is one line."""


# -----------------------------------------------------------------------------
# Scorers.
# -----------------------------------------------------------------------------

@dataclasses.dataclass
class ClipAudio:
  """The audio of a clip: a 16 kHz waveform, its (80, N) mel, or both.

  Datasets store only the mel; scorers that need the waveform (the original
  SyncNet's MFCCs) raise a `MetricError` when it is missing.
  """
  wav: np.ndarray | None = None
  mel: np.ndarray | None = None

  def get_mel(self) -> np.ndarray:
    if self.mel is None:
      if self.wav is None:
        raise MetricError("clip has no audio")
      from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
      self.mel = audio_lib.melspectrogram(self.wav)
    return self.mel


@runtime_checkable
class SyncScorer(Protocol):
  """A SyncNet that embeds 5-frame face windows and matching audio windows.

  `face_size` is the side of the square BGR face crops it reads; the windows
  are built by the scorer itself from those crops and from the clip audio, so
  that each scorer can use its own input format (lower-half 96x96 crops and
  mel windows for our expert, 224x224 crops and MFCCs for the original).
  """
  name: str
  face_size: int

  def video_windows(self, faces: np.ndarray) -> np.ndarray:
    """(T, S, S, 3) uint8 BGR face crops -> (T - 4, ...) model inputs."""

  def audio_windows(self, audio: ClipAudio, starts: np.ndarray, fps: float) -> np.ndarray:
    """(len(starts), ...) audio windows; window k is aligned with the 5 video
    frames starting at frame starts[k] of the audio's timeline."""

  def embed_video(self, windows: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D) float32."""

  def embed_audio(self, windows: np.ndarray) -> np.ndarray:
    """(N, ...) -> (N, D) float32."""


def batched_apply(fn: Callable[..., jax.Array], arrays: Sequence[np.ndarray],
                  batch_size: int) -> np.ndarray:
  """Runs jitted `fn(*batch)` over the arrays in fixed-size batches (the last
  one padded by repeating its last item, which sequence models see as a
  still tail) so that every clip length reuses one compiled program.
  Returns the concatenated (N, ...) outputs as numpy."""
  n = arrays[0].shape[0]
  outs = []
  for s in range(0, n, batch_size):
    chunks = [a[s:s + batch_size] for a in arrays]
    m = chunks[0].shape[0]
    if m < batch_size:
      chunks = [np.concatenate([c, np.repeat(c[-1:], batch_size - m, axis=0)])
                for c in chunks]
    outs.append(np.asarray(fn(*chunks))[:m])
  if not outs:
    raise MetricError("nothing to evaluate (0 items)")
  return np.concatenate(outs)


def _batched(fn: Callable[[jax.Array], jax.Array], x: np.ndarray,
             batch_size: int) -> np.ndarray:
  return batched_apply(fn, [x], batch_size)


@functools.partial(jax.jit, static_argnums=1)
def _lower_half_windows(faces: jax.Array, window: int) -> jax.Array:
  """(T, 96, 96, 3) uint8 -> (T-window+1, 48, 96, 3*window) float32 in [0, 1]."""
  t, h = faces.shape[0], faces.shape[1]
  idx = jnp.arange(t - window + 1)[:, None] + jnp.arange(window)[None]
  w = faces[idx][:, :, h // 2:]                    # (N, 5, 48, 96, 3)
  w = jnp.transpose(w, (0, 2, 3, 1, 4))            # (N, 48, 96, 5, 3)
  return w.reshape(w.shape[:3] + (-1,)).astype(jnp.float32) / 255.0


def _init_pixel_scorer(scorer: Any, module: Any, variables: Any, name: str,
                       batch_size: int) -> None:
  """The fields every pixel SyncNet scorer has: its module, its variables on
  device (params and BN statistics only), its name and batch size."""
  scorer.module = module
  scorer.variables = jax.device_put(
      {k: v for k, v in variables.items() if k in ("params", "batch_stats")})
  scorer.name = name
  scorer.batch_size = batch_size


class ExpertScorer:
  """Our `syncnet_color` expert: lower halves of 96x96 crops + mel windows.

  Embeddings are L2-normalised and non-negative, so distances lie in
  [0, sqrt(2)]; LSE values are not on the scale of the original SyncNet's.
  """
  face_size = 96

  def __init__(self, module: Any, variables: Any, name: str = "syncnet_color",
               batch_size: int = 64):
    _init_pixel_scorer(self, module, variables, name, batch_size)

  def video_windows(self, faces: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[1:] != (96, 96, 3):
      raise MetricError(f"expert scorer needs (T, 96, 96, 3) face crops, got {faces.shape}")
    if faces.shape[0] < WINDOW_FRAMES:
      raise MetricError(f"clip too short: {faces.shape[0]} frames, need {WINDOW_FRAMES}")
    return np.asarray(_lower_half_windows(faces, WINDOW_FRAMES))

  def audio_windows(self, audio: ClipAudio, starts: np.ndarray, fps: float) -> np.ndarray:
    from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
    starts = np.asarray(starts, np.int64)
    win = audio_lib.mel_windows(audio.get_mel(), int(starts.max()) + 1, fps)
    return win[starts][..., None].astype(np.float32)

  # The SyncNet contract exposes only the joint call; one side is embedded with
  # a zero input on the other (the audio tower is cheap), through one shared
  # compiled program per module and batch size.
  def embed_video(self, windows: np.ndarray) -> np.ndarray:
    fn = _joint_apply(self.module)
    zeros = np.zeros((self.batch_size, 80, 16, 1), np.float32)
    return _batched(lambda f: fn(self.variables, zeros, f)[1],
                    np.asarray(windows, np.float32), self.batch_size)

  def embed_audio(self, windows: np.ndarray) -> np.ndarray:
    fn = _joint_apply(self.module)
    zeros = np.zeros((self.batch_size, 48, 96, 15), np.float32)
    return _batched(lambda a: fn(self.variables, a, zeros)[0],
                    np.asarray(windows, np.float32), self.batch_size)


@functools.lru_cache(maxsize=None)
def _joint_apply(module: Any) -> Callable:
  """jit(module.apply) in eval mode, shared by every scorer of this module."""
  return jax.jit(lambda v, a, f: module.apply(v, a, f, train=False))


@functools.lru_cache(maxsize=None)
def _method_apply(module: Any, method: str) -> Callable:
  return jax.jit(lambda v, x: module.apply(v, jnp.asarray(x, jnp.float32), method=method))


class OriginalSyncNetScorer:
  """The original SyncNet (syncnet_python, `syncnet_v2.model`).

  Face crops are resized to 224x224 (syncnet_python crops the face track with
  its own S3FD boxes, so numbers on our crops are close to, not identical
  with, the published protocol); audio uses python_speech_features MFCCs.
  """
  face_size = 224

  def __init__(self, module: Any, variables: Any, name: str = "syncnet_original",
               batch_size: int = 16):
    _init_pixel_scorer(self, module, variables, name, batch_size)

  def video_windows(self, faces: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[-1] != 3:
      raise MetricError(f"need (T, H, W, 3) face crops, got {faces.shape}")
    if faces.shape[0] < WINDOW_FRAMES:
      raise MetricError(f"clip too short: {faces.shape[0]} frames, need {WINDOW_FRAMES}")
    if faces.shape[1:3] != (224, 224):
      faces = np.stack([cv2.resize(f, (224, 224), interpolation=cv2.INTER_LINEAR)
                        for f in faces])
    n = faces.shape[0] - WINDOW_FRAMES + 1
    idx = np.arange(n)[:, None] + np.arange(WINDOW_FRAMES)[None]
    return faces[idx]  # (N, 5, 224, 224, 3) uint8; cast per batch

  def audio_windows(self, audio: ClipAudio, starts: np.ndarray, fps: float) -> np.ndarray:
    from lipsync_jax.models import syncnet_original  # pylint: disable=import-outside-toplevel
    if audio.wav is None:
      raise MetricError("the original SyncNet needs the waveform (MFCC input); this "
                        "clip only has a mel spectrogram")
    starts = np.asarray(starts, np.int64)
    win = syncnet_original.mfcc_windows(syncnet_original.mfcc(audio.wav),
                                        int(starts.max()) + 1, fps)
    return win[starts]

  def embed_video(self, windows: np.ndarray) -> np.ndarray:
    fn = functools.partial(_method_apply(self.module, "embed_video"), self.variables)
    return _batched(fn, np.asarray(windows), self.batch_size)

  def embed_audio(self, windows: np.ndarray) -> np.ndarray:
    fn = functools.partial(_method_apply(self.module, "embed_audio"), self.variables)
    return _batched(fn, np.asarray(windows, np.float32), self.batch_size)


class FaceMeshLips:
  """FaceMesh lip points of face crops, the FaceMesh created on first use:
  (T, S, S, 3) BGR crops -> lips (T, 40, 2) crop units, valid (T,) bool."""

  def __init__(self):
    self._mesh = None

  def __call__(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from lipsync_jax.vision import face_mesh  # pylint: disable=import-outside-toplevel
    if self._mesh is None:
      try:
        self._mesh = face_mesh.FaceMesh()
      except face_mesh.FaceMeshError as e:
        raise MetricError(str(e)) from None
    lips, presence = lip_landmarks.crop_lips(self._mesh, faces)
    return lips, presence >= lip_landmarks.MIN_PRESENCE


class LipSyncScorer:
  """The landmark sync expert (`lip_sync`): FaceMesh lips of face crops + mel.

  Face crops (192x192, FaceMesh's own input size) go through FaceMesh
  (`lip_landmarks.crop_lips`); frames where it sees no face keep their points
  but a clip with lips on fewer than `min_lip_frames` frames is not scored.
  With `normalise` (recorded in the model's meta by its trainer) the lips and
  the mel are normalised per clip first (`data.lip_windows.clip_inputs`).
  Embeddings are unit vectors: distances lie in [0, 2], on a scale of its
  own, not comparable with SyncNet's LSE-D/LSE-C.
  """
  face_size = 192

  def __init__(self, module: Any, variables: Any, name: str = "lip_sync",
               normalise: bool = False, batch_size: int = 256,
               min_lip_frames: int = 10):
    self.module = module
    self.variables = jax.device_put({"params": variables["params"]})
    self.name = name
    self.normalise = bool(normalise)
    self.batch_size = batch_size
    self.min_lip_frames = min_lip_frames
    self.lips = FaceMeshLips()   # (T, S, S, 3) BGR crops -> lips (T, 40, 2), valid (T,)

  def video_windows(self, faces: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.ndim != 4 or faces.shape[-1] != 3:
      raise MetricError(f"need (T, H, W, 3) face crops, got {faces.shape}")
    self._check_length(faces.shape[0])
    return self.lip_video_windows(*self.lips(faces))

  def _check_length(self, frames: int) -> None:
    if frames < self.module.window:
      raise MetricError(f"clip too short: {frames} frames, need {self.module.window}")

  def lip_video_windows(self, lips: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """`video_windows` from lips already measured by `lips` (so that another
    reader of the same crops, e.g. `energy_judge`, runs FaceMesh only once)."""
    from lipsync_jax.data import lip_windows  # pylint: disable=import-outside-toplevel
    self._check_length(len(lips))
    w = self.module.window
    if valid.sum() < max(self.min_lip_frames, WINDOW_FRAMES):
      raise MetricError(f"FaceMesh finds lips on {int(valid.sum())} of {len(valid)} frames "
                        f"(< {max(self.min_lip_frames, WINDOW_FRAMES)})")
    if self.normalise:
      from lipsync_jax.vision import lip_landmarks  # pylint: disable=import-outside-toplevel
      lips = lip_landmarks.normalise_clip(lips, valid)
    return lip_windows.video_windows(lips.astype(np.float32), w)

  def audio_windows(self, audio: ClipAudio, starts: np.ndarray, fps: float) -> np.ndarray:
    from lipsync_jax.data import lip_windows  # pylint: disable=import-outside-toplevel
    mel = audio.get_mel()
    if self.normalise:
      mel = lip_windows.normalise_mel(mel)
    starts = np.asarray(starts, np.int64)
    win = lip_windows.mel_windows(mel, int(starts.max()) + 1, fps, self.module.window)
    return win[starts][..., None].astype(np.float32)

  def embed_video(self, windows: np.ndarray) -> np.ndarray:
    fn = functools.partial(_method_apply(self.module, "embed_video"), self.variables)
    return _batched(fn, np.asarray(windows, np.float32), self.batch_size)

  def embed_audio(self, windows: np.ndarray) -> np.ndarray:
    fn = functools.partial(_method_apply(self.module, "embed_audio"), self.variables)
    return _batched(fn, np.asarray(windows, np.float32), self.batch_size)


def lip_sync_scorer(loaded: Any, name: str, batch_size: int = 256) -> LipSyncScorer:
  """A `LipSyncScorer` from a loaded `lip_sync` model (checkpoint.LoadedModel)."""
  inputs = dict(loaded.meta.get("inputs") or {})
  return LipSyncScorer(loaded.module, loaded.variables, name,
                       normalise=bool(inputs.get("normalise", False)),
                       batch_size=batch_size)


def default_padding(scorer: SyncScorer) -> str:
  """"exclude" for the landmark expert (see the module docstring), else
  syncnet_python's "zeros"."""
  return "exclude" if isinstance(scorer, LipSyncScorer) else "zeros"


BUILTIN_SCORER = "builtin"


def builtin_scorer_path() -> str:
  """Directory of the landmark sync expert shipped inside the package."""
  import pathlib  # pylint: disable=import-outside-toplevel
  return str(pathlib.Path(__file__).resolve().parent.parent / "assets" / "lip_sync_expert")


def builtin_pixel_expert_path() -> str:
  """The same expert behind its lip regressor (`lip_sync_pixels`): what a
  generator trains against with `--config.syncnet_checkpoint=builtin`."""
  import pathlib  # pylint: disable=import-outside-toplevel
  return str(pathlib.Path(__file__).resolve().parent.parent / "assets" / "lip_sync_expert_pixels")


def load_builtin_scorer(batch_size: int = 256) -> LipSyncScorer:
  """The shipped landmark sync expert (README, "The landmark sync expert")."""
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  path = builtin_scorer_path()
  if not os.path.isdir(path):
    raise MetricError(f"the built-in sync scorer is missing from the package ({path}); "
                      "reinstall lipsync-jax or pass --syncnet CKPT")
  loaded = checkpoint.load_model(path, expected_arch="lip_sync")
  return lip_sync_scorer(loaded, "lip_sync:builtin", batch_size)


def load_scorer(path: str, batch_size: int = 64) -> SyncScorer:
  """A scorer from any SyncNet checkpoint.

  `path` may be anything `checkpoint.load_model` accepts holding a
  `syncnet_color` model (exported directory, training workdir, upstream
  `lipsync_expert.pth`), or a syncnet_python `syncnet_v2.model` state dict,
  or an exported directory of `syncnet_original` or of the landmark expert
  `lip_sync`; "builtin" is the landmark expert shipped with the package.
  """
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from lipsync_jax.models import syncnet_original  # pylint: disable=import-outside-toplevel
  label = os.path.basename(os.path.normpath(path))
  if os.path.isfile(path):
    # syncnet_python's release is a bare state dict (`syncnet_v2.model`);
    # anything else goes to load_model (e.g. an upstream lipsync_expert.pth).
    try:
      sd = syncnet_original.read_torch_state_dict(path)
    except ValueError:
      sd = {}
    if syncnet_original.is_original_state_dict(sd):
      module = syncnet_original.SyncNetOriginal(embed_dim=syncnet_original.embed_dim_of(sd))
      return OriginalSyncNetScorer(module, syncnet_original.convert_state_dict(sd),
                                   f"syncnet_original:{label}", max(1, batch_size // 4))
  if path == BUILTIN_SCORER:
    return load_builtin_scorer(max(batch_size, 64))
  loaded = checkpoint.load_model(path, expected_arch=("syncnet_color", "syncnet_original",
                                                      "lip_sync", "lip_sync_pixels"))
  if loaded.arch == "lip_sync_pixels":
    # A generator's training expert: scored through FaceMesh, not its
    # regressor (FaceMesh is what the expert was trained on).
    from lipsync_jax import models  # pylint: disable=import-outside-toplevel
    cfg = dict(loaded.config.get("sync") or {})
    loaded = dataclasses.replace(
        loaded, arch="lip_sync", config=cfg, module=models.create("lip_sync", **cfg),
        variables={"params": loaded.variables["params"]["lip_sync"]})
  if loaded.arch == "lip_sync":
    return lip_sync_scorer(loaded, f"lip_sync:{label}", max(batch_size, 64))
  if loaded.arch == "syncnet_original":
    return OriginalSyncNetScorer(loaded.module, loaded.variables,
                                 f"syncnet_original:{label}", max(1, batch_size // 4))
  return ExpertScorer(loaded.module, loaded.variables, f"syncnet_color:{label}",
                      batch_size)


# -----------------------------------------------------------------------------
# LSE-D / LSE-C.
# -----------------------------------------------------------------------------

@dataclasses.dataclass
class SyncResult:
  """Sync scores of one clip (see the module docstring for definitions).

  mean_dists: (2*vshift+1,) mean distance per shift; index j is offset j-vshift.
  frame_conf: (N,) median-filtered confidence of each window at the best shift.
  """
  scorer: str
  lse_d: float
  lse_c: float
  offset: int
  mean_dists: np.ndarray
  frame_conf: np.ndarray

  def to_json(self) -> dict:
    return {"lse_d": self.lse_d, "lse_c": self.lse_c, "offset": self.offset,
            "mean_dists": [round(float(x), 5) for x in self.mean_dists],
            "frame_conf": [round(float(x), 4) for x in self.frame_conf]}


@functools.partial(jax.jit, static_argnames="vshift")
def sync_distances(video_emb: jax.Array, audio_emb: jax.Array,
                   vshift: int = VSHIFT) -> jax.Array:
  """(N, D), (N, D) -> (N, 2*vshift+1) distances d[i, j] = |v_i - a_pad[i+j]|.

  `a_pad` is the audio sequence with `vshift` zero vectors on each side, as
  syncnet_python's `calc_pdist`.
  """
  n = video_emb.shape[0]
  a_pad = jnp.pad(audio_emb, ((vshift, vshift), (0, 0)))
  idx = jnp.arange(n)[:, None] + jnp.arange(2 * vshift + 1)[None]
  diff = video_emb[:, None, :] - a_pad[idx] + _PAIRWISE_EPS
  return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


@functools.partial(jax.jit, static_argnames=("vshift", "padding"))
def _lse(video_emb: jax.Array, audio_emb: jax.Array, vshift: int, padding: str):
  d = sync_distances(video_emb, audio_emb, vshift)
  if padding == "zeros":
    mean = d.mean(axis=0)
  else:  # "exclude": only pairs whose audio index lies inside the clip
    n = d.shape[0]
    k = jnp.arange(n)[:, None] + jnp.arange(2 * vshift + 1)[None] - vshift
    valid = (k >= 0) & (k < n)
    mean = jnp.sum(jnp.where(valid, d, 0.0), 0) / jnp.maximum(valid.sum(0), 1)
    mean = jnp.where(valid.sum(0) > 0, mean, jnp.inf)
  best = jnp.argmin(mean)
  median = jnp.sort(mean)[(mean.shape[0] - 1) // 2]   # torch.median: lower median
  return mean, best, median, median - d[:, best]


def lse_from_embeddings(video_emb: np.ndarray, audio_emb: np.ndarray,
                        scorer: str = "", vshift: int = VSHIFT,
                        padding: str = "zeros") -> SyncResult:
  """LSE-D / LSE-C / offset from (N, D) video and audio window embeddings.

  padding: "zeros" (syncnet_python) or "exclude" (see the module docstring).
  """
  if padding not in PADDINGS:
    raise MetricError(f"unknown padding {padding!r}; expected one of {', '.join(PADDINGS)}")
  video_emb = np.asarray(video_emb, np.float32)
  audio_emb = np.asarray(audio_emb, np.float32)
  if video_emb.shape != audio_emb.shape or video_emb.ndim != 2:
    raise MetricError(f"embedding shapes differ: {video_emb.shape} vs {audio_emb.shape}")
  if video_emb.shape[0] == 0:
    raise MetricError("no complete 5-frame window")
  mean, best, median, fconf = jax.device_get(_lse(video_emb, audio_emb, vshift, padding))
  best = int(best)
  with warnings.catch_warnings():  # clips shorter than the filter: zero-padded
    warnings.simplefilter("ignore", UserWarning)
    fconf = scipy.signal.medfilt(np.asarray(fconf, np.float64), CONF_MEDFILT)
  return SyncResult(scorer=scorer, lse_d=float(mean[best]),
                    lse_c=float(median - mean[best]), offset=best - vshift,
                    mean_dists=np.asarray(mean), frame_conf=fconf.astype(np.float32))


def sync_scores(scorer: SyncScorer, faces: np.ndarray, audio: ClipAudio,
                fps: float, first_frame: int = 0, vshift: int = VSHIFT,
                padding: str = "zeros", video_windows: np.ndarray | None = None
                ) -> SyncResult:
  """LSE of a clip: (T, S, S, 3) uint8 BGR face crops + the clip's audio.

  `first_frame`: index of faces[0] on the audio's timeline (when scoring a
  run of frames inside a longer clip). `video_windows`: the scorer's
  `video_windows(faces)` when already computed (faces is then not read).
  """
  v = scorer.video_windows(faces) if video_windows is None else video_windows
  a = scorer.audio_windows(audio, first_frame + np.arange(v.shape[0]), fps)
  return lse_from_embeddings(scorer.embed_video(v), scorer.embed_audio(a),
                             scorer.name, vshift, padding)


# -----------------------------------------------------------------------------
# Reconstruction metrics.
# -----------------------------------------------------------------------------

def _to_float(x: jax.Array) -> jax.Array:
  return x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)


@jax.jit
def psnr(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-image PSNR (dB) of (..., H, W, C) images (uint8 or [0, 1] floats)."""
  return dm_pix.psnr(_to_float(a), _to_float(b))


@jax.jit
def ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  """Per-image SSIM (Gaussian 11x11, sigma 1.5, per channel then averaged),
  dm-pix defaults, of (..., H, W, C) images (uint8 or [0, 1] floats)."""
  return dm_pix.ssim(_to_float(a), _to_float(b))


@functools.lru_cache(maxsize=None)
def _lpips_fn(net: str) -> tuple[Any, Callable]:
  from lipsync_jax import lpips  # pylint: disable=import-outside-toplevel
  params = jax.device_put(lpips.load_lpips_params(net))
  fn = jax.jit(lambda p, x, y: lpips.lpips_distance(
      p, _to_float(x), _to_float(y), net).reshape(x.shape[0]))
  return params, fn


class LPIPSMetric:
  """Frozen LPIPS distance (`lipsync_jax.lpips`) of BGR face crops, jitted and
  batched. `net` is "alexnet" (the usual evaluation metric) or "vgg16"."""

  def __init__(self, net: str = "alexnet", batch_size: int = 32):
    self.net = net
    self.batch_size = batch_size
    self._params, self._fn = _lpips_fn(net)

  def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) x 2 (uint8 or [0, 1] floats) -> (N,) distances."""
    fn = functools.partial(self._fn, self._params)
    return batched_apply(fn, [np.asarray(a), np.asarray(b)], self.batch_size)


@jax.jit
def _psnr_ssim(a: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.stack([psnr(a, b), ssim(a, b)], axis=-1)


def reconstruction_metrics(generated: np.ndarray, target: np.ndarray,
                           lpips_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
                           batch_size: int = 32) -> dict[str, float]:
  """Mean per-frame PSNR / SSIM (/ LPIPS) of (T, H, W, 3) uint8 face crops,
  computed in fixed-size batches (one compilation for every clip length)."""
  ps = batched_apply(_psnr_ssim, [np.asarray(generated), np.asarray(target)], batch_size)
  out = {"psnr": float(np.mean(ps[:, 0])), "ssim": float(np.mean(ps[:, 1]))}
  if lpips_fn is not None:
    out["lpips"] = float(np.mean(lpips_fn(generated, target)))
  return out


def laplacian_variance(frames: np.ndarray) -> np.ndarray:
  """Sharpness: per-frame variance of the Laplacian (3x3) of the grey image.

  frames (N, H, W, 3) BGR uint8 -> (N,) float; higher is sharper (a blurred
  copy of a frame scores lower)."""
  frames = np.asarray(frames)
  out = np.empty(len(frames), np.float64)
  for i, f in enumerate(frames):
    grey = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_BGR2GRAY)
    out[i] = cv2.Laplacian(grey, cv2.CV_64F, ksize=3).var()
  return out


def chroma_noise(frames: np.ndarray, sigma: float = 2.0) -> np.ndarray:
  """Colour speckle: per-frame mean squared high-pass of the Lab chroma.

  frames (N, H, W, 3) BGR uint8 -> (N,) float. The a and b channels of
  OpenCV's 8-bit Lab, minus their Gaussian blur (`sigma` px), squared and
  averaged. Skin and lips are smooth in colour, so a real mouth region scores
  low (a few units); the striped or dotted colour patterns that an expert's
  sync gradient can draw through the decoder's transposed convolutions score
  several times higher, even where LPIPS and the lip colour barely move
  (`lipsync_jax.demo`, issue 18). Brightness edges (the lip outline, teeth)
  are not counted: only the chroma is."""
  frames = np.asarray(frames)
  out = np.empty(len(frames), np.float64)
  for i, f in enumerate(frames):
    ab = cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_BGR2Lab)[..., 1:].astype(np.float32)
    out[i] = np.mean(np.square(ab - cv2.GaussianBlur(ab, (0, 0), sigma)))
  return out


def masked_lab_distance(frames: np.ndarray, target: np.ndarray,
                        mask: np.ndarray) -> dict[str, Any]:
  """Colour agreement of `frames` with `target` on the `mask` pixels.

  frames, target (T, H, W, 3) BGR uint8; mask (T, H, W) bool (e.g. the
  ground truth's lip pixels). Distances are in OpenCV's 8-bit Lab (L, a, b
  each scaled to 0-255), the space the demo's target is stated in.

  Returns:
    lab_distance: mean over masked pixels of the per-pixel Lab distance;
    mean_colour_lab_distance: Lab distance between the two mean colours;
    mean_bgr, target_mean_bgr: the mean colours; pixels: the masked count.
  """
  frames, target, mask = np.asarray(frames), np.asarray(target), np.asarray(mask, bool)
  if frames.shape != target.shape or frames.shape[:3] != mask.shape:
    raise MetricError(f"frames {frames.shape}, target {target.shape} and mask {mask.shape} "
                      "must agree")
  if not mask.any():
    raise MetricError("the mask selects no pixel")

  def lab(x: np.ndarray) -> np.ndarray:
    flat = np.ascontiguousarray(x.reshape(-1, 1, 3), dtype=np.uint8)
    return cv2.cvtColor(flat, cv2.COLOR_BGR2Lab).reshape(-1, 3).astype(np.float32)

  sel = mask.reshape(-1)
  a, b = frames.reshape(-1, 3)[sel], target.reshape(-1, 3)[sel]
  lab_a, lab_b = lab(a), lab(b)
  mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
  mean_lab = lab(np.round(np.stack([mean_a, mean_b])))
  return {"lab_distance": float(np.linalg.norm(lab_a - lab_b, axis=-1).mean()),
          "mean_colour_lab_distance": float(np.linalg.norm(mean_lab[0] - mean_lab[1])),
          "mean_bgr": [round(float(v), 1) for v in mean_a],
          "target_mean_bgr": [round(float(v), 1) for v in mean_b],
          "pixels": int(sel.sum())}


# -----------------------------------------------------------------------------
# Mouth landmark distance (LMD).
# -----------------------------------------------------------------------------

# The 40 lip points (outer and inner contours) of MediaPipe's 468-point
# FaceMesh topology, the landmark expert's points (`lip_landmarks`).
MOUTH_LANDMARKS = lip_landmarks.LIP_POINTS


class MouthLandmarks:
  """Lip landmarks of face crops with MediaPipe FaceMesh (`face_landmark.tflite`,
  shipped inside the `mediapipe` wheel), run by ai-edge-litert on the CPU.

  The crop is taken as the face region (no extra detection): (N, S, S, 3) BGR
  uint8 -> (N, 40, 2) (x, y) in crop pixels.
  """
  INPUT = 192

  def __init__(self):
    import importlib.util  # pylint: disable=import-outside-toplevel
    import pathlib  # pylint: disable=import-outside-toplevel
    try:
      from ai_edge_litert.interpreter import Interpreter  # pylint: disable=import-outside-toplevel
    except ImportError:
      raise MetricError("landmark distance needs ai-edge-litert and the mediapipe wheel: "
                        "pip install --no-deps mediapipe==0.10.21 ai-edge-litert") from None
    spec = importlib.util.find_spec("mediapipe")   # locate the file, don't import
    if spec is None or not spec.submodule_search_locations:
      raise MetricError("landmark distance needs the mediapipe wheel (for face_landmark.tflite)")
    path = (pathlib.Path(list(spec.submodule_search_locations)[0]) / "modules" /
            "face_landmark" / "face_landmark.tflite")
    if not path.is_file():
      raise MetricError(f"FaceMesh model not found at {path}")
    self._interp = Interpreter(model_path=str(path), num_threads=1)
    self._interp.allocate_tensors()
    self._in = self._interp.get_input_details()[0]["index"]
    outs = self._interp.get_output_details()
    self._out = max(outs, key=lambda d: int(d["shape"][-1]))["index"]  # (1,1,1,1404)

  def __call__(self, crops: np.ndarray) -> np.ndarray:
    crops = np.asarray(crops)
    scale = crops.shape[1] / self.INPUT
    out = np.empty((crops.shape[0], len(MOUTH_LANDMARKS), 2), np.float32)
    for i, crop in enumerate(crops):
      x = cv2.resize(crop, (self.INPUT, self.INPUT), interpolation=cv2.INTER_LINEAR)
      x = x[..., ::-1].astype(np.float32)[None] / 255.0   # RGB in [0, 1]
      self._interp.set_tensor(self._in, x)
      self._interp.invoke()
      lm = self._interp.get_tensor(self._out).reshape(-1, 3)
      out[i] = lm[list(MOUTH_LANDMARKS), :2] * scale
    return out


def landmark_distance(landmarks: MouthLandmarks, generated: np.ndarray,
                      target: np.ndarray) -> float:
  """LMD: mean euclidean distance (crop pixels) between the lip landmarks of
  generated and ground-truth crops, over points and frames."""
  d = np.linalg.norm(landmarks(generated) - landmarks(target), axis=-1)
  return float(d.mean())


# -----------------------------------------------------------------------------
# Aggregation.
# -----------------------------------------------------------------------------

def mean_ci95(values: Sequence[float]) -> dict[str, Any]:
  """Mean and Student-t 95% confidence interval of the finite values."""
  import scipy.stats  # pylint: disable=import-outside-toplevel
  x = np.asarray([v for v in values if v is not None], np.float64)
  x = x[np.isfinite(x)]
  n = int(x.size)
  if n == 0:
    return {"mean": None, "ci95": None, "n": 0}
  mean = float(x.mean())
  if n == 1:
    return {"mean": mean, "ci95": None, "n": 1}
  half = float(scipy.stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / np.sqrt(n))
  return {"mean": mean, "ci95": [mean - half, mean + half], "n": n}
