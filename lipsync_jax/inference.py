"""Inference: a face video or photo plus speech -> a lip-synced mp4.

    from lipsync_jax.inference import LipSyncer
    syncer = LipSyncer.from_checkpoint("runs/wav2lip/model", batch_size=64)
    report = syncer.run("face.mp4", "speech.wav", "out.mp4")
    print(report.frames, report.frames_without_face, report.timings)

One `LipSyncer` holds one jit-compiled generator and reuses it for every
`run` (batch mode compiles once for hundreds of clips).

Pipeline of one `run`:

1. Audio: `audio.load_audio` -> mel -> one (80, 16) window per output frame,
   frame i's window starting at mel column int(80 i / fps) (the alignment
   convention shared with training). The output has
   `audio.num_frames_for_audio` = round(audio_seconds * fps) frames, i.e. it
   is as long as the audio.
2. Faces: a box track per source frame, from the cache when this video
   (sha256 of its bytes) was seen before with the same detector settings,
   otherwise from one streaming pass of batched detection (decode thread ->
   detector), then `face_detection.select_track`, saved atomically to the
   cache (default ~/.cache/lipsync_jax/boxes/<sha256>.npz; the detection
   pass holds only boxes, never frames). Detection misses of <= `max_gap`
   frames between two detections are bridged by interpolation; boxes are
   padded (`pads`) and smoothed over runs of frames with a face. Detection
   must see the whole video before generation starts (the track is chosen
   globally), so it is the one stage not overlapped with generation; reruns
   with new audio skip it.
3. Generation pass, three stages overlapped through bounded queues:
   decode + crop (thread) -> jit generator on fixed-size batches, the last one
   padded, sharded over the devices when there are several (thread) ->
   paste + encode (main thread). Only a few batches of frames are in flight,
   so memory does not grow with the length of the input.
   When the audio is longer than the video the video plays forward, then
   backward, then forward... (ping-pong). Those revisited source frames are
   spilled to a raw temporary file (not RAM) on their first decode and read
   back by index, so memory stays flat for long audio too.
4. Frames where the track has no face are written unchanged and counted in
   `RunReport.frames_without_face`.
5. `video.VideoWriter` encodes H.264 + AAC to a temporary name and renames it
   on success, so a failed or killed run leaves no partial output.

Bad input raises an `InferenceError` (a ValueError) or the IO modules'
`AudioError`/`VideoError`/`CheckpointError` with a one-line message; `infer.py`
prints it and exits non-zero. `prepare` does every input check that does not
need the model (paths, streams, decodability, silence, frame count) without
importing jax, so the CLI fails fast.

Decisions on inputs the issue calls bad:
  * silent audio (peak <= -60 dBFS) is an error: there is nothing to sync to;
  * a 1-frame video is an error that points to still-image mode (an image file
    plus `--fps`), because its frame rate and duration are meaningless;
  * a still image in which no face is found is an error; in a video, frames
    without a face are passed through and counted instead.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import pathlib
import queue
import tempfile
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import cv2
import numpy as np

from lipsync_jax import audio as audio_lib
from lipsync_jax import blending
from lipsync_jax import video as video_lib

# jax/flax/orbax are imported where the model is built, so that bad input is
# reported (by `prepare`) before paying for those imports.

FACE_SIZE = 96
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
# Peak level at or below which an audio file counts as silent (-60 dBFS).
SILENCE_PEAK = 10 ** (-60 / 20)
STAGES = ("decode", "detect", "mel", "generate", "paste", "encode")
CACHE_FORMAT = 1


class InferenceError(ValueError):
  """Bad input for inference; the message is one line meant for users."""


class InputNotFoundError(InferenceError, FileNotFoundError):
  """An input file does not exist."""


@dataclasses.dataclass(frozen=True)
class InferenceOptions:
  """Options of `LipSyncer`; the CLI flags map onto these one to one.

  Attributes:
    pads: (top, bottom, left, right) pixels added to every detected box.
    resize_factor: integer factor by which frames are downscaled first (the
      output has the reduced resolution, as upstream).
    nosmooth: do not smooth the box track over time.
    smooth_window: frames averaged by the smoothing.
    box: fixed (top, bottom, left, right) face box for every frame; skips
      detection (upstream's `--box`).
    fps: frame rate of the output for a still-image face.
    batch_size: generator batch (rounded up to a multiple of the device count).
    static: use only the first frame of a face video.
    hard_paste: paste the whole box without feathering (upstream's paste).
    color_match: match colours at the seam of the feathered paste.
    detector: `face_detection.create_detector` name.
    detect_batch_size: frames per detector call.
    max_gap: detection misses of up to this many frames between two detected
      faces are bridged by interpolating the box (see `fill_gaps`).
    box_cache: cache box tracks per input video.
    cache_dir: where to cache them; None -> $LIPSYNC_CACHE_DIR/boxes or
      ~/.cache/lipsync_jax/boxes.
    queue_size: batches in flight between pipeline stages.
    crf: H.264 quality passed to the writer when it supports it.
  """
  pads: tuple[int, int, int, int] = (0, 10, 0, 0)
  resize_factor: int = 1
  nosmooth: bool = False
  smooth_window: int = 5
  box: tuple[int, int, int, int] | None = None
  fps: float = 25.0
  batch_size: int = 64
  static: bool = False
  hard_paste: bool = False
  color_match: bool = True
  detector: str = "default"
  detect_batch_size: int = 16
  max_gap: int = 5
  box_cache: bool = True
  cache_dir: str | None = None
  queue_size: int = 3

  def validate(self) -> None:
    if len(self.pads) != 4:
      raise InferenceError(f"pads must be 4 integers (top bottom left right), got {self.pads}")
    if int(self.resize_factor) < 1:
      raise InferenceError(f"resize factor must be >= 1, got {self.resize_factor}")
    if self.batch_size < 1:
      raise InferenceError(f"batch size must be >= 1, got {self.batch_size}")
    if not self.fps > 0:
      raise InferenceError(f"fps must be > 0, got {self.fps}")
    if self.box is not None:
      if len(self.box) != 4:
        raise InferenceError(f"box must be 4 integers (top bottom left right), got {self.box}")
      top, bottom, left, right = self.box
      if bottom <= top or right <= left:
        raise InferenceError(f"box must have top < bottom and left < right, got {self.box}")


@dataclasses.dataclass
class RunReport:
  """What one `LipSyncer.run` did.

  Attributes:
    frames: frames written (as many as the audio lasts at `fps`).
    source_frames: frames of the face input (1 for a photo or `static`).
    frames_without_face: output frames passed through unchanged.
    timings: seconds per stage (`STAGES`) plus "total"; stages overlap, so
      they add up to more than "total".
  """
  face: str
  audio: str
  outfile: str
  fps: float
  frames: int
  source_frames: int
  frames_without_face: int
  audio_seconds: float
  ping_pong: bool
  detection_cached: bool
  timings: dict[str, float]
  notes: list[str] = dataclasses.field(default_factory=list)

  @property
  def realtime_factor(self) -> float:
    """Output seconds per wall-clock second."""
    return self.frames / self.fps / max(self.timings.get("total", 0.0), 1e-9)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["end_to_end_fps"] = self.frames / max(self.timings.get("total", 0.0), 1e-9)
    return d


# -----------------------------------------------------------------------------
# Small pure helpers.
# -----------------------------------------------------------------------------

def ping_pong_index(i: int, n: int) -> int:
  """Source frame for output frame `i` of a video of `n` frames played back
  and forth: 0 1 .. n-1 n-2 .. 1 0 1 ... (no repeated end frames)."""
  if n <= 1:
    return 0
  period = 2 * n - 2
  k = i % period
  return k if k < n else period - k


def default_cache_dir() -> pathlib.Path:
  root = os.environ.get("LIPSYNC_CACHE_DIR")
  if root:
    return pathlib.Path(root) / "boxes"
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(xdg) / "lipsync_jax" / "boxes"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def smooth_track(boxes: np.ndarray, found: np.ndarray, window: int) -> np.ndarray:
  """Smooths (T, 4) boxes over each run of consecutive found frames."""
  from lipsync_jax import face_detection
  out = boxes.astype(np.float64).copy()
  t = 0
  n = len(found)
  while t < n:
    if not found[t]:
      t += 1
      continue
    end = t
    while end < n and found[end]:
      end += 1
    out[t:end] = face_detection.smooth_boxes(out[t:end], window=window)
    t = end
  return out


def fill_gaps(boxes: np.ndarray, found: np.ndarray, max_gap: int
              ) -> tuple[np.ndarray, np.ndarray]:
  """Bridges short detection misses inside a face track.

  A run of at most `max_gap` frames without a detection *between* two found
  frames is a miss of the detector, not an absent face: those frames get boxes
  interpolated linearly from the neighbours. Longer gaps and the frames before
  the first / after the last detection stay faceless (passed through).

  Args:
    boxes: (T, 4) x1, y1, x2, y2; rows of not-found frames are ignored.
    found: (T,) bool.
  Returns:
    boxes (T, 4) float64 and usable (T,) bool, usable = found or bridged.
  """
  boxes = np.asarray(boxes, np.float64).copy()
  found = np.asarray(found, bool)
  usable = found.copy()
  idx = np.flatnonzero(found)
  for a, b in zip(idx[:-1], idx[1:]):
    gap = b - a - 1
    if 0 < gap <= max_gap:
      w = (np.arange(1, gap + 1) / (gap + 1))[:, None]
      boxes[a + 1:b] = (1 - w) * boxes[a] + w * boxes[b]
      usable[a + 1:b] = True
  return boxes, usable


def _is_image(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def _check_input(path: str, what: str) -> str:
  path = os.fspath(path)
  if not os.path.exists(path):
    raise InputNotFoundError(f"{what} file not found: {path}")
  if os.path.isdir(path):
    raise InferenceError(f"{what} path is a directory, not a file: {path}")
  if os.path.getsize(path) == 0:
    raise InferenceError(f"{what} file is empty (0 bytes): {path}")
  return path


def check_output_path(outfile: str, inputs: Sequence[str] = ()) -> str:
  """Fails early (before any work) when `outfile` cannot be written."""
  outfile = os.fspath(outfile)
  parent = os.path.dirname(os.path.abspath(outfile))
  if os.path.isdir(outfile):
    raise InferenceError(f"output path is a directory: {outfile}")
  if not os.path.isdir(parent):
    raise InferenceError(f"output folder does not exist: {parent}")
  if not os.access(parent, os.W_OK | os.X_OK):
    raise InferenceError(f"output folder is not writable: {parent}")
  if os.path.exists(outfile) and not os.access(outfile, os.W_OK):
    raise InferenceError(f"output file exists and is not writable: {outfile}")
  for p in inputs:
    if os.path.exists(p) and os.path.abspath(p) == os.path.abspath(outfile):
      raise InferenceError(f"output would overwrite an input: {outfile}")
  return outfile


class _Timer:
  """Thread-safe per-stage wall-clock accumulator."""

  def __init__(self):
    self.totals = {s: 0.0 for s in STAGES}
    self._lock = threading.Lock()

  @contextlib.contextmanager
  def __call__(self, stage: str):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      dt = time.perf_counter() - t0
      with self._lock:
        self.totals[stage] += dt


@contextlib.contextmanager
def _quiet_native_stderr():
  """Silences C-level writes to fd 2 (native libraries' log lines)."""
  import sys
  try:
    fd = sys.stderr.fileno()
  except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured)
    yield
    return
  sys.stderr.flush()
  saved = os.dup(fd)
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), fd)
      yield
  finally:
    os.dup2(saved, fd)
    os.close(saved)


class _Stop(Exception):
  """Raised inside a pipeline thread when another stage failed."""


class _Pipe:
  """Bounded queue whose put/get give up when the pipeline is aborted."""

  def __init__(self, size: int, abort: threading.Event):
    self.q: queue.Queue = queue.Queue(maxsize=size)
    self.abort = abort

  def put(self, item) -> None:
    while True:
      if self.abort.is_set():
        raise _Stop()
      try:
        self.q.put(item, timeout=0.1)
        return
      except queue.Full:
        continue

  def get(self):
    while True:
      if self.abort.is_set():
        raise _Stop()
      try:
        return self.q.get(timeout=0.1)
      except queue.Empty:
        continue


_END = object()


class _Thread(threading.Thread):
  """Runs `fn`; records its exception and aborts the pipeline on failure."""

  def __init__(self, fn: Callable[[], None], abort: threading.Event, name: str):
    super().__init__(name=name, daemon=True)
    self.fn = fn
    self.abort = abort
    self.error: BaseException | None = None

  def run(self):
    try:
      self.fn()
    except _Stop:
      pass
    except BaseException as e:  # re-raised by the main thread
      self.error = e
      self.abort.set()


# -----------------------------------------------------------------------------
# Face source: frames by output index (streaming, ping-pong via a spill file).
# -----------------------------------------------------------------------------

@dataclasses.dataclass
class _FaceInput:
  path: str
  is_image: bool
  fps: float
  width: int
  height: int
  est_frames: int          # probe's estimate (exact for images/static)
  resample_fps: float | None
  image: np.ndarray | None = None  # the single frame of an image/static input


class _SpillFile:
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


def _resize_frame(frame: np.ndarray, factor: int) -> np.ndarray:
  if factor == 1:
    return frame
  h, w = frame.shape[:2]
  return cv2.resize(frame, (max(2, (w // factor) // 2 * 2), max(2, (h // factor) // 2 * 2)),
                    interpolation=cv2.INTER_AREA)


class _FrameSource:
  """Yields (output index, source index, frame) for `n_out` output frames.

  Decodes the face video once, forward, in a streaming way. When more output
  frames than source frames are needed (ping-pong), every decoded frame is
  also appended to a spill file and later frames are read back from it.
  """

  def __init__(self, face: _FaceInput, resize_factor: int, n_source: int | None,
               tmpdir: str):
    self.face = face
    self.resize_factor = resize_factor
    self.n_source = n_source  # exact, when known (from detection or cache)
    self.tmpdir = tmpdir

  def _decode(self) -> Iterator[np.ndarray]:
    if self.face.image is not None:
      yield _resize_frame(self.face.image, self.resize_factor)
      return
    for frame in video_lib.iter_frames(self.face.path, fps=self.face.resample_fps):
      yield _resize_frame(frame, self.resize_factor)

  def frames(self, n_out: int) -> Iterator[tuple[int, int, np.ndarray]]:
    if self.face.image is not None:
      frame = next(self._decode())
      for j in range(n_out):
        yield j, 0, frame
      self.n_source = 1
      return
    estimate = self.n_source or self.face.est_frames
    spill_needed = n_out > estimate - 2  # margin: probe counts can be off by one
    spill: _SpillFile | None = None
    j = 0
    try:
      for frame in self._decode():
        if j >= n_out:
          break
        if spill_needed:
          if spill is None:
            spill = _SpillFile(frame.shape, self.tmpdir)
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
        for frame in self._decode():
          if spill is None:
            spill = _SpillFile(frame.shape, self.tmpdir)
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
    wav, sample_rate: the audio to mux into the output (native rate when AAC
      supports it, else 16 kHz).
  """
  face: _FaceInput
  audio: str
  outfile: str
  frames: int
  windows: np.ndarray
  wav: np.ndarray
  sample_rate: int
  audio_seconds: float
  timer: _Timer
  prepare_seconds: float


def _open_face(face: str, options: InferenceOptions) -> _FaceInput:
  face = _check_input(face, "face")
  if _is_image(face):
    image = video_lib.read_image(face)
    h, w = image.shape[:2]
    return _FaceInput(face, True, float(options.fps), w, h, 1, None, image)
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
  fi = _FaceInput(face, False, float(info.fps), int(info.width), int(info.height),
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


def _output_audio(path: str, wav16k: np.ndarray) -> tuple[np.ndarray, int]:
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
  fin = _open_face(face, options)
  audio = _check_input(audio, "audio")
  timer = _Timer()
  with timer("mel"):
    wav = np.asarray(audio_lib.load_audio(audio, sr=audio_lib.SAMPLE_RATE), np.float32)
    if wav.size == 0:
      raise InferenceError(f"audio is empty (0 samples): {audio}")
    peak = float(np.max(np.abs(wav)))
    if peak <= SILENCE_PEAK:
      db = 20 * math.log10(peak) if peak > 0 else -math.inf
      raise InferenceError(f"audio is silent (peak {db:.0f} dBFS): {audio}")
    n_out = audio_lib.num_frames_for_audio(wav.size, fin.fps)
    windows = audio_lib.mel_windows(audio_lib.melspectrogram(wav), n_out, fin.fps)
    out_wav, out_sr = _output_audio(audio, wav)
  return PreparedJob(fin, audio, outfile, n_out, windows.astype(np.float32, copy=False),
                     out_wav, out_sr, wav.size / audio_lib.SAMPLE_RATE, timer,
                     time.perf_counter() - t0)


# -----------------------------------------------------------------------------
# LipSyncer.
# -----------------------------------------------------------------------------

class LipSyncer:
  """A compiled generator plus the inference pipeline around it.

  Args:
    module: a generator `flax.linen.Module` (contract: audio (N, 80, 16, 1),
      faces (N, 96, 96, 6) BGR [0, 1] -> (N, 96, 96, 3) sigmoid).
    variables: its {"params", "batch_stats"}.
    arch: registry name, for reports.
    options: `InferenceOptions`; keyword arguments override its fields.
  """

  def __init__(self, module, variables, arch: str = "wav2lip",
               options: InferenceOptions | None = None, **overrides):
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    options = dataclasses.replace(options or InferenceOptions(), **overrides)
    options.validate()
    self.options = options
    self.arch = arch
    self.module = module
    self._detector = None
    self._stats = {"compilations": 0}  # shared with `with_options` copies

    # Data parallel over the local devices: the batch is split along its
    # first axis, the weights are replicated.
    devices = np.array(jax.local_devices())
    self.num_devices = len(devices)
    from lipsync_jax import models  # pylint: disable=import-outside-toplevel
    unit = self.num_devices * models.frames_per_call(module)
    self.batch_size = int(math.ceil(options.batch_size / unit)) * unit
    mesh = Mesh(devices, ("data",))
    self.data_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    self.variables = jax.device_put(
        {k: v for k, v in variables.items() if k in ("params", "batch_stats")}, replicated)

    stats = self._stats

    def generate(variables, mel, crops):
      """(N, 80, 16, 1) f32 mels, (N, 96, 96, 3) u8 crops -> (N, 96, 96, 3) u8."""
      stats["compilations"] += 1  # runs at trace time only: counts compilations
      crops = crops.astype(jnp.float32) / 255.0
      masked = crops.at[:, FACE_SIZE // 2:].set(0.0)
      faces = jnp.concatenate([masked, crops], axis=-1)
      out = models.generate_frames(module, variables, mel, faces)
      return jnp.clip(jnp.round(out * 255.0), 0, 255).astype(jnp.uint8)

    self.generate_batch = jax.jit(
        generate, in_shardings=(replicated, self.data_sharding, self.data_sharding),
        out_shardings=self.data_sharding)

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, options: InferenceOptions | None = None,
                      **overrides) -> "LipSyncer":
    """Loads a generator checkpoint (model dir, training workdir or upstream
    `.pth`) with `checkpoint.load_model`; refuses other architectures."""
    from lipsync_jax import checkpoint
    from lipsync_jax.models import ALL_GENERATORS
    path = os.fspath(path)
    if not os.path.exists(path):
      raise InputNotFoundError(f"checkpoint not found: {path}")
    loaded = checkpoint.load_model(path, expected_arch=ALL_GENERATORS)
    return cls(loaded.module, loaded.variables, loaded.arch, options, **overrides)

  @property
  def compilations(self) -> int:
    """How many times the generator was traced (= compiled) so far."""
    return self._stats["compilations"]

  def with_options(self, **overrides) -> "LipSyncer":
    """A LipSyncer with other options that shares this one's compiled
    generator (unless the batch size changes, which needs a new compile)."""
    options = dataclasses.replace(self.options, **overrides)
    options.validate()
    if options.batch_size != self.options.batch_size:
      return LipSyncer(self.module, self.variables, self.arch, options)
    other = copy.copy(self)
    other.options = options
    if options.detector != self.options.detector:
      other._detector = None
    return other

  @property
  def detector(self):
    if self._detector is None:
      from lipsync_jax import face_detection
      with _quiet_native_stderr():  # TFLite prints an INFO line when created
        self._detector = face_detection.create_detector(self.options.detector)
    return self._detector

  def warmup(self) -> None:
    """Compiles the generator for the fixed batch shape."""
    import jax
    mel = np.zeros((self.batch_size, 80, 16, 1), np.float32)
    crops = np.zeros((self.batch_size, FACE_SIZE, FACE_SIZE, 3), np.uint8)
    jax.block_until_ready(self.generate_batch(self.variables, mel, crops))

  # --- face track -----------------------------------------------------------

  def _cache_path(self, face: _FaceInput) -> pathlib.Path | None:
    opts = self.options
    if not opts.box_cache or face.image is not None:
      return None
    root = pathlib.Path(opts.cache_dir) if opts.cache_dir else default_cache_dir()
    key = json.dumps({"format": CACHE_FORMAT, "file": file_sha256(face.path),
                      "detector": opts.detector, "resize_factor": int(opts.resize_factor),
                      "resample_fps": face.resample_fps}, sort_keys=True)
    return root / (hashlib.sha256(key.encode()).hexdigest() + ".npz")

  @staticmethod
  def _read_cache(path: pathlib.Path | None):
    if path is None or not path.is_file():
      return None
    try:
      with np.load(path) as z:
        return z["boxes"].astype(np.float64), z["found"].astype(bool)
    except Exception:  # a broken cache entry is recomputed, never fatal
      return None

  @staticmethod
  def _write_cache(path: pathlib.Path | None, boxes: np.ndarray, found: np.ndarray) -> None:
    """Atomic write (temp file in the same folder + rename); failures ignored."""
    if path is None:
      return
    tmp = None
    try:
      path.parent.mkdir(parents=True, exist_ok=True)
      fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".tmp", dir=path.parent)
      with os.fdopen(fd, "wb") as f:
        np.savez(f, boxes=boxes.astype(np.float32), found=found)
      os.replace(tmp, path)
    except OSError:
      if tmp is not None:
        with contextlib.suppress(OSError):
          os.unlink(tmp)

  def _detect_all(self, face: _FaceInput, timer: _Timer) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Raw track: boxes (N, 4) float (x1, y1, x2, y2), found (N,), notes."""
    from lipsync_jax import face_detection
    opts = self.options
    detector = self.detector
    if face.image is not None:
      frame = _resize_frame(face.image, opts.resize_factor)
      with timer("detect"):
        per_frame = detector.detect([frame])
      boxes, found, notes = face_detection.select_track(per_frame)
      return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(found, bool), list(notes)

    abort = threading.Event()
    pipe = _Pipe(opts.queue_size, abort)
    bs = max(1, opts.detect_batch_size)

    def produce():
      batch: list[np.ndarray] = []
      it = video_lib.iter_frames(face.path, fps=face.resample_fps)
      while True:
        with timer("decode"):
          frame = next(it, None)
          if frame is not None:
            frame = _resize_frame(frame, opts.resize_factor)
        if frame is None:
          break
        batch.append(frame)
        if len(batch) == bs:
          pipe.put(batch)
          batch = []
      if batch:
        pipe.put(batch)
      pipe.put(_END)

    thread = _Thread(produce, abort, "lipsync-detect-decode")
    thread.start()
    per_frame: list = []
    try:
      while (batch := pipe.get()) is not _END:
        with timer("detect"):
          per_frame.extend(detector.detect(batch))
    except _Stop:
      pass
    finally:
      abort.set()  # stops the decoder when detection failed
      thread.join()
    if thread.error is not None:
      raise thread.error
    if not per_frame:
      raise InferenceError(f"no frames could be decoded from {face.path}")
    boxes, found, notes = face_detection.select_track(per_frame)
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(found, bool), list(notes)

  def _final_boxes(self, boxes: np.ndarray, found: np.ndarray,
                   frame_shape: tuple[int, int]) -> np.ndarray:
    """Pads, smooths and clips a raw track; rows of not-found frames are junk."""
    from lipsync_jax import face_detection
    padded = np.asarray(face_detection.pad_and_clip(boxes, self.options.pads, frame_shape),
                        np.float64)
    if not self.options.nosmooth:
      padded = smooth_track(padded, found, self.options.smooth_window)
    return padded

  # --- the run --------------------------------------------------------------

  def run(self, face: str | os.PathLike, audio: str | os.PathLike,
          outfile: str | os.PathLike) -> RunReport:
    """Lip-syncs `face` (video or image) to `audio` and writes `outfile`."""
    return self.run_prepared(prepare(face, audio, outfile, self.options))

  def run_prepared(self, job: PreparedJob) -> RunReport:
    """Runs a job checked by `prepare` (with the same options)."""
    t_start = time.perf_counter() - job.prepare_seconds
    opts = self.options
    fin, timer, n_out = job.face, job.timer, job.frames
    notes: list[str] = []
    fw, fh = _resize_frame(np.zeros((fin.height, fin.width, 1), np.uint8),
                           opts.resize_factor).shape[1::-1]

    # Face track per source frame.
    cached = False
    n_source: int | None = 1 if fin.image is not None else None
    if opts.box is not None:
      top, bottom, left, right = opts.box
      fixed = np.array([left, top, right, bottom], np.float64)
      track = lambda src: fixed
      has_face = lambda src: True
    else:
      cache_path = self._cache_path(fin)
      hit = self._read_cache(cache_path)
      if hit is not None:
        raw_boxes, found = hit
        cached = True
      else:
        raw_boxes, found, det_notes = self._detect_all(fin, timer)
        notes += det_notes
        self._write_cache(cache_path, raw_boxes, found)
      n_source = len(found)
      if fin.image is not None and not found.any():
        raise InferenceError(f"no face found in image: {fin.path}")
      if not found.any():
        notes.append("no face found in any frame: the video is passed through unchanged")
      raw_boxes, usable = fill_gaps(raw_boxes, found, opts.max_gap)
      if usable.sum() > found.sum():
        notes.append(f"bridged {int(usable.sum() - found.sum())} source frame(s) of "
                     f"short detection gaps (<= {opts.max_gap} frames)")
      final = self._final_boxes(raw_boxes, usable, (fh, fw))
      track = lambda src: final[src]
      has_face = lambda src: src < len(usable) and bool(usable[src])

    with tempfile.TemporaryDirectory(prefix="lipsync_") as tmpdir:
      source = _FrameSource(fin, opts.resize_factor, n_source, tmpdir)
      frames_without_face = self._generate_and_write(
          source, n_out, job.windows, track, has_face, fin.fps, (fw, fh),
          (job.wav, job.sample_rate), job.outfile, timer)
      n_source = source.n_source or n_source or n_out

    timings = dict(timer.totals)
    timings["total"] = time.perf_counter() - t_start
    if frames_without_face:
      notes.append(f"{frames_without_face} of {n_out} frames had no face and were "
                   "passed through unchanged")
    return RunReport(face=fin.path, audio=job.audio, outfile=job.outfile, fps=fin.fps,
                     frames=n_out, source_frames=int(n_source),
                     frames_without_face=frames_without_face,
                     audio_seconds=job.audio_seconds,
                     ping_pong=fin.image is None and n_out > n_source,
                     detection_cached=cached, timings=timings, notes=notes)

  def _generate_and_write(self, source: _FrameSource, n_out: int, windows: np.ndarray,
                          track, has_face, fps: float, size: tuple[int, int],
                          audio: tuple[np.ndarray, int], outfile: str, timer: _Timer) -> int:
    opts = self.options
    bs = self.batch_size
    abort = threading.Event()
    to_gen = _Pipe(opts.queue_size, abort)
    to_paste = _Pipe(opts.queue_size, abort)

    # A chunk: consecutive output frames holding up to `bs` faces. Frames
    # without a face ride along; a chunk is closed early after 2*bs frames so
    # that long faceless stretches do not pile up in memory.
    def produce():
      frames, boxes, crops, rows = [], [], [], []

      def flush():
        nonlocal frames, boxes, crops, rows
        if frames:
          to_gen.put((frames, boxes, crops, rows))
        frames, boxes, crops, rows = [], [], [], []

      it = source.frames(n_out)
      while True:
        with timer("decode"):
          item = next(it, None)
          if item is None:
            break
          j, src, frame = item
          box = None
          if has_face(src):
            box = blending.clip_box(track(src), frame.shape)
          if box is not None:
            x1, y1, x2, y2 = box
            crops.append(cv2.resize(frame[y1:y2, x1:x2], (FACE_SIZE, FACE_SIZE),
                                    interpolation=cv2.INTER_AREA))
            rows.append(j)
          frames.append(frame)
          boxes.append(box)
        if len(crops) == bs or len(frames) >= 2 * bs:
          flush()
      flush()
      to_gen.put(_END)

    def generate():
      while (chunk := to_gen.get()) is not _END:
        frames, boxes, crops, rows = chunk
        out = None
        if crops:
          with timer("generate"):
            n = len(crops)
            batch_crops = np.zeros((bs, FACE_SIZE, FACE_SIZE, 3), np.uint8)
            batch_crops[:n] = np.stack(crops)
            batch_crops[n:] = batch_crops[n - 1]  # sequence models see a still tail
            batch_mel = np.zeros((bs, 80, 16, 1), np.float32)
            batch_mel[:n, ..., 0] = windows[np.asarray(rows)]
            batch_mel[n:] = batch_mel[n - 1]
            out = np.asarray(self.generate_batch(self.variables, batch_mel, batch_crops))[:n]
        to_paste.put((frames, boxes, out))
      to_paste.put(_END)

    producer = _Thread(produce, abort, "lipsync-decode")
    generator = _Thread(generate, abort, "lipsync-generate")
    producer.start()
    generator.start()
    without_face = 0
    written = 0
    try:
      with video_lib.VideoWriter(outfile, fps, size[0], size[1], audio=audio) as writer:
        while (chunk := to_paste.get()) is not _END:
          frames, boxes, out = chunk
          k = 0
          for frame, box in zip(frames, boxes):
            if box is None:
              without_face += 1
            else:
              with timer("paste"):
                frame = np.array(frame)  # spilled/static frames may be shared
                blending.paste(frame, box, out[k], hard=opts.hard_paste,
                               color_match=opts.color_match)
              k += 1
            with timer("encode"):
              writer.write(frame)
            written += 1
        if written != n_out:
          raise InferenceError(f"internal error: wrote {written} of {n_out} frames")
    except _Stop:
      pass
    finally:
      abort.set()  # unblocks the other stages when we leave early
      producer.join()
      generator.join()
    for t in (producer, generator):
      if t.error is not None:
        raise t.error
    return without_face


def open_jobs(path: str) -> list[tuple[str, str, str]]:
  """Reads a jobs CSV of `face,audio,outfile` rows (optional header row).

  Relative paths are taken relative to the CSV's folder.
  """
  import csv
  path = _check_input(path, "jobs")
  base = os.path.dirname(os.path.abspath(path))
  jobs = []
  with open(path, newline="") as f:
    for lineno, row in enumerate(csv.reader(f), start=1):
      row = [c.strip() for c in row]
      if not row or all(not c for c in row) or row[0].startswith("#"):
        continue
      if lineno == 1 and [c.lower() for c in row] == ["face", "audio", "outfile"]:
        continue
      if len(row) != 3 or not all(row):
        raise InferenceError(f"{path}:{lineno}: expected 3 columns face,audio,outfile, got {row}")
      jobs.append(tuple(os.path.join(base, os.path.expanduser(c)) for c in row))
  if not jobs:
    raise InferenceError(f"no jobs in {path}")
  return jobs


@dataclasses.dataclass
class JobResult:
  face: str
  audio: str
  outfile: str
  ok: bool
  error: str | None = None
  report: RunReport | None = None

  def to_dict(self) -> dict[str, Any]:
    d = {"face": self.face, "audio": self.audio, "outfile": self.outfile,
         "ok": self.ok, "error": self.error}
    if self.report is not None:
      d["report"] = self.report.to_dict()
    return d


def error_message(e: BaseException) -> str:
  """One-line user-facing message for an exception."""
  msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
  if isinstance(e, (ValueError, OSError)):
    return msg
  return f"{type(e).__name__}: {msg}"


def run_jobs(syncer: LipSyncer, jobs: Sequence[tuple[str, str, str]],
             on_result: Callable[[JobResult], None] | None = None) -> list[JobResult]:
  """Runs every job with the same compiled model; a failure fails only its row."""
  results = []
  for face, audio, outfile in jobs:
    try:
      report = syncer.run(face, audio, outfile)
      res = JobResult(face, audio, outfile, True, report=report)
    except Exception as e:  # reported per row, never stops the batch
      res = JobResult(face, audio, outfile, False, error=error_message(e))
    results.append(res)
    if on_result is not None:
      on_result(res)
  return results
