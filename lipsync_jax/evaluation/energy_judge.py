"""A lip-sync judge with no learned sync weights: lip motion vs. audio energy.

The built-in scorer (`metrics.LipSyncScorer`) is a trained network; when it
and a generator trained against it agree, that may be a shared blind spot
rather than sync. This judge shares nothing learned with them except the
FaceMesh lip points (which no sync loss ever saw):

  * g[t]: the inner-lip opening of video frame t (`lip_landmarks.inner_gap`,
    face-crop units), measured by FaceMesh on the clip's face crops;
  * e[t]: the log-RMS energy of the 16 kHz waveform over `window_s` (40 ms)
    centred on frame t's time (first_frame + t) / fps (`log_rms_energy`);
  * the Pearson correlation of their first differences
        r(L) = corr( g[t+1] - g[t],  e[t+L+1] - e[t+L] )   over t,
    for every lag L in -max_lag..+max_lag, using only pairs whose two lip
    frames are both valid (FaceMesh saw a face) and whose two audio windows
    lie inside the waveform;
  * best lag = argmax_L r(L): the mouth opens as the energy rises, so the
    in-sync correlation is positive.

Sign convention (the same as `metrics`' `offset`): a positive lag means the
audio LAGS the video (the sound comes after the mouth moves). A video whose
audio was delayed by k frames (`lip_sync_lib.shift_waveform(wav, k)`) moves
the best lag by +k, and the built-in scorer's offset by +k too.

First differences, not raw levels: on raw levels the curve is broad (lags -5
to +8 at nearly the same r, ../shared/notes/real-face-probes.md), because both
signals are dominated by slow speech/pause envelopes; the differences keep
the onsets and make the peak sharp.

Pure numpy: the lips come from whoever already ran FaceMesh (`evaluate
--videos` reuses the built-in scorer's).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lipsync_jax.vision import lip_landmarks

SAMPLE_RATE = 16000   # lipsync_jax.io.audio.SAMPLE_RATE (not imported: keeps this module light)
MAX_LAG = 8
WINDOW_S = 0.04
MIN_PAIRS = 20
_POWER_FLOOR = 1e-8   # mean square of the quietest window: -80 dBFS, digital silence

DESCRIPTION = ("energy judge: Pearson r of the frame-to-frame change of the FaceMesh "
               f"inner-lip opening and of the audio's log-RMS energy ({WINDOW_S * 1000:g} ms "
               f"around each frame), best lag over +-{MAX_LAG} frames, + = audio lags video; "
               "no learned sync weights")
# Below this many frames one clip's best lag is often a noise peak. The
# shipped two-stage model's videos of the 10 held-out faces (and the same
# faces' control) judged on 75-178 frames: 13-14 of 20 within +-1 of 0; on
# 270-500 frames: 29 of 30, the control 3 of 30 (docs/two_stage.md).
SHORT_CLIP_FRAMES = 250
DEFINITIONS = {
    "judge_lag": "energy judge's best lag in frames (argmax of r); + = audio lags the video, "
                 "as offset",
    "judge_r / judge_r0": "Pearson r of the lip-opening and audio-energy first differences "
                          "at the best lag / at lag 0",
    "judge_curve": f"r at lags -{MAX_LAG}..+{MAX_LAG} (null: fewer than {MIN_PAIRS} "
                   "valid pairs)",
    "judge_reference_lag": "the judge's best lag on the source clip of the same stem "
                           "(--reference-videos)",
    "judge_lag_within1": "share of clips whose judge lag is within +-1 of 0 "
                         "(_of_reference: of their source clip's judge lag)",
    "judge_short_clips": f"judged clips of fewer than {SHORT_CLIP_FRAMES} frames, where one "
                         "clip's judge lag is often a noise peak: read the share"}


class JudgeError(ValueError):
  """A clip the judge cannot measure (too few valid frames); one line."""


@dataclasses.dataclass
class LagResult:
  """The judge's verdict on one clip.

  best_lag: argmax of `curve` (frames, + = audio lags video).
  r_best, r_zero: the correlation at the best lag and at lag 0.
  lags: (2*max_lag+1,) int, -max_lag..max_lag.
  curve: (2*max_lag+1,) float, r per lag (NaN where fewer than `min_pairs`
    pairs or a constant series).
  pairs: (2*max_lag+1,) int, the pairs each r was computed over.
  """
  best_lag: int
  r_best: float
  r_zero: float
  lags: np.ndarray
  curve: np.ndarray
  pairs: np.ndarray

  def to_json(self) -> dict[str, Any]:
    def num(x: float) -> float | None:
      return round(float(x), 4) if np.isfinite(x) else None
    return {"judge_lag": self.best_lag, "judge_r": num(self.r_best),
            "judge_r0": num(self.r_zero),
            "judge_curve": [num(x) for x in self.curve]}


def log_rms_energy(wav: np.ndarray, n_frames: int, first_frame: int = 0, fps: float = 25.0,
                   window_s: float = WINDOW_S, sample_rate: int = SAMPLE_RATE
                   ) -> tuple[np.ndarray, np.ndarray]:
  """Log-RMS energy of the audio around video frames.

  Args:
    wav: (S,) waveform at `sample_rate` (16 kHz), the whole clip.
    n_frames: frames to measure; frame t sits at time (first_frame + t) / fps
      (first_frame may be negative and n_frames run past the audio: those
      windows come back invalid).
    window_s: the window, centred on the frame's time (40 ms).
  Returns:
    energy (n_frames,) float64: 0.5 * log(mean(x^2) + 1e-8) over the window
      (natural log of the RMS, floored at -80 dBFS), 0 where invalid;
    inside (n_frames,) bool: the window lies wholly inside the waveform.
  """
  wav = np.asarray(wav, np.float64).reshape(-1)
  width = max(1, int(round(window_s * sample_rate)))
  centre = (first_frame + np.arange(n_frames)) * (sample_rate / fps)
  start = np.round(centre - width / 2).astype(np.int64)
  inside = (start >= 0) & (start + width <= wav.size)
  csum = np.concatenate([[0.0], np.cumsum(wav * wav)])
  s = np.clip(start, 0, wav.size)
  e = np.clip(start + width, 0, wav.size)
  power = (csum[e] - csum[s]) / width
  energy = np.where(inside, 0.5 * np.log(np.maximum(power, 0.0) + _POWER_FLOOR), 0.0)
  return energy, inside


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
  x = x - x.mean()
  y = y - y.mean()
  den = np.sqrt(np.dot(x, x) * np.dot(y, y))
  return float(np.dot(x, y) / den) if den > 0 else float("nan")


def lip_energy_lag(lips: np.ndarray, valid: np.ndarray, wav: np.ndarray, first_frame: int = 0,
                   fps: float = 25.0, max_lag: int = MAX_LAG, window_s: float = WINDOW_S,
                   min_pairs: int = MIN_PAIRS) -> LagResult:
  """The judge (module docstring) on one clip's lip track and audio.

  Args:
    lips: (T, 40, 2) FaceMesh lip points (`lip_landmarks.LIP_POINTS` order),
      or a (T,) lip-opening series already measured.
    valid: (T,) bool, frames where FaceMesh saw a face.
    wav: (S,) 16 kHz waveform of the whole clip; lips[0] is video frame
      `first_frame` of its timeline, at `fps`.
    max_lag: lags -max_lag..max_lag frames (+ = audio lags video).
  Returns:
    LagResult.
  Raises:
    JudgeError: fewer than `min_pairs` valid lip difference pairs, or no lag
      with `min_pairs` pairs and a defined correlation.
  """
  lips = np.asarray(lips, np.float64)
  gap = lip_landmarks.inner_gap(lips) if lips.ndim == 3 else lips.reshape(-1)
  valid = np.asarray(valid, bool).reshape(-1)
  if valid.shape != gap.shape:
    raise JudgeError(f"lips cover {gap.size} frames but valid has {valid.size}")
  d_gap = np.diff(gap)
  ok_gap = valid[1:] & valid[:-1]
  if ok_gap.sum() < min_pairs:
    raise JudgeError(f"{int(ok_gap.sum())} lip difference pairs with both "
                     f"frames valid (< {min_pairs})")
  # Energy of frames first_frame - max_lag .. first_frame + T - 1 + max_lag.
  n = gap.size
  energy, inside = log_rms_energy(wav, n + 2 * max_lag, first_frame - max_lag, fps, window_s)
  d_energy = np.diff(energy)
  ok_energy = inside[1:] & inside[:-1]
  lags = np.arange(-max_lag, max_lag + 1)
  curve = np.full(lags.size, np.nan)
  pairs = np.zeros(lags.size, np.int64)
  for i, lag in enumerate(lags):
    # d_gap[t] pairs with the energy difference of frames t+lag, t+lag+1,
    # which sits at index t + lag + max_lag of d_energy.
    idx = np.arange(n - 1) + lag + max_lag
    ok = ok_gap & ok_energy[idx]
    pairs[i] = int(ok.sum())
    if pairs[i] >= min_pairs:
      curve[i] = _pearson(d_gap[ok], d_energy[idx[ok]])
  if not np.isfinite(curve).any():
    raise JudgeError("no lag with a defined correlation "
                     "(constant lip opening or silent audio)")
  best = int(np.nanargmax(curve))
  return LagResult(best_lag=int(lags[best]), r_best=float(curve[best]),
                   r_zero=float(curve[max_lag]), lags=lags, curve=curve, pairs=pairs)


def share_within(lags: list[int | None], targets: list[int | None] | int = 0,
                 tolerance: int = 1) -> dict[str, Any]:
  """Share of clips whose judge lag is within +-tolerance of a target.

  `targets`: one lag for every clip (e.g. its source clip's), or a single
  number; clips where either is None are left out. Returns {"share", "hits", "n"}
  (share None when n is 0).
  """
  if isinstance(targets, int):
    targets = [targets] * len(lags)
  hits = [abs(a - b) <= tolerance for a, b in zip(lags, targets)
          if a is not None and b is not None]
  return {"share": (sum(hits) / len(hits)) if hits else None, "hits": sum(hits),
          "n": len(hits)}
