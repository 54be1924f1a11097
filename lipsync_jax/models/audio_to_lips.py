"""Audio to lip landmarks: the first stage of the two-stage model.

    mel context (N, 80, C, 1)   C mel columns around the frame (default 32:
                                0.2 s before the frame's Wav2Lip window and
                                the 0.2 s window itself, so the look-ahead is
                                Wav2Lip's own)
    neutral (N, 40, 2)          the identity's lips at rest, placed where the
                                mouth sits in this frame's crop (crop units)
      -> lips (N, 40, 2) = neutral + a predicted displacement (crop units)

The displacement head starts at zero, so an untrained model returns the
neutral mouth. The model is trained (`train/steps.py`, phase "lips") by
regression to FaceMesh lip tracks, the landmark expert's sync loss applied
to the predicted landmarks (no pixels involved) and a temporal smoothness
term, on windows of consecutive frames.

`neutral_lips` and `anchor_track` build the neutral input from a lip track,
the same way for training clips and for the face video at inference.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax.models import lip_sync

NUM_POINTS = lip_sync.NUM_POINTS   # FaceMesh lip points (lip_landmarks.LIP_POINTS)
INNER_UPPER, INNER_LOWER = 35, 25   # lip_landmarks.INNER_UPPER / INNER_LOWER (mesh 13, 14)
CONTEXT_BEFORE = 16   # mel columns before the frame's Wav2Lip window (0.2 s)
ANCHOR_RADIUS = 12    # frames each side of the mouth-position smoothing (0.5 s)


class AudioToLips(nn.Module):
  """Mel context + neutral lips -> lips; see the module docstring."""
  context: int = 32
  channels: Sequence[int] = (16, 32, 64, 96)
  width: int = 256
  shape_width: int = 64
  dtype: Any = None

  @nn.compact
  def __call__(self, mel: jax.Array, neutral: jax.Array, train: bool = False) -> jax.Array:
    del train  # no dropout or batch norm
    if mel.ndim != 4 or mel.shape[1:] != (80, self.context, 1):
      raise ValueError(f"mel must be (N, 80, {self.context}, 1), got {mel.shape}")
    if neutral.shape != (mel.shape[0], NUM_POINTS, 2):
      raise ValueError(f"neutral must be (N, {NUM_POINTS}, 2), got {neutral.shape}")
    x = mel.astype(jnp.float32)
    for i, c in enumerate(self.channels):
      x = nn.Conv(c, (3, 3), strides=(2, 1) if i == 0 else (2, 2), dtype=self.dtype,
                  name=f"conv{i}")(x)
      x = nn.LayerNorm(name=f"norm{i}")(x)
      x = nn.gelu(x)
    x = nn.gelu(nn.Dense(self.width, dtype=self.dtype, name="audio_fc")(
        x.reshape(x.shape[0], -1))).astype(jnp.float32)
    neutral = neutral.astype(jnp.float32)
    centred = 10.0 * (neutral - neutral.mean(axis=1, keepdims=True))
    s = nn.gelu(nn.Dense(self.shape_width, name="shape_fc")(centred.reshape(len(x), -1)))
    h = nn.gelu(nn.Dense(self.width, name="fc")(jnp.concatenate([x, s], axis=-1)))
    zeros = nn.initializers.zeros
    delta = nn.Dense(NUM_POINTS * 2, kernel_init=zeros, bias_init=zeros, name="delta")(h)
    return neutral + 0.1 * delta.reshape(-1, NUM_POINTS, 2)


def anchor_track(lips: np.ndarray, valid: np.ndarray | None = None,
                 radius: int = ANCHOR_RADIUS) -> np.ndarray:
  """(T, 40, 2) lips -> (T, 2): where the mouth sits in each frame's crop,
  its centroid averaged over +-`radius` valid frames. Head motion is slower
  than speech, so this follows the head and not the jaw."""
  lips = np.asarray(lips, np.float64)
  ok = np.ones(len(lips), bool) if valid is None else np.asarray(valid, bool)
  if not ok.any():
    raise ValueError("no valid lip frame to place the mouth from")
  c = lips.mean(axis=1)
  w = ok.astype(np.float64)
  kernel = np.ones(2 * radius + 1)
  # "full", then the centred T samples: "same" returns len(kernel) samples
  # when the clip is shorter than the kernel.
  def box_sum(x):
    return np.convolve(x, kernel, "full")[radius:radius + len(x)]
  num = np.stack([box_sum(c[:, k] * w) for k in range(2)], -1)
  den = box_sum(w)[:, None]
  out = np.where(den > 0, num / np.maximum(den, 1e-9), c[ok].mean(axis=0))
  return out.astype(np.float32)


def closed_frames(lips: np.ndarray, valid: np.ndarray | None = None,
                  closed_fraction: float = 0.2) -> np.ndarray:
  """(T, 40, 2) lips -> the indices of the `closed_fraction` of valid frames
  (at least one) with the smallest inner-lip opening, most closed first
  (ties: the earlier frame). Raises ValueError when no frame is valid."""
  lips = np.asarray(lips, np.float64)
  ok = np.ones(len(lips), bool) if valid is None else np.asarray(valid, bool)
  if not ok.any():
    raise ValueError("no valid lip frame to take the mouth at rest from")
  gap = np.where(ok, np.linalg.norm(lips[:, INNER_LOWER] - lips[:, INNER_UPPER], axis=-1),
                 np.inf)
  k = max(1, int(round(closed_fraction * ok.sum())))
  return np.argsort(gap, kind="stable")[:k]


def rest_shape(lips: np.ndarray, valid: np.ndarray | None = None,
               closed_fraction: float = 0.2) -> np.ndarray:
  """(T, 40, 2) lips -> (40, 2): the mouth at rest, about its centroid.

  The mean shape of the `closed_frames` (the `closed_fraction` of valid
  frames with the smallest inner-lip opening), so that silence maps to a
  closed mouth; the mean over all frames would be half open for a talking
  clip.
  """
  lips = np.asarray(lips, np.float64)
  shape = lips - lips.mean(axis=1, keepdims=True)
  return shape[closed_frames(lips, valid, closed_fraction)].mean(axis=0).astype(np.float32)


def rest_frames(lips: np.ndarray, valid: np.ndarray | None = None,
                closed_fraction: float = 0.2) -> np.ndarray:
  """(T, 40, 2) lips -> (T,) int: for each frame, the nearest frame in time
  (the earlier on a tie) among the `closed_frames` (`rest_shape`'s frames):
  a closed mouth from about the same moment, so about the same head pose."""
  closed = np.sort(closed_frames(lips, valid, closed_fraction))
  t = np.arange(len(lips))
  right = np.clip(np.searchsorted(closed, t), 0, len(closed) - 1)
  left = np.clip(right - 1, 0, len(closed) - 1)
  take_left = np.abs(t - closed[left]) <= np.abs(closed[right] - t)
  return np.where(take_left, closed[left], closed[right]).astype(np.int64)


def neutral_lips(lips: np.ndarray, valid: np.ndarray | None = None,
                 radius: int = ANCHOR_RADIUS) -> np.ndarray:
  """(T, 40, 2) lips of a face video -> (T, 40, 2) neutral input per frame:
  the clip's rest shape placed at each frame's anchor."""
  return anchor_track(lips, valid, radius)[:, None, :] + rest_shape(lips, valid)[None]


def mel_context(mel: np.ndarray, starts: np.ndarray, context: int = 32,
                before: int = CONTEXT_BEFORE, pad_value: float = -4.0) -> np.ndarray:
  """Mel context windows: columns [s - before, s - before + context) of `mel`
  (80, M) for each Wav2Lip window start s; columns outside the mel read
  `pad_value` (silence on the Wav2Lip mel's [-4, 4] scale).

  Returns (len(starts), 80, context, 1) float32.
  """
  mel = np.asarray(mel, np.float32)
  starts = np.asarray(starts, np.int64) - before
  lo = int(min(0, starts.min(initial=0)))
  hi = int(max(mel.shape[1], starts.max(initial=0) + context))
  padded = np.full((mel.shape[0], hi - lo), pad_value, np.float32)
  padded[:, -lo:-lo + mel.shape[1]] = mel
  idx = (starts - lo)[:, None] + np.arange(context)[None]
  return np.ascontiguousarray(padded[:, idx].transpose(1, 0, 2)[..., None])
