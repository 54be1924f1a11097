"""Audio loading and Wav2Lip-exact mel features.

The front end reproduces upstream Wav2Lip (`audio.py` + `hparams.py`, see
spec/upstream.md §6.1) on current librosa:

1. `load_audio`: decode, mix down to mono by averaging the channels and
   resample to 16 kHz with soxr "HQ", which is exactly what
   `librosa.load(path, sr=16000)` does (for WAV/FLAC/OGG the result is
   bit-identical to librosa.load). Anything else ffmpeg can read (mp3, m4a, the
   audio track of an mp4/mpg, ...) is decoded with PyAV.
2. `melspectrogram`: preemphasis 0.97, centred reflect-padded STFT (n_fft 800,
   hop 200, Hann window 800), magnitude, Slaney mel filterbank (80 bands,
   55-7600 Hz), `20*log10(max(1e-5, x)) - 20` dB, symmetric normalisation to
   [-4, 4]. Output `(80, N)` float32 with `N = len(wav) // 200 + 1`, i.e. 80 mel
   columns per second of audio.

Alignment convention (shared by training and inference): video frame `i` at
`fps` owns the 16 mel columns starting at `int(80 * i / fps)`
(`mel_window_start`). Windows that would run past the end of the mel are
clamped to the last 16 columns, as in upstream inference.
"""

from __future__ import annotations

import functools
import math
import os
import warnings
from typing import Union

import librosa
import numpy as np
import scipy.signal
import soundfile as sf

PathLike = Union[str, os.PathLike]

SAMPLE_RATE = 16000
MEL_STEPS_PER_SECOND = 80
MEL_WINDOW = 16

N_FFT = 800
HOP_LENGTH = 200
WIN_LENGTH = 800
NUM_MELS = 80
FMIN = 55.0
FMAX = 7600.0
PREEMPHASIS = 0.97
MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0

# Containers that libsndfile decodes directly (faster than going through PyAV,
# and the same reader librosa.load uses).
_SOUNDFILE_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".aiff", ".aif"})


class AudioError(ValueError):
  """A user-facing audio problem, with a one-line message."""


def _check_finite(wav: np.ndarray, what: str) -> None:
  if not np.all(np.isfinite(wav)):
    raise AudioError(f"{what} contains NaN or infinite samples")


def _decode_soundfile(path: str) -> tuple[np.ndarray, int]:
  """Returns `(channels, n)` float32 samples and the native rate."""
  data, rate = sf.read(path, dtype="float32", always_2d=True)
  return data.T, int(rate)


def _decode_pyav(path: str) -> tuple[np.ndarray, int]:
  """Returns `(channels, n)` float32 samples and the native rate, via ffmpeg."""
  import av  # pylint: disable=g-import-not-at-top

  try:
    container = av.open(path)
  except av.error.FFmpegError as e:
    raise AudioError(f"cannot read audio from {path}: {e.strerror or e}") from None
  with container:
    if not container.streams.audio:
      raise AudioError(f"no audio stream in {path}")
    stream = container.streams.audio[0]
    rate = int(stream.rate or stream.codec_context.sample_rate or 0)
    channels = int(stream.codec_context.channels or 0)
    if rate <= 0 or channels <= 0:
      raise AudioError(f"audio stream of {path} has no sample rate/channels")
    # Normalise the sample format only; keep the native layout and rate so the
    # mixdown and resampling below are librosa's, not swresample's.
    layout = stream.codec_context.layout.name
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=rate)
    chunks = []
    try:
      for frame in container.decode(stream):
        for out in resampler.resample(frame):
          chunks.append(out.to_ndarray())
      for out in resampler.resample(None):
        chunks.append(out.to_ndarray())
    except av.error.FFmpegError as e:
      raise AudioError(
          f"cannot decode audio of {path}: {e.strerror or e}") from None
  if not chunks:
    return np.zeros((channels, 0), np.float32), rate
  return np.concatenate(chunks, axis=1).astype(np.float32, copy=False), rate


def load_audio(path: PathLike, sr: int = SAMPLE_RATE) -> np.ndarray:
  """Loads any audio ffmpeg can read as mono float32 at `sr` Hz.

  Matches `librosa.load(path, sr=sr)`: channels are averaged (librosa.to_mono)
  and the result is resampled with soxr HQ (librosa's default `soxr_hq`).

  Args:
    path: an audio file (wav, flac, mp3, m4a, ...) or a video with an audio
      track (mp4, mpg, ...). The first audio stream is used.
    sr: target sample rate.

  Returns:
    `(n,)` float32 waveform, roughly in [-1, 1].

  Raises:
    AudioError: missing file, undecodable file, no audio stream, no samples or
      non-finite samples.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise AudioError(f"audio file not found: {path}")
  if os.path.isdir(path):
    raise AudioError(f"expected an audio file, got a directory: {path}")
  data = None
  if os.path.splitext(path)[1].lower() in _SOUNDFILE_SUFFIXES:
    try:
      data, rate = _decode_soundfile(path)
    except (sf.LibsndfileError, RuntimeError, TypeError):
      data = None  # e.g. a compressed WAV codec: let ffmpeg try.
  if data is None:
    data, rate = _decode_pyav(path)
  if data.shape[-1] == 0:
    raise AudioError(f"no audio samples in {path}")
  _check_finite(data, f"audio of {path}")
  wav = librosa.to_mono(data) if data.shape[0] > 1 else data[0]
  if rate != sr:
    wav = librosa.resample(wav, orig_sr=rate, target_sr=sr, res_type="soxr_hq")
  return np.ascontiguousarray(wav, dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _mel_basis() -> np.ndarray:
  """The `(80, 401)` Slaney mel filterbank (read-only, computed once)."""
  basis = librosa.filters.mel(
      sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=NUM_MELS, fmin=FMIN, fmax=FMAX)
  basis.setflags(write=False)
  return basis


def num_mel_columns(num_samples: int) -> int:
  """Number of mel columns for `num_samples` samples at 16 kHz."""
  return num_samples // HOP_LENGTH + 1


def melspectrogram(wav: np.ndarray) -> np.ndarray:
  """Wav2Lip's normalised log-mel spectrogram.

  Clips shorter than the 400-sample reflect pad (25 ms) are handled as upstream
  (librosa 0.7, which called `np.pad(mode="reflect")` the same way): numpy
  repeats the reflection until the pad is filled, so any clip of at least one
  sample works; a one-sample clip is padded with copies of that sample.

  Args:
    wav: `(n,)` mono waveform at 16 kHz, n >= 1 (cast to float32, as
      librosa.load returns in upstream).

  Returns:
    `(80, n // 200 + 1)` float32 in [-4, 4]; silence maps to -4.

  Raises:
    AudioError: empty, non-1-D or non-finite input.
  """
  wav = np.asarray(wav)
  if wav.ndim != 1:
    raise AudioError(f"expected a mono waveform of shape (n,), got {wav.shape}")
  if wav.size == 0:
    raise AudioError("cannot compute a mel spectrogram of an empty waveform")
  wav = wav.astype(np.float32, copy=False)
  _check_finite(wav, "waveform")
  emphasised = scipy.signal.lfilter([1.0, -PREEMPHASIS], [1.0], wav)
  with warnings.catch_warnings():
    # librosa warns when n_fft > len(y); reflect padding still works then.
    warnings.simplefilter("ignore", UserWarning)
    spec = librosa.stft(
        y=emphasised, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
        window="hann", center=True, pad_mode="reflect")
  mel = np.dot(_mel_basis(), np.abs(spec))
  db = 20.0 * np.log10(np.maximum(1e-5, mel)) - REF_LEVEL_DB
  norm = (2 * MAX_ABS_VALUE) * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
  out = np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)
  if not np.all(np.isfinite(out)):  # Defensive: upstream aborts on NaN mels.
    raise AudioError("mel spectrogram contains NaN values")
  return out


def mel_from_file(path: PathLike) -> np.ndarray:
  """`melspectrogram(load_audio(path))`: `(80, N)` float32."""
  return melspectrogram(load_audio(path, SAMPLE_RATE))


def mel_window_start(i: int, fps: float) -> int:
  """First mel column of video frame `i`: `int(80 * i / fps)`.

  Used by both training and inference (no upstream -1 frame shift). The 5-frame
  SyncNet window starting at frame f also starts at `mel_window_start(f, fps)`.
  """
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  return int(MEL_STEPS_PER_SECOND * i / fps)


def _pad_to_window(mel: np.ndarray, columns: int = MEL_WINDOW) -> np.ndarray:
  mel = np.asarray(mel, dtype=np.float32)
  if mel.ndim != 2 or mel.shape[0] != NUM_MELS or mel.shape[1] == 0:
    raise AudioError(f"expected a mel of shape (80, N>0), got {mel.shape}")
  if mel.shape[1] < columns:
    mel = np.pad(mel, ((0, 0), (0, columns - mel.shape[1])), mode="edge")
  return mel


def mel_window(mel: np.ndarray, frame: int, fps: float) -> np.ndarray:
  """The `(80, 16)` float32 window of video frame `frame` (clamped to the end).

  Same rule as `mel_windows`, for one frame.
  """
  mel = _pad_to_window(mel)
  start = min(mel_window_start(frame, fps), mel.shape[1] - MEL_WINDOW)
  return mel[:, start:start + MEL_WINDOW]


def mel_windows(mel: np.ndarray, n_frames: int, fps: float,
                columns: int = MEL_WINDOW) -> np.ndarray:
  """Per-frame mel windows for frames `0..n_frames-1`.

  Frame i gets the 16 columns starting at `int(80 * i / fps)`. A window that
  would run past the end is clamped to the last 16 columns (upstream inference
  appends `mel[:, -16:]`). A mel shorter than 16 columns is first right-padded
  to 16 by repeating its last column, so every frame gets a full window.

  Args:
    mel: `(80, N)` mel spectrogram, N >= 1.
    n_frames: number of video frames, >= 0.
    fps: video frame rate.
    columns: window width (16, 0.2 s, for the 5-frame SyncNet window; the
      landmark expert can use longer ones), the same rules.

  Returns:
    `(n_frames, 80, columns)` float32.
  """
  if n_frames < 0:
    raise ValueError(f"n_frames must be >= 0, got {n_frames}")
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  mel = _pad_to_window(mel, columns)
  starts = window_starts(np.arange(n_frames), fps, mel.shape[1], columns)
  idx = starts[:, None] + np.arange(columns)[None, :]  # (n_frames, columns)
  return np.ascontiguousarray(mel[:, idx].transpose(1, 0, 2))


def window_starts(frames: np.ndarray, fps: float, num_columns: int | None = None,
                  columns: int = MEL_WINDOW) -> np.ndarray:
  """First mel column of each frame's window, `int(80 * i / fps)`, for the
  `(n,)` frame indices `frames`; with `num_columns` (the mel's length, >=
  `columns`) clamped so that every window ends inside the mel. -> `(n,)` int64.
  """
  starts = (MEL_STEPS_PER_SECOND * np.asarray(frames, np.float64) / fps).astype(np.int64)
  return starts if num_columns is None else np.minimum(starts, num_columns - columns)


def num_frames_for_audio(num_samples: int, fps: float,
                         sr: int = SAMPLE_RATE) -> int:
  """Number of output video frames that `num_samples` of audio covers.

  Rule: `round(duration * fps)` (halves round up), at least 1, where
  `duration = num_samples / sr`. E.g. 1.0 s at 25 fps -> 25 frames; 1.22 s ->
  31 (30.5 rounds up). This is the inference output length; upstream's rule
  (one chunk per frame while `int(80*i/fps) + 16 <= N`, plus one final clamped
  chunk) gives 22 frames for 1 s at 25 fps, i.e. it drops the last ~0.1 s.
  """
  if num_samples < 0:
    raise ValueError(f"num_samples must be >= 0, got {num_samples}")
  if fps <= 0:
    raise ValueError(f"fps must be positive, got {fps}")
  return max(1, math.floor(num_samples * fps / sr + 0.5))


class MelStream:
  """`melspectrogram` of a waveform that arrives in pieces, column by column.

  Column c of the centred STFT covers samples [200 c - 400, 200 c + 400), so
  it is final once sample 200 c + 400 has arrived (one more: column 0's
  reflect padding reads sample 400): `push` returns the columns
  that became final, `finish` the rest (those that reach past the end, with
  the end's reflect padding) and starts a new waveform. Every piece is
  `melspectrogram` of a slice that starts 3 columns (600 samples) before the
  first column it returns (at sample 0 for the first 3 columns), so the
  slice's own pre-emphasis and padding touch no column that is kept: the
  columns equal those of `melspectrogram(whole waveform)` (bit for bit on
  numpy's FFT; the tests compare). Only the last ~1000 samples are kept.
  """

  _CONTEXT = 3  # columns before the first returned one: 600 samples > the 400-sample pad

  def __init__(self):
    self.reset()

  def reset(self) -> None:
    """Forgets the waveform: the next sample is sample 0 of a new one."""
    self._wav = np.zeros(0, np.float32)  # samples [self._offset, self.samples)
    self._offset = 0
    self.samples = 0   # samples pushed since the last reset
    self.columns = 0   # columns returned since the last reset

  def push(self, wav: np.ndarray) -> np.ndarray:
    """Appends `(n,)` float32 samples at 16 kHz; returns the `(80, k)` columns
    that became final (k >= 0)."""
    wav = np.asarray(wav, np.float32).reshape(-1)
    self._wav = np.concatenate([self._wav, wav])
    self.samples += wav.size
    # Column c needs samples up to 200 c + 399, and column 0's reflect pad
    # sample 400: one sample more than 200 c + 400 for every column.
    final = max(0, (self.samples - N_FFT // 2 - 1) // HOP_LENGTH + 1)
    return self._take(final, HOP_LENGTH * (final - 1) + N_FFT // 2 + 1)

  def finish(self) -> np.ndarray:
    """The remaining `(80, k)` columns of the waveform as `melspectrogram`
    computes them (`num_mel_columns(samples)` in all), then `reset`."""
    cols = (self._take(num_mel_columns(self.samples), self.samples) if self.samples
            else np.zeros((NUM_MELS, 0), np.float32))
    self.reset()
    return cols

  def _take(self, stop: int, end_sample: int) -> np.ndarray:
    """Columns [self.columns, stop) from the samples before `end_sample`."""
    start = self.columns
    if stop <= start:
      return np.zeros((NUM_MELS, 0), np.float32)
    skip = min(start, self._CONTEXT)
    first = HOP_LENGTH * (start - skip)  # a multiple of the hop: columns line up
    mel = melspectrogram(self._wav[first - self._offset:end_sample - self._offset])
    self.columns = stop
    keep = HOP_LENGTH * max(0, stop - self._CONTEXT)
    self._wav = self._wav[keep - self._offset:]
    self._offset = keep
    return mel[:, skip:skip + stop - start]
