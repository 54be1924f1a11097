"""Streaming video IO with PyAV (ffmpeg): probe, frame iteration, H.264 writer.

Frames are BGR uint8 `(H, W, 3)` arrays (OpenCV order) everywhere. Nothing here
holds a whole video in memory: `iter_frames` decodes lazily and `VideoWriter`
encodes frame by frame.

Rotation: phone videos often store landscape pixels plus a display matrix that
says "rotate by 90 degrees to show". `probe` reports that rotation and
`iter_frames` applies it by default (like ffmpeg's autorotate and OpenCV >= 4.5),
so `VideoInfo.width/height` are the size of the frames `iter_frames` yields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fractions
import math
import os
from collections.abc import Iterable, Iterator
from typing import Any, Optional, Union

import av
import cv2
import numpy as np

PathLike = Union[str, os.PathLike]

# Output container formats by file extension.
_OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov",
                   ".mkv": "matroska"}
# How many packets probe() inspects to decide whether the frame rate varies.
_VFR_PACKETS = 100
# AVColorSpace/AVColorPrimaries/AVColorTransferCharacteristic SMPTE170M (BT.601)
# and AVColorRange MPEG (limited range), for tagging the H.264 stream.
_AVCOL_SMPTE170M = 6
_AVCOL_RANGE_MPEG = 1
# Tolerance (seconds) when comparing frame timestamps with output frame times.
_TIME_EPS = 1e-6


class VideoError(ValueError):
  """A user-facing video problem, with a one-line message."""


@dataclasses.dataclass(frozen=True)
class VideoInfo:
  """What `probe` finds out about a media file.

  Attributes:
    path: the probed path.
    width, height: size of the frames `iter_frames` yields (after rotation);
      0 when there is no video stream.
    fps: average frame rate (frames / duration); 0.0 without video.
    num_frames: frame count from the container, or counted from the packets
      when the container has none (e.g. MPEG-PS `.mpg`); 0 without video.
    duration: seconds; the video stream's duration when known, else the
      container's.
    has_video, has_audio: whether such streams exist.
    audio_sample_rate: native rate of the first audio stream (0 if none).
    is_vfr: whether the frame timestamps are irregular (variable frame rate).
    rotation: display rotation in degrees counter-clockwise (0, 90, 180, -90),
      as stored in the display matrix; `iter_frames` undoes it.
  """
  path: str
  width: int
  height: int
  fps: float
  num_frames: int
  duration: float
  has_video: bool
  has_audio: bool
  audio_sample_rate: int
  is_vfr: bool
  rotation: int


def _check_input(path: PathLike) -> str:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise VideoError(f"video file not found: {path}")
  if os.path.isdir(path):
    raise VideoError(f"expected a video file, got a directory: {path}")
  return path


def _open_input(path: str) -> Any:
  try:
    return av.open(path)
  except av.error.FFmpegError as e:
    raise VideoError(f"cannot read {path}: {_error_text(e)}") from None


def _error_text(e: Exception) -> str:
  return getattr(e, "strerror", None) or str(e)


def _normalise_rotation(degrees: float) -> int:
  """Rounds to a multiple of 90 in (-180, 180]."""
  r = int(round(degrees / 90.0)) * 90 % 360
  return r - 360 if r > 180 else r


def _rotate(img: np.ndarray, rotation: int) -> np.ndarray:
  """Undoes a counter-clockwise display rotation so the frame shows upright."""
  k = (rotation // 90) % 4
  return np.ascontiguousarray(np.rot90(img, k)) if k else img


def _timestamps_irregular(pts: list[int]) -> bool:
  """True when > 10 % of the frame intervals differ from the median by > 10 %."""
  if len(pts) < 3:
    return False
  deltas = np.diff(np.sort(np.asarray(pts, np.int64)))
  deltas = deltas[deltas > 0]
  if deltas.size < 2:
    return False
  median = float(np.median(deltas))
  off = np.abs(deltas - median) > 0.1 * median
  return float(np.mean(off)) > 0.1


def probe(path: PathLike) -> VideoInfo:
  """Reads container/stream metadata (and at most ~100 packets + 1 frame).

  Raises:
    VideoError: missing or unreadable file.
  """
  path = _check_input(path)
  with _open_input(path) as container:
    audio_streams = container.streams.audio
    audio_rate = int(audio_streams[0].rate or 0) if audio_streams else 0
    container_duration = (container.duration / av.time_base
                          if container.duration else 0.0)
    if not container.streams.video:
      if not audio_streams:
        raise VideoError(f"no video or audio stream in {path}")
      a = audio_streams[0]
      duration = (float(a.duration * a.time_base) if a.duration
                  else container_duration)
      return VideoInfo(path, 0, 0, 0.0, 0, duration, False, True, audio_rate,
                       False, 0)
    stream = container.streams.video[0]
    width = stream.codec_context.width
    height = stream.codec_context.height
    duration = (float(stream.duration * stream.time_base) if stream.duration
                else container_duration)
    num_frames = int(stream.frames or 0)
    # Frame timestamps: the first packets are enough to tell VFR; the whole
    # file is demuxed (not decoded) only when the container has no frame count.
    pts = []
    counted = 0
    try:
      for packet in container.demux(stream):
        if packet.size == 0:
          continue  # The flush packet.
        counted += 1
        if packet.pts is not None and len(pts) < _VFR_PACKETS:
          pts.append(packet.pts)
        if num_frames and len(pts) >= _VFR_PACKETS:
          break
    except av.error.FFmpegError as e:
      raise VideoError(f"cannot read {path}: {_error_text(e)}") from None
    if not num_frames:
      num_frames = counted
    if stream.average_rate:
      fps = float(stream.average_rate)
    elif num_frames and duration > 0:
      fps = num_frames / duration
    else:
      fps = float(stream.guessed_rate or 0.0)
    guessed = float(stream.guessed_rate or 0.0)
    is_vfr = _timestamps_irregular(pts) or (
        fps > 0 and guessed > 0 and abs(guessed - fps) > 0.05 * fps)
    rotation = _first_frame_rotation(container, stream)
  if rotation in (90, -90):
    width, height = height, width
  return VideoInfo(path, int(width), int(height), fps, num_frames, duration,
                   True, bool(audio_streams), audio_rate, is_vfr, rotation)


def _first_frame_rotation(container: Any, stream: Any) -> int:
  """Display rotation of the first decodable frame (0 if none)."""
  try:
    container.seek(0, stream=stream)
    for frame in container.decode(stream):
      return _normalise_rotation(frame.rotation or 0)
  except av.error.FFmpegError:
    pass
  return 0


def iter_frames(path: PathLike, fps: Optional[float] = None,
                autorotate: bool = True) -> Iterator[np.ndarray]:
  """Yields the frames of a video as BGR uint8 `(H, W, 3)` arrays, streaming.

  Args:
    path: a video file.
    fps: when given, resample to this constant rate by timestamp: output frame
      k (time k/fps from the first frame) is the latest decoded frame whose
      timestamp is <= k/fps. Frames are dropped or repeated (as separate
      arrays, safe to modify) as needed, which
      also turns a variable-frame-rate video into a constant-rate one. The
      output covers the video's duration (last timestamp + last frame length).
    autorotate: apply the display rotation (see module docstring).

  Raises:
    VideoError: missing/unreadable file, no video stream, decoding error.
  """
  path = _check_input(path)
  if fps is not None and not fps > 0:
    raise VideoError(f"fps must be positive, got {fps}")
  with _open_input(path) as container:
    if not container.streams.video:
      raise VideoError(f"no video stream in {path}")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    nominal = float(stream.average_rate or stream.guessed_rate or 25.0)
    frames = container.decode(stream)
    first_time = None
    prev_img = None
    prev_time = 0.0
    prev_len = 1.0 / nominal
    next_k = 0  # Next output frame index (resampling mode).
    prev_first_k = 0  # Repeats of a frame are yielded as copies.
    try:
      for frame in frames:
        # PyAV 18.1.1 returns a view of the frame's padded lines: copy it
        # into a C-contiguous array, as cv2 and the callers' buffers expect.
        img = np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
        if autorotate and frame.rotation:
          img = _rotate(img, _normalise_rotation(frame.rotation))
        if fps is None:
          yield img
          continue
        t = frame.time
        if t is None:  # No timestamps: assume the nominal rate.
          t = (0.0 if prev_img is None else prev_time + 1.0 / nominal)
        if first_time is None:
          first_time = t
        t -= first_time
        if prev_img is not None:
          if t <= prev_time:  # Out-of-order or duplicate timestamp.
            continue
          prev_len = t - prev_time
          while next_k / fps < t - _TIME_EPS:
            yield prev_img if next_k == prev_first_k else prev_img.copy()
            next_k += 1
        prev_img, prev_time, prev_first_k = img, t, next_k
    except av.error.FFmpegError as e:
      raise VideoError(f"cannot decode {path}: {_error_text(e)}") from None
    if fps is not None and prev_img is not None:
      end = prev_time + prev_len
      while next_k / fps < end - _TIME_EPS:
        yield prev_img if next_k == prev_first_k else prev_img.copy()
        next_k += 1


def read_image(path: PathLike) -> np.ndarray:
  """Reads an image file as BGR uint8 `(H, W, 3)` (grey/alpha converted).

  Raises:
    VideoError: missing file or not a decodable image.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise VideoError(f"image file not found: {path}")
  img = cv2.imread(path, cv2.IMREAD_COLOR)
  if img is None:
    raise VideoError(f"cannot decode image: {path}")
  return img


def _to_yuv420p(frame: np.ndarray) -> np.ndarray:
  """BGR uint8 `(H, W, 3)` (even H, W) -> planar I420 `(H * 3 // 2, W)`.

  OpenCV's converter is exact BT.601 limited range; swscale's default
  bgr24 -> yuv420p path (what PyAV's encoder would use) is off by up to ~5
  levels (e.g. grey 128 comes back as (123, 126, 124)).
  """
  return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2YUV_I420)


def _as_rate(fps: float) -> fractions.Fraction:
  """29.97... -> 30000/1001, 25.0 -> 25."""
  return fractions.Fraction(fps).limit_denominator(1001)


class VideoWriter:
  """Encodes BGR uint8 frames (+ optional mono audio) to H.264/AAC, atomically.

  Output goes to `.<name>.tmp-<pid><ext>` in the destination folder and is
  renamed to `path` only when the writer closes without an exception, so a
  crash never leaves a partial file; on an exception the temp file is deleted.

  H.264 yuv420p needs even dimensions: an odd width or height is padded by one
  pixel, repeating the last column/row (no content is lost); `width` and
  `height` hold the encoded size.

  The audio (the whole waveform, whatever its length) is AAC-encoded at its own
  rate when AAC supports it (8-96 kHz standard rates), else resampled to 16 kHz.
  It is interleaved with the video as frames arrive.

  Usage:
    with VideoWriter("out.mp4", 25, w, h, audio=(wav, 16000)) as writer:
      for frame in frames:
        writer.write(frame)

  Live output (`fragmented=True`, for `infer.py --stream`): a fragmented mp4
  (a fragment per keyframe, one keyframe a second, x264 without look-ahead
  or B-frames), and the audio arrives with the frames instead of up front:
  `audio=(None, rate)` and `write(frame, audio=samples)`.
  """

  def __init__(self, path: PathLike, fps: float, width: int, height: int,
               audio: Optional[tuple[Optional[np.ndarray], int]] = None,
               crf: int = 18, preset: str = "veryfast", fragmented: bool = False):
    self.path = os.path.abspath(os.fspath(path))
    if not fps > 0:
      raise VideoError(f"fps must be positive, got {fps}")
    if width <= 0 or height <= 0:
      raise VideoError(f"invalid frame size {width}x{height}")
    folder, name = os.path.split(self.path)
    ext = os.path.splitext(name)[1].lower()
    if ext not in _OUTPUT_FORMATS:
      raise VideoError(f"unsupported output extension {ext or '(none)'!r} "
                       f"for {path}; use one of {sorted(_OUTPUT_FORMATS)}")
    if not os.path.isdir(folder):
      raise VideoError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK | os.X_OK):
      raise VideoError(f"output folder is not writable: {folder}")
    self.fps = float(fps)
    self.input_width, self.input_height = int(width), int(height)
    self.width = self.input_width + self.input_width % 2
    self.height = self.input_height + self.input_height % 2
    self.num_frames = 0
    self._tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}{ext}")
    self._closed = False
    self._live_audio = audio is not None and audio[0] is None
    if fragmented and ext == ".mkv":
      raise VideoError(f"a fragmented output must be .mp4, .m4v or .mov, not {path}")

    wav, sr = (None, int(audio[1])) if self._live_audio else self._prepare_audio(audio)
    movflags = "+frag_keyframe+empty_moov+default_base_moof" if fragmented else "+faststart"
    try:
      # PyAV only opens the file at the first packet: create it now so an
      # unwritable destination fails here, not after minutes of inference.
      with open(self._tmp, "wb"):
        pass
      self._container = av.open(
          self._tmp, "w", format=_OUTPUT_FORMATS[ext],
          options={"movflags": movflags} if ext != ".mkv" else {})
    except (av.error.FFmpegError, OSError) as e:
      with contextlib.suppress(OSError):
        os.remove(self._tmp)
      raise VideoError(
          f"cannot create output in {folder}: {_error_text(e)}") from None
    try:
      rate = _as_rate(self.fps)
      x264 = {"crf": str(crf), "preset": preset}
      if fragmented:  # every frame out at once; a fragment a second
        x264.update(tune="zerolatency", g=str(max(1, round(self.fps))))
      self._vstream = self._container.add_stream("libx264", rate=rate, options=x264)
      self._vstream.width = self.width
      self._vstream.height = self.height
      self._vstream.pix_fmt = "yuv420p"
      # Tag BT.601 limited range, which is what _to_yuv420p produces.
      ctx = self._vstream.codec_context
      ctx.colorspace = ctx.color_primaries = ctx.color_trc = _AVCOL_SMPTE170M
      ctx.color_range = _AVCOL_RANGE_MPEG
      self._vstream.codec_context.time_base = 1 / rate
      self._astream = None
      self._wav = wav
      self._sr = sr
      self._audio_pos = 0
      if wav is not None or self._live_audio:
        self._astream = self._container.add_stream("aac", rate=sr)
        self._astream.layout = "mono"
        self._astream.codec_context.bit_rate = 64000
        self._astream.codec_context.time_base = fractions.Fraction(1, sr)
    except Exception:
      self._discard()
      raise

  @staticmethod
  def _prepare_audio(
      audio: Optional[tuple[np.ndarray, int]],
  ) -> tuple[Optional[np.ndarray], int]:
    if audio is None:
      return None, 0
    wav, sr = audio
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1 or wav.size == 0:
      raise VideoError(f"audio must be a non-empty mono (n,) waveform, "
                       f"got shape {wav.shape}")
    if not np.all(np.isfinite(wav)):
      raise VideoError("audio contains NaN or infinite samples")
    sr = int(sr)
    if sr not in av.codec.Codec("aac", "w").audio_rates:
      import librosa  # pylint: disable=g-import-not-at-top
      wav = librosa.resample(wav, orig_sr=sr, target_sr=16000,
                             res_type="soxr_hq")
      sr = 16000
    return np.clip(wav, -1.0, 1.0), sr

  def _mux(self, packets) -> None:
    self._container.mux(packets)

  def _write_audio_until(self, num_samples: Optional[int]) -> None:
    """Encodes audio up to sample `num_samples` (None: all of it)."""
    if self._astream is None:
      return
    if self._live_audio:
      return
    end = len(self._wav) if num_samples is None else min(num_samples,
                                                         len(self._wav))
    if end > self._audio_pos:
      self._encode_audio(self._wav[self._audio_pos:end])

  def _encode_audio(self, chunk: np.ndarray) -> None:
    """Encodes `(n,)` float32 mono samples that follow those already written."""
    frame = av.AudioFrame.from_ndarray(
        np.clip(np.asarray(chunk, np.float32), -1.0, 1.0)[None, :], format="fltp",
        layout="mono")
    frame.sample_rate = self._sr
    frame.pts = self._audio_pos
    frame.time_base = fractions.Fraction(1, self._sr)
    self._audio_pos += len(chunk)
    self._mux(self._astream.encode(frame))

  def write(self, frame: np.ndarray, audio: Optional[np.ndarray] = None) -> None:
    """Encodes one BGR uint8 `(height, width, 3)` frame (the constructor size)
    and, for live audio (`audio=(None, rate)`), the `(n,)` float32 samples
    that play with it."""
    if self._closed:
      raise VideoError("VideoWriter is closed")
    frame = np.asarray(frame)
    expected = (self.input_height, self.input_width, 3)
    if frame.shape != expected or frame.dtype != np.uint8:
      raise VideoError(f"expected a uint8 BGR frame of shape {expected}, "
                       f"got {frame.dtype} {frame.shape}")
    if self.width != self.input_width or self.height != self.input_height:
      frame = np.pad(frame, ((0, self.height - self.input_height),
                             (0, self.width - self.input_width), (0, 0)),
                     mode="edge")
    vf = av.VideoFrame.from_ndarray(_to_yuv420p(frame), format="yuv420p")
    vf.pts = self.num_frames
    self.num_frames += 1
    self._mux(self._vstream.encode(vf))
    if self._live_audio:
      if audio is not None and len(audio):
        self._encode_audio(audio)
    elif self._astream is not None:
      self._write_audio_until(math.ceil(self.num_frames / self.fps * self._sr))

  def close(self) -> None:
    """Flushes the encoders and moves the file into place."""
    if self._closed:
      return
    try:
      if self.num_frames == 0:
        raise VideoError(f"no frames were written to {self.path}")
      self._write_audio_until(None)
      self._mux(self._vstream.encode(None))
      if self._astream is not None:
        self._mux(self._astream.encode(None))
      self._container.close()
      self._closed = True
      os.replace(self._tmp, self.path)
    except BaseException:
      self._discard()
      raise

  def abort(self) -> None:
    """Stops without producing an output file."""
    self._discard()

  def _discard(self) -> None:
    if not self._closed:
      self._closed = True
      with contextlib.suppress(Exception):
        self._container.close()
    with contextlib.suppress(FileNotFoundError):
      os.remove(self._tmp)

  def __enter__(self) -> VideoWriter:
    return self

  def __exit__(self, exc_type, exc, tb) -> None:
    if exc_type is None:
      self.close()
    else:
      self._discard()


def write_video(path: PathLike, frames: Iterable[np.ndarray], fps: float,
                audio: Optional[tuple[np.ndarray, int]] = None) -> int:
  """Writes BGR uint8 frames (all of one size) to `path`; returns the count.

  The size is taken from the first frame. See `VideoWriter`.

  Raises:
    VideoError: no frames, bad frames, unwritable destination.
  """
  it = iter(frames)
  first = next(it, None)
  if first is None:
    raise VideoError(f"no frames to write to {os.fspath(path)}")
  first = np.asarray(first)
  if first.ndim != 3 or first.shape[2] != 3:
    raise VideoError(f"expected BGR frames (H, W, 3), got {first.shape}")
  h, w = first.shape[:2]
  with VideoWriter(path, fps, w, h, audio=audio) as writer:
    writer.write(first)
    for frame in it:
      writer.write(frame)
  return writer.num_frames
