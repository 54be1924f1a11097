"""The landmark sync expert's inputs: lip windows and mel windows of a clip.

A clip's lips (T, 40, 2) and mel (80, N) become sliding `WINDOW`-frame lip
windows and the mel window of every audio position, optionally normalised per
clip. Shared by the expert's trainer (`train.lip_sync_lib`) and its scorer
(`evaluation.metrics.LipSyncScorer`).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lipsync_jax.io import audio as audio_lib
from lipsync_jax.vision import lip_landmarks

WINDOW = 5   # frames of the pixel experts' windows (and the default here)


def mel_columns(window: int) -> int:
  """Mel columns of a `window`-frame audio window (16 for 5 frames at 25 fps)."""
  return int(round(audio_lib.MEL_WINDOW * window / WINDOW))


def mel_windows(mel: np.ndarray, n_frames: int, fps: float, window: int = WINDOW) -> np.ndarray:
  """(n_frames, 80, mel_columns(window)) mel windows (`audio.mel_windows`)."""
  return audio_lib.mel_windows(mel, n_frames, fps, mel_columns(window))


@dataclasses.dataclass
class ClipWindows:
  """A clip as training arrays.

  lips (T, 40, 2); video_ok (T-4,) window i = frames i..i+4 all valid;
  audio (A, 80, 16) the mel window of every audio position p (frame p of the
  audio timeline) whose window lies inside the mel; first_frame: position of
  lips[0] on the audio timeline.
  """
  name: str
  speaker: str
  lips: np.ndarray
  video_ok: np.ndarray
  audio: np.ndarray
  first_frame: int


def clip_inputs(lips: np.ndarray, valid: np.ndarray | None, mel: np.ndarray,
                normalise: bool) -> tuple[np.ndarray, np.ndarray]:
  """The expert's view of a clip: lips and mel, per-clip normalised or not.

  With `normalise`, lips go through `lip_landmarks.normalise_clip` and every
  mel band loses its clip mean (cepstral mean normalisation: the voice and
  the microphone, not the speech).
  """
  if not normalise:
    return np.asarray(lips, np.float32), mel
  return lip_landmarks.normalise_clip(lips, valid), normalise_mel(mel)


def normalise_mel(mel: np.ndarray) -> np.ndarray:
  """(80, N) mel minus each band's clip mean (cepstral mean normalisation)."""
  return (mel - mel.mean(axis=1, keepdims=True)).astype(np.float32)


def clip_windows(clip: lip_landmarks.ClipLips, mel: np.ndarray | None = None,
                 normalise: bool = False, window: int = WINDOW) -> ClipWindows:
  mel = clip.mel if mel is None else mel
  lips, mel = clip_inputs(clip.lips, clip.valid, mel, normalise)
  cols = mel_columns(window)
  n_audio = int(math.floor((mel.shape[1] - cols) * clip.fps
                           / audio_lib.MEL_STEPS_PER_SECOND)) + 1
  n_audio = max(n_audio, 0)
  audio = (mel_windows(mel, n_audio, clip.fps, window) if n_audio
           else np.zeros((0, 80, cols), np.float32))
  v = np.asarray(clip.valid, bool)
  n = max(len(v) - window + 1, 0)
  ok = np.array([v[i:i + window].all() for i in range(n)], bool)
  # The audio window of video window i must exist.
  ok &= (clip.first_frame + np.arange(n)) < n_audio
  return ClipWindows(clip.name, clip.speaker, lips, ok,
                     audio.astype(np.float32), clip.first_frame)


def video_windows(lips: np.ndarray, window: int = WINDOW) -> np.ndarray:
  """(T, 40, 2) -> (T-W+1, W, 40, 2) sliding W-frame windows."""
  n = lips.shape[0] - window + 1
  return lips[np.arange(n)[:, None] + np.arange(window)[None]]
