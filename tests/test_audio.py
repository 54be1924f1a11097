"""Tests for lipsync_jax.io.audio against an independent numpy reference."""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest
import scipy.signal
import soundfile as sf

from lipsync_jax.io import audio
from lipsync_jax.io import video

SPEECH_16K = "data/real/audio/librivox_pocketsphinx/sense_and_sensibility_01_austen_64kb-0880.wav"
SPEECH_44K_STEREO = "data/real/audio/retalking/audio_1.wav"


# ---------------------------------------------------------------------------
# Independent reference: Wav2Lip's recipe written from the formulas, with
# numpy FFTs and our own Slaney mel filterbank (no librosa).


def _hz_to_mel_slaney(f: np.ndarray) -> np.ndarray:
  f = np.asarray(f, np.float64)
  f_sp = 200.0 / 3.0
  min_log_hz = 1000.0
  min_log_mel = min_log_hz / f_sp
  logstep = math.log(6.4) / 27.0
  return np.where(f >= min_log_hz,
                  min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep,
                  f / f_sp)


def _mel_to_hz_slaney(m: np.ndarray) -> np.ndarray:
  m = np.asarray(m, np.float64)
  f_sp = 200.0 / 3.0
  min_log_hz = 1000.0
  min_log_mel = min_log_hz / f_sp
  logstep = math.log(6.4) / 27.0
  return np.where(m >= min_log_mel,
                  min_log_hz * np.exp(logstep * (m - min_log_mel)),
                  f_sp * m)


def _reference_mel_basis(sr=16000, n_fft=800, n_mels=80, fmin=55.0,
                         fmax=7600.0) -> np.ndarray:
  fft_freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
  mel_pts = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax),
                        n_mels + 2)
  hz = _mel_to_hz_slaney(mel_pts)
  basis = np.zeros((n_mels, fft_freqs.size))
  for m in range(n_mels):
    lo, mid, hi = hz[m], hz[m + 1], hz[m + 2]
    rising = (fft_freqs - lo) / (mid - lo)
    falling = (hi - fft_freqs) / (hi - mid)
    tri = np.maximum(0.0, np.minimum(rising, falling))
    basis[m] = tri * (2.0 / (hi - lo))  # Slaney area normalisation.
  return basis


def _reference_mel(wav: np.ndarray, pad_mode: str = "reflect") -> np.ndarray:
  x = np.asarray(wav, np.float64)
  y = np.empty_like(x)
  y[0] = x[0]
  y[1:] = x[1:] - 0.97 * x[:-1]
  padded = np.pad(y, 400, mode=pad_mode)
  window = scipy.signal.get_window("hann", 800, fftbins=True)
  n_cols = len(x) // 200 + 1
  frames = np.stack([padded[t * 200:t * 200 + 800] for t in range(n_cols)])
  mag = np.abs(np.fft.rfft(frames * window, axis=1)).T  # (401, n_cols)
  mel = _reference_mel_basis() @ mag
  db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
  return np.clip(8.0 * (db + 100.0) / 100.0 - 4.0, -4.0, 4.0)


# ---------------------------------------------------------------------------
# melspectrogram


# Tolerance 1e-4 in normalised units (8 units = 100 dB, so 1e-4 is 1.25e-3
# dB): the library runs the STFT in float32 like upstream (librosa.load returns
# float32), the reference in float64; float32 rounding is the only difference
# (observed ~2e-7 on speech). A wrong window, pad mode, filterbank or dB
# formula errs by > 0.1.
MEL_TOL = 1e-4


def test_melspectrogram_matches_numpy_reference_on_speech(shared_dir):
  wav, sr = sf.read(shared_dir / SPEECH_16K, dtype="float32")
  assert sr == 16000 and wav.ndim == 1
  mel = audio.melspectrogram(wav)
  ref = _reference_mel(wav)
  assert mel.dtype == np.float32
  assert mel.shape == (80, len(wav) // 200 + 1) == ref.shape
  assert np.abs(mel - ref).max() < MEL_TOL
  # Real speech uses most of the range (sanity: not all floor or saturated).
  assert mel.min() == -4.0 and mel.max() > 0.0 and mel.std() > 0.5


def test_melspectrogram_edges_use_reflect_padding(shared_dir):
  wav, _ = sf.read(shared_dir / SPEECH_16K, dtype="float32")
  wav = wav[8000:16000]  # Starts mid-speech, so the edge columns matter.
  ref = _reference_mel(wav)
  zero_padded = _reference_mel(wav, pad_mode="constant")  # librosa >= 0.10.
  mel = audio.melspectrogram(wav)
  np.testing.assert_allclose(mel[:, :3], ref[:, :3], atol=MEL_TOL)
  np.testing.assert_allclose(mel[:, -3:], ref[:, -3:], atol=MEL_TOL)
  # Zero padding would change the edge columns noticeably.
  assert np.abs(mel[:, :2] - zero_padded[:, :2]).max() > 0.1


def test_silence_is_floor_and_finite():
  mel = audio.melspectrogram(np.zeros(16000, np.float32))
  assert mel.shape == (80, 81)
  assert np.all(np.isfinite(mel))
  assert np.all(mel == -4.0)


@pytest.mark.parametrize("n", [1, 2, 150, 399, 400, 401])
def test_clips_shorter_than_the_reflect_pad(n):
  rng = np.random.default_rng(n)
  wav = (0.1 * rng.standard_normal(n)).astype(np.float32)
  mel = audio.melspectrogram(wav)
  assert mel.shape == (80, n // 200 + 1)
  assert np.all(np.isfinite(mel))
  if n >= 2:  # numpy repeats the reflection, as upstream did.
    np.testing.assert_allclose(mel, _reference_mel(wav), atol=MEL_TOL)
  windows = audio.mel_windows(mel, 7, 25.0)
  assert windows.shape == (7, 80, 16) and windows.dtype == np.float32
  # Edge replication of the last column, and every frame clamps to it.
  for w in windows:
    np.testing.assert_array_equal(w[:, :mel.shape[1]], mel)
    np.testing.assert_array_equal(w[:, -1], mel[:, -1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_waveform_raises(bad):
  wav = np.zeros(4000, np.float32)
  wav[100] = bad
  with pytest.raises(audio.AudioError, match="NaN or infinite"):
    audio.melspectrogram(wav)


def test_empty_or_multichannel_waveform_raises():
  with pytest.raises(audio.AudioError, match="empty"):
    audio.melspectrogram(np.zeros(0, np.float32))
  with pytest.raises(audio.AudioError, match=r"\(n,\)"):
    audio.melspectrogram(np.zeros((2, 1000), np.float32))


# ---------------------------------------------------------------------------
# mel windows and alignment


@pytest.mark.parametrize("fps", [25, 24, 30, 29.97])
def test_mel_windows_start_and_clamp(fps):
  n_cols = 150
  mel = np.tile(np.arange(n_cols, dtype=np.float32), (80, 1))  # value = column
  n_frames = 60  # Runs past the end of the mel for every fps here.
  windows = audio.mel_windows(mel, n_frames, fps)
  assert windows.shape == (n_frames, 80, 16)
  fps_exact = fractions.Fraction(fps).limit_denominator(1000)
  clamped = 0
  for i, w in enumerate(windows):
    start = math.floor(80 * i / fps_exact)
    assert audio.mel_window_start(i, fps) == start
    expected = min(start, n_cols - 16)
    clamped += start > n_cols - 16
    np.testing.assert_array_equal(w[0], np.arange(expected, expected + 16))
    np.testing.assert_array_equal(audio.mel_window(mel, i, fps), w)
  assert clamped > 0


def test_mel_window_start_matches_upstream_constants():
  # 80 mel columns per second: frame 5 at 25 fps is 0.2 s -> column 16.
  assert audio.mel_window_start(0, 25) == 0
  assert audio.mel_window_start(5, 25) == 16
  assert audio.mel_window_start(1, 25) == 3  # int(3.2)
  assert audio.mel_window_start(3, 30) == 8


def test_mel_windows_zero_frames_and_bad_input():
  mel = np.zeros((80, 40), np.float32)
  assert audio.mel_windows(mel, 0, 25).shape == (0, 80, 16)
  with pytest.raises(audio.AudioError):
    audio.mel_windows(np.zeros((40, 80), np.float32), 3, 25)
  with pytest.raises(ValueError):
    audio.mel_windows(mel, 3, 0)


def test_num_frames_for_audio():
  assert audio.num_frames_for_audio(16000, 25) == 25
  assert audio.num_frames_for_audio(19200, 25) == 30    # 1.2 s
  assert audio.num_frames_for_audio(19520, 25) == 31    # 30.5 rounds up
  assert audio.num_frames_for_audio(19500, 25) == 30    # 30.47
  assert audio.num_frames_for_audio(0, 25) == 1
  assert audio.num_frames_for_audio(48000, 29.97) == 90  # 89.91
  assert audio.num_frames_for_audio(44100, 25, sr=44100) == 25


# ---------------------------------------------------------------------------
# load_audio


def _sine(freq: float, sr: int, seconds: float) -> np.ndarray:
  t = np.arange(int(round(seconds * sr))) / sr
  return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_stereo_is_mixed_down_by_averaging(tmp_path):
  left = _sine(300, 16000, 0.5)
  right = _sine(1100, 16000, 0.5) * 0.5
  path = tmp_path / "stereo.wav"
  sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
  wav = audio.load_audio(path)
  assert wav.dtype == np.float32 and wav.shape == left.shape
  np.testing.assert_allclose(wav, (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("rate", [44100, 48000])
def test_resamples_to_16k(tmp_path, rate):
  seconds = 1.5
  path = tmp_path / f"tone_{rate}.wav"
  sf.write(path, np.stack([_sine(440, rate, seconds)] * 2, axis=1), rate)
  wav = audio.load_audio(path)
  assert wav.dtype == np.float32 and wav.ndim == 1
  assert abs(len(wav) - seconds * 16000) <= 2
  # The content is the same tone at 16 kHz (compare away from the edges).
  expected = _sine(440, 16000, seconds)
  n = min(len(wav), len(expected))
  np.testing.assert_allclose(wav[800:n - 800], expected[800:n - 800],
                             atol=2e-3)


def test_real_stereo_44k_speech_matches_mixdown_then_polyphase(shared_dir):
  data, sr = sf.read(shared_dir / SPEECH_44K_STEREO, dtype="float64")
  assert sr == 44100 and data.shape[1] == 2
  expected = scipy.signal.resample_poly(data.mean(axis=1), 160, 441)
  wav = audio.load_audio(shared_dir / SPEECH_44K_STEREO)
  assert abs(len(wav) - len(expected)) <= 2
  n = min(len(wav), len(expected))
  # Two different anti-aliasing filters: agree to well under 1 % of full scale.
  err = np.abs(wav[:n] - expected[:n])[1000:-1000]
  assert err.max() < 1e-2 and err.mean() < 1e-3


@pytest.mark.parametrize("clip", ["av/voxceleb2/00002.mp4",
                                  "av/grid/bbaf2n.mpg"])
def test_audio_track_of_a_video(shared_dir, clip):
  path = shared_dir / "data/real" / clip
  wav = audio.load_audio(path)
  info = video.probe(path)
  assert info.has_audio
  assert wav.dtype == np.float32 and np.all(np.isfinite(wav))
  assert abs(len(wav) / 16000 - info.duration) < 0.05
  assert np.sqrt(np.mean(wav ** 2)) > 1e-3  # Speech, not silence.
  mel = audio.melspectrogram(wav)
  assert mel.shape == (80, len(wav) // 200 + 1) and np.all(np.isfinite(mel))


def test_mel_from_file(shared_dir):
  path = shared_dir / SPEECH_16K
  wav, _ = sf.read(path, dtype="float32")
  np.testing.assert_array_equal(audio.mel_from_file(path),
                                audio.melspectrogram(wav))


def test_missing_file_raises(tmp_path):
  with pytest.raises(audio.AudioError, match="not found"):
    audio.load_audio(tmp_path / "nope.wav")


def test_video_without_audio_raises(tmp_path):
  path = tmp_path / "silent.mp4"
  frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(3)]
  video.write_video(path, frames, fps=25)
  assert not video.probe(path).has_audio
  with pytest.raises(audio.AudioError, match="no audio stream"):
    audio.load_audio(path)


def test_garbage_and_empty_files_raise(tmp_path):
  garbage = tmp_path / "garbage.wav"
  garbage.write_bytes(b"this is not audio at all" * 10)
  with pytest.raises(audio.AudioError, match="cannot read"):
    audio.load_audio(garbage)
  empty = tmp_path / "empty.wav"
  sf.write(empty, np.zeros((0,), np.float32), 16000)
  with pytest.raises(audio.AudioError, match="no audio samples"):
    audio.load_audio(empty)
