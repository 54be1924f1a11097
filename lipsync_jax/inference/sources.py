"""Inputs of a run: input checks (`prepare`), the face video or photo as a frame
source, the spill file for ping-pong replays, and the output audio."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Iterator

import cv2
import numpy as np

from lipsync_jax.io import audio as audio_lib
from lipsync_jax.vision import blending
from lipsync_jax.io import video as video_lib
from lipsync_jax.inference.options import (InferenceError, InferenceOptions, SILENCE_PEAK,
                                           check_input, check_output_path, is_image)
from lipsync_jax.inference.pipeline import Timer


def ping_pong_index(i: int, n: int) -> int:
  """Source frame for output frame `i` of a video of `n` frames played back
  and forth: 0 1 .. n-1 n-2 .. 1 0 1 ... (no repeated end frames)."""
  if n <= 1:
    return 0
  period = 2 * n - 2
  k = i % period
  return k if k < n else period - k


@dataclasses.dataclass
class FaceInput:
  path: str
  is_image: bool
  fps: float
  width: int
  height: int
  est_frames: int          # probe's estimate (exact for images/static)
  resample_fps: float | None
  image: np.ndarray | None = None  # the single frame of an image/static input


class SpillFile:
  """Raw uint8 frames appended to a temp file and read back by index."""

  def __init__(self, shape: tuple[int, int, int], tmpdir: str):
    self.shape = shape
    self.path = os.path.join(tmpdir, "frames.raw")
    self._f = open(self.path, "wb")
    self.count = 0
    self._map: np.memmap | None = None

  def append(self, frame: np.ndarray) -> None:
    self._f.write(np.ascontiguousarray(frame).tobytes())
    self.count += 1

  def __getitem__(self, i: int) -> np.ndarray:
    if self._map is None or self._map.shape[0] < self.count:
      self._f.flush()
      self._map = np.memmap(self.path, np.uint8, "r", shape=(self.count,) + self.shape)
    return np.array(self._map[i])

  def close(self) -> None:
    self._map = None
    if not self._f.closed:
      self._f.close()


def resize_frame(frame: np.ndarray, factor: int) -> np.ndarray:
  if factor == 1:
    return frame
  h, w = frame.shape[:2]
  return cv2.resize(frame, (max(2, (w // factor) // 2 * 2), max(2, (h // factor) // 2 * 2)),
                    interpolation=cv2.INTER_AREA)


def crop_face(frame: np.ndarray, box, size: int) -> tuple[tuple[int, int, int, int] | None,
                                                          np.ndarray | None]:
  """The face of `frame` in `box` (x1, y1, x2, y2), as the generator takes it:
  ((x1, y1, x2, y2) rounded into the frame, (size, size, 3) uint8 crop), or
  (None, None) when the box is empty inside the frame."""
  b = blending.clip_box(box, frame.shape)
  if b is None:
    return None, None
  x1, y1, x2, y2 = b
  return b, cv2.resize(frame[y1:y2, x1:x2], (size, size), interpolation=cv2.INTER_AREA)


class FrameSource:
  """Yields (output index, source index, frame) for `n_out` output frames.

  Decodes the face video once, forward, in a streaming way. When more output
  frames than source frames are needed (ping-pong), every decoded frame is
  also appended to a spill file and later frames are read back from it.
  """

  def __init__(self, face: FaceInput, resize_factor: int, n_source: int | None,
               tmpdir: str):
    self.face = face
    self.resize_factor = resize_factor
    self.n_source = n_source  # exact, when known (from detection or cache)
    self.tmpdir = tmpdir

  def decode(self) -> Iterator[np.ndarray]:
    """The source frames once, in order (resized by the resize factor)."""
    if self.face.image is not None:
      yield resize_frame(self.face.image, self.resize_factor)
      return
    for frame in video_lib.iter_frames(self.face.path, fps=self.face.resample_fps):
      yield resize_frame(frame, self.resize_factor)

  def frames(self, n_out: int) -> Iterator[tuple[int, int, np.ndarray]]:
    if self.face.image is not None:
      frame = next(self.decode())
      for j in range(n_out):
        yield j, 0, frame
      self.n_source = 1
      return
    estimate = self.n_source or self.face.est_frames
    spill_needed = n_out > estimate - 2  # margin: probe counts can be off by one
    spill: SpillFile | None = None
    j = 0
    try:
      for frame in self.decode():
        if j >= n_out:
          break
        if spill_needed:
          if spill is None:
            spill = SpillFile(frame.shape, self.tmpdir)
          spill.append(frame)
        yield j, j, frame
        j += 1
      if j >= n_out:
        return
      # The video ended before the audio: ping-pong over what was decoded.
      n = j
      if n == 0:
        raise InferenceError(f"no frames could be decoded from {self.face.path}")
      self.n_source = n
      if spill is None:  # the probe overestimated the length: decode again
        for frame in self.decode():
          if spill is None:
            spill = SpillFile(frame.shape, self.tmpdir)
          spill.append(frame)
          if spill.count >= n:
            break
      while j < n_out:
        src = ping_pong_index(j, n)
        yield j, src, spill[src]
        j += 1
    finally:
      if spill is not None:
        spill.close()


# -----------------------------------------------------------------------------
# Input preparation (no jax needed).
# -----------------------------------------------------------------------------

@dataclasses.dataclass
class PreparedJob:
  """A validated (face, audio, outfile) triple with its audio decoded.

  Attributes:
    windows: (frames, 80, 16) float32 mel windows, one per output frame.
    mel: (80, M) the audio's whole Wav2Lip mel (models with a wider context).
    wav, sample_rate: the audio to mux into the output (native rate when AAC
      supports it, else 16 kHz).
  """
  face: FaceInput
  audio: str
  outfile: str
  frames: int
  windows: np.ndarray
  wav: np.ndarray
  sample_rate: int
  audio_seconds: float
  timer: Timer
  prepare_seconds: float
  mel: np.ndarray | None = None   # (80, M) the whole audio's Wav2Lip mel


def open_face(face: str, options: InferenceOptions) -> FaceInput:
  face = check_input(face, "face")
  if is_image(face):
    image = video_lib.read_image(face)
    h, w = image.shape[:2]
    return FaceInput(face, True, float(options.fps), w, h, 1, None, image)
  info = video_lib.probe(face)
  if not info.has_video:
    raise InferenceError(f"face file has no video stream: {face}")
  if info.num_frames == 1:
    raise InferenceError(
        f"face video has a single frame: {face}; pass a still image "
        "(.png/.jpg) with --fps, or a longer video")
  if not info.fps or not math.isfinite(info.fps) or info.fps <= 0:
    raise InferenceError(f"face video has no usable frame rate: {face}")
  resample = float(info.fps) if info.is_vfr else None
  fi = FaceInput(face, False, float(info.fps), int(info.width), int(info.height),
                  int(info.num_frames or 0), resample)
  frames = video_lib.iter_frames(face)
  try:  # decoding one frame catches files whose streams look fine but are not
    first = next(frames, None)
  finally:
    frames.close()
  if first is None:
    raise InferenceError(f"no frames could be decoded from {face}")
  if options.static:
    fi.image, fi.est_frames = first, 1
  return fi


def output_audio(path: str, wav16k: np.ndarray) -> tuple[np.ndarray, int]:
  """The audio to mux: at its native rate when AAC supports it (better than
  the 16 kHz copy the model hears), else the 16 kHz copy."""
  try:
    rate = int(video_lib.probe(path).audio_sample_rate or 0)
  except Exception:  # the 16 kHz copy decoded fine; keep it
    rate = 0
  if rate in (0, audio_lib.SAMPLE_RATE) or rate not in (
      8000, 11025, 12000, 22050, 24000, 32000, 44100, 48000):
    return wav16k, audio_lib.SAMPLE_RATE
  return audio_lib.load_audio(path, sr=rate), rate


def prepare(face: str | os.PathLike, audio: str | os.PathLike, outfile: str | os.PathLike,
            options: InferenceOptions | None = None) -> PreparedJob:
  """Checks the inputs and the output path, decodes the audio, builds the mel
  windows. Raises one-line errors for every bad input that can be detected
  without the model (see the module docstring)."""
  t0 = time.perf_counter()
  options = options or InferenceOptions()
  face, audio, outfile = os.fspath(face), os.fspath(audio), os.fspath(outfile)
  check_output_path(outfile, (face, audio))
  fin = open_face(face, options)
  audio = check_input(audio, "audio")
  timer = Timer()
  with timer("mel"):
    wav = np.asarray(audio_lib.load_audio(audio, sr=audio_lib.SAMPLE_RATE), np.float32)
    if wav.size == 0:
      raise InferenceError(f"audio is empty (0 samples): {audio}")
    peak = float(np.max(np.abs(wav)))
    if peak <= SILENCE_PEAK:
      db = 20 * math.log10(peak) if peak > 0 else -math.inf
      raise InferenceError(f"audio is silent (peak {db:.0f} dBFS): {audio}")
    n_out = audio_lib.num_frames_for_audio(wav.size, fin.fps)
    mel = audio_lib.melspectrogram(wav)
    windows = audio_lib.mel_windows(mel, n_out, fin.fps)
    out_wav, out_sr = output_audio(audio, wav)
  return PreparedJob(fin, audio, outfile, n_out, windows.astype(np.float32, copy=False),
                     out_wav, out_sr, wav.size / audio_lib.SAMPLE_RATE, timer,
                     time.perf_counter() - t0, mel)
