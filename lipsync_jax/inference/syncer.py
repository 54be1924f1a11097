"""`LipSyncer`: one jit-compiled generator, run over face + speech inputs."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import tempfile
import threading
import time
from typing import Callable

import numpy as np

from lipsync_jax.vision import blending
from lipsync_jax.io import files
from lipsync_jax.io import video as video_lib
from lipsync_jax.vision.face_detection import fill_gaps, smooth_track
from lipsync_jax.inference.options import (CACHE_FORMAT, FACE_SIZE, InferenceError,
                                           InferenceOptions, InputNotFoundError, RunReport,
                                           default_cache_dir, file_sha256)
from lipsync_jax.inference.pipeline import END, Pipe, StageThread, Stop, Timer, quiet_native_stderr
from lipsync_jax.inference.sources import (FaceInput, FrameSource, PreparedJob, crop_face,
                                           prepare, resize_frame)

@dataclasses.dataclass
class FaceTrack:
  """The face boxes of a face input's source frames.

  Attributes:
    box: source index -> (4,) float (x1, y1, x2, y2), padded and smoothed.
    has_face: source index -> whether that frame has a usable box.
    face_boxes: (K, 4) the usable boxes (for their size).
    n_source: source frames (None for a fixed box on a video: not counted).
    cached: the track came from the box cache.
    notes: what the user should know (gaps bridged, faces upscaled, ...).
  """
  box: Callable[[int], np.ndarray]
  has_face: Callable[[int], bool]
  face_boxes: np.ndarray
  n_source: int | None
  cached: bool
  notes: list[str]


# jax/flax/orbax are imported where the model is built, so that bad input is
# reported (by `prepare`) before paying for those imports.


def model_variables(variables) -> dict:
  """The {"params", "batch_stats"} of a model's variables (what runs)."""
  return {k: v for k, v in variables.items() if k in ("params", "batch_stats")}


def masked_faces(crops, references=None):
  """(N, S, S, 3) u8 crops -> (N, S, S, 6) [0, 1]: the crop with its lower
  half zeroed (the masked target), then the reference: the crop itself, or
  `references` (N, S, S, 3) u8 when given."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  crops = crops.astype(jnp.float32) / 255.0
  ref = crops if references is None else references.astype(jnp.float32) / 255.0
  return jnp.concatenate([crops.at[:, crops.shape[1] // 2:].set(0.0), ref], axis=-1)


def faces_to_u8(out):
  """[0, 1] generated faces -> uint8, rounded."""
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  return jnp.clip(jnp.round(out * 255.0), 0, 255).astype(jnp.uint8)


def pad_to_batch(x: np.ndarray, size: int) -> np.ndarray:
  """(n, ...) with 1 <= n <= size -> (size, ...): the last row repeated
  (sequence models see a still tail)."""
  out = np.empty((size,) + x.shape[1:], x.dtype)
  out[:len(x)] = x
  out[len(x):] = x[-1]
  return out


class LipSyncer:
  """A compiled generator plus the inference pipeline around it.

  Args:
    module: a generator `flax.linen.Module` (contract: audio (N, 80, 16, 1),
      faces (N, 96, 96, 6) BGR [0, 1] -> (N, 96, 96, 3) sigmoid).
    variables: its {"params", "batch_stats"}.
    arch: registry name, for reports.
    options: `InferenceOptions`; keyword arguments override its fields.
    runner: instead of module and variables, a generator of another backend
      (`LipSyncer.from_onnx`): called as runner(mels, u8 crops) -> u8 faces,
      with attributes face_size and batch_size.
  """

  # Each frame is made from its own (80, 16) mel window and face crop
  # (`generate_faces`), which is what streaming needs (`stream`).
  frames_from_mel_windows = True
  # Only a two-stage model's renderer can be fine-tuned on the face input
  # (`options.adapt_steps`); the others refuse the option.
  adapts_to_face = False

  def __init__(self, module, variables, arch: str = "wav2lip",
               options: InferenceOptions | None = None, runner=None, **overrides):
    options = dataclasses.replace(options or InferenceOptions(), **overrides)
    options.validate()
    self.arch = arch
    self._check_model_options(options)
    self.options = options
    self.module = module
    self._detector = None
    # Trace counts (= compilations), shared with `with_options` copies: the
    # per-frame generator, and the still-image encoder + decoder.
    self._stats = {"compilations": 0, "still_compilations": 0}
    self._runner = runner
    if runner is not None:
      self._init_runner(runner)
    else:
      self._init_jax(module, variables)

  def _init_runner(self, runner) -> None:
    """Another backend (`onnx_backend.OnnxGenerator`): its fixed batch and
    face size; every frame goes through it (no still-image split)."""
    self.backend = "onnxruntime"
    self.num_devices = 1
    self.face_size = runner.face_size
    self.batch_size = runner.batch_size
    self.variables = {}
    self.reuses_face_features = False
    self.generate_batch = lambda variables, mel, crops: runner(mel, crops)

  def _place_on_devices(self, variables, unit: int):
    """Data parallel over the local devices: the batch (a multiple of
    `unit` per device) is split along its first axis, `variables` (params
    and batch_stats of each tree) are replicated. Sets num_devices,
    batch_size, data_sharding and variables; returns the replicated
    sharding."""
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    devices = np.array(jax.local_devices())
    self.num_devices = len(devices)
    unit *= self.num_devices
    self.batch_size = int(math.ceil(self.options.batch_size / unit)) * unit
    mesh = Mesh(devices, ("data",))
    self.data_sharding = NamedSharding(mesh, P("data"))
    replicated = NamedSharding(mesh, P())
    self.variables = jax.device_put(variables, replicated)
    return replicated

  def _init_jax(self, module, variables) -> None:
    import jax

    self.backend = "jax"
    from lipsync_jax import models  # pylint: disable=import-outside-toplevel
    # Crops are cut at the model's face size (96 unless the checkpoint says
    # otherwise), so a 192 px model sees 192 px of the source face.
    self.face_size = models.face_size_of(module) or FACE_SIZE
    replicated = self._place_on_devices(model_variables(variables),
                                        models.frames_per_call(module))
    stats = self._stats

    def generate(variables, mel, crops):
      """(N, 80, 16, 1) f32 mels, (N, S, S, 3) u8 crops -> (N, S, S, 3) u8 (S: face_size)."""
      stats["compilations"] += 1  # runs at trace time only: counts compilations
      return faces_to_u8(models.generate_frames(module, variables, mel, masked_faces(crops)))

    self.generate_batch = jax.jit(
        generate, in_shardings=(replicated, self.data_sharding, self.data_sharding),
        out_shardings=self.data_sharding)

    # One face image: its encoder features once (1, ...), then per batch the
    # audio-driven decoder alone, the features broadcast over the batch.
    self.reuses_face_features = models.has_face_features(module)
    if self.reuses_face_features:
      def encode_still(variables, crop):
        """(1, S, S, 3) u8 -> the face encoder's features (1, ...)."""
        stats["still_compilations"] += 1
        return models.encode_faces(module, variables, masked_faces(crop))

      def generate_still(variables, mel, feats):
        """(N, 80, 16, 1) f32 mels + one face's features -> (N, S, S, 3) u8."""
        stats["still_compilations"] += 1
        return faces_to_u8(models.decode_faces(module, variables, mel, feats))

      self.encode_still = jax.jit(encode_still, in_shardings=(replicated, replicated),
                                  out_shardings=replicated)
      self.generate_still = jax.jit(
          generate_still, in_shardings=(replicated, self.data_sharding, replicated),
          out_shardings=self.data_sharding)

  @classmethod
  def from_checkpoint(cls, path: str | os.PathLike, options: InferenceOptions | None = None,
                      **overrides) -> "LipSyncer":
    """Loads a generator checkpoint (model dir, training workdir or upstream
    `.pth`) with `checkpoint.load_model`; refuses other architectures. Two-
    stage model directories and "builtin" load with `inference.load_syncer`
    (a `two_stage.TwoStageSyncer`)."""
    from lipsync_jax import checkpoint, two_stage_model as two_stage
    from lipsync_jax.models import ALL_GENERATORS
    path = os.fspath(path)
    if path == "builtin" or two_stage.is_two_stage(path):
      raise InferenceError(f"{path} is a two-stage model: load it with "
                           "lipsync_jax.inference.load_syncer (which loads any checkpoint)")
    if not os.path.exists(path):
      raise InputNotFoundError(f"checkpoint not found: {path}")
    loaded = checkpoint.load_model(path, expected_arch=ALL_GENERATORS)
    return cls(loaded.module, loaded.variables, loaded.arch, options, **overrides)

  @classmethod
  def from_onnx(cls, path: str | os.PathLike, options: InferenceOptions | None = None,
                threads: int = 0, spinning: bool = True, **overrides) -> "LipSyncer":
    """A syncer whose generator is an ONNX file from `python -m
    lipsync_jax.export`, run by onnxruntime (`threads` 0: its default;
    `spinning` False for streaming: see `export.session`). The file's fixed
    batch replaces `options.batch_size`."""
    from lipsync_jax.inference.onnx_backend import OnnxGenerator
    path = os.fspath(path)
    if not os.path.isfile(path):
      raise InputNotFoundError(f"ONNX file not found: {path}")
    runner = OnnxGenerator(path, threads, spinning)
    return cls(None, None, runner.arch, options, runner=runner, **overrides)

  @property
  def compilations(self) -> int:
    """How many times the per-frame generator was traced (= compiled) so far."""
    return self._stats["compilations"]

  @property
  def still_compilations(self) -> int:
    """The same for the still-image path (its encoder and decoder each count)."""
    return self._stats["still_compilations"]

  def with_options(self, **overrides) -> "LipSyncer":
    """A LipSyncer with other options that shares this one's compiled
    generator (unless the batch size changes, which needs a new compile)."""
    options = dataclasses.replace(self.options, **overrides)
    options.validate()
    self._check_model_options(options)
    if options.batch_size != self.options.batch_size and self._runner is None:
      return LipSyncer(self.module, self.variables, self.arch, options)
    other = copy.copy(self)
    other.options = options
    if options.detector != self.options.detector:
      other._detector = None
    return other

  def _check_model_options(self, options: InferenceOptions) -> None:
    """Options this kind of model cannot honour are an error, not ignored:
    only a two-stage model's renderer can adapt to a face."""
    if options.adapt_steps and not self.adapts_to_face:
      raise InferenceError(
          f"adapting to the face (--adapt-steps) needs a two-stage model (builtin or a "
          f"two-stage model directory), not a {self.arch} checkpoint")

  @property
  def detector(self):
    if self._detector is None:
      from lipsync_jax.vision import face_detection
      with quiet_native_stderr():  # TFLite prints an INFO line when created
        self._detector = face_detection.create_detector(self.options.detector)
    return self._detector

  def warmup(self) -> None:
    """Compiles the generator for the fixed batch shape."""
    import jax
    mel = np.zeros((self.batch_size, 80, 16, 1), np.float32)
    crops = np.zeros((self.batch_size, self.face_size, self.face_size, 3), np.uint8)
    jax.block_until_ready(self.generate_batch(self.variables, mel, crops))

  def generate_faces(self, windows: np.ndarray, crops=None, feats=None) -> np.ndarray:
    """Faces for n <= batch_size frames, in one call of the generator.

    Args:
      windows: (n, 80, 16) float32 mel windows.
      crops: (n, S, S, 3) uint8 face crops (S: face_size), or
      feats: one still face's encoder features (`encode_still`), for all n.
    Returns:
      (n, S, S, 3) uint8 faces. The batch is padded to `batch_size` by
      repeating its last row (sequence models see a still tail).
    """
    n = len(windows)
    mel = pad_to_batch(np.asarray(windows, np.float32)[..., None], self.batch_size)
    if feats is not None:
      out = self.generate_still(self.variables, mel, feats)
    else:
      out = self.generate_batch(self.variables, mel,
                                pad_to_batch(np.stack(crops), self.batch_size))
    return np.asarray(out)[:n]

  def paste_mouths(self, windows: np.ndarray) -> np.ndarray | None:
    """Where to paste the faces `generate_faces` made from `windows`:
    (n, N, 2) lip points in crop units per frame (`blending.paste`'s
    `mouth`), or None for the whole lower face. The pixel generators do not
    know where they drew the mouth: None."""
    del windows
    return None

  # --- face track -----------------------------------------------------------

  def _cache_path(self, face: FaceInput) -> pathlib.Path | None:
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
    buf = io.BytesIO()
    np.savez(buf, boxes=boxes.astype(np.float32), found=found)
    with contextlib.suppress(OSError):
      files.atomic_write_bytes(path, buf.getvalue())

  def _detect_all(self, face: FaceInput, timer: Timer) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Raw track: boxes (N, 4) float (x1, y1, x2, y2), found (N,), notes."""
    from lipsync_jax.vision import face_detection
    opts = self.options
    detector = self.detector
    if face.image is not None:
      frame = resize_frame(face.image, opts.resize_factor)
      with timer("detect"):
        per_frame = detector.detect([frame])
      boxes, found, notes = face_detection.select_track(per_frame)
      return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(found, bool), list(notes)

    abort = threading.Event()
    pipe = Pipe(opts.queue_size, abort)
    bs = max(1, opts.detect_batch_size)

    def produce():
      batch: list[np.ndarray] = []
      it = video_lib.iter_frames(face.path, fps=face.resample_fps)
      while True:
        with timer("decode"):
          frame = next(it, None)
          if frame is not None:
            frame = resize_frame(frame, opts.resize_factor)
        if frame is None:
          break
        batch.append(frame)
        if len(batch) == bs:
          pipe.put(batch)
          batch = []
      if batch:
        pipe.put(batch)
      pipe.put(END)

    thread = StageThread(produce, abort, "lipsync-detect-decode")
    thread.start()
    per_frame: list = []
    try:
      while (batch := pipe.get()) is not END:
        with timer("detect"):
          per_frame.extend(detector.detect(batch))
    except Stop:
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
    from lipsync_jax.vision import face_detection
    padded = np.asarray(face_detection.pad_and_clip(boxes, self.options.pads, frame_shape),
                        np.float64)
    if not self.options.nosmooth:
      padded = smooth_track(padded, found, self.options.smooth_window)
    return padded

  def _face_track(self, fin: FaceInput, frame_hw: tuple[int, int], timer: Timer) -> FaceTrack:
    """The face box of every source frame: the fixed `box`, or the cached or
    detected track, gaps bridged, padded and smoothed. Raises for a photo
    without a face."""
    opts = self.options
    notes: list[str] = []
    if opts.box is not None:
      top, bottom, left, right = opts.box
      fixed = np.array([left, top, right, bottom], np.float64)
      return self._note_face_size(FaceTrack(
          lambda src: fixed, lambda src: True, fixed[None],
          1 if fin.image is not None else None, False, notes))
    cache_path = self._cache_path(fin)
    hit = self._read_cache(cache_path)
    cached = hit is not None
    if cached:
      raw_boxes, found = hit
    else:
      raw_boxes, found, det_notes = self._detect_all(fin, timer)
      notes += det_notes
      self._write_cache(cache_path, raw_boxes, found)
    if fin.image is not None and not found.any():
      raise InferenceError(f"no face found in image: {fin.path}")
    if not found.any():
      notes.append("no face found in any frame: the video is passed through unchanged")
    raw_boxes, usable = fill_gaps(raw_boxes, found, opts.max_gap)
    if usable.sum() > found.sum():
      notes.append(f"bridged {int(usable.sum() - found.sum())} source frame(s) of "
                   f"short detection gaps (<= {opts.max_gap} frames)")
    final = self._final_boxes(raw_boxes, usable, frame_hw)
    return self._note_face_size(FaceTrack(
        lambda src: final[src], lambda src: src < len(usable) and bool(usable[src]),
        final[usable], len(found), cached, notes))

  def _note_face_size(self, track: FaceTrack) -> FaceTrack:
    """Adds a note when the faces are smaller than the model's."""
    boxes = track.face_boxes
    if len(boxes):
      side = float(np.median(np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
      if side < self.face_size:
        track.notes.append(f"the face is about {side:.0f} px, smaller than the model's "
                           f"{self.face_size} px faces: it is upscaled")
    return track

  # --- streaming --------------------------------------------------------------

  def stream(self, face: str | os.PathLike, *, channels: int = 1, warmup: bool = True):
    """A `stream.StreamSession` on `face`, a video (played back and forth)
    or a photo: its boxes, crops and (photo) encoder features are prepared
    now, and the generator is run once (`warmup`) so that the first frame
    does not wait for a compilation. Audio is then pushed in PCM chunks of
    any size (16 kHz, int16 or float32, `channels` channels). Frames come in
    micro-batches of `batch_size`: build the syncer with 1 to 4 for low
    latency. A face input without any face is a one-line InferenceError."""
    from lipsync_jax.inference.stream import StreamSession  # pylint: disable=import-outside-toplevel
    return StreamSession(self, face, channels=channels, warmup=warmup)

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
    fw, fh = resize_frame(np.zeros((fin.height, fin.width, 1), np.uint8),
                           opts.resize_factor).shape[1::-1]

    face_track = self._face_track(fin, (fh, fw), timer)
    track, has_face = face_track.box, face_track.has_face
    cached, n_source = face_track.cached, face_track.n_source
    notes += face_track.notes

    with tempfile.TemporaryDirectory(prefix="lipsync_") as tmpdir:
      source = FrameSource(fin, opts.resize_factor, n_source, tmpdir)
      # One face image, so one crop for every frame: encode it once.
      still = (fin.image is not None and opts.reuse_face_features
               and self.reuses_face_features)
      frames_without_face, first_frame_at = self._generate_and_write(
          source, n_out, self._frame_inputs(job, source, face_track), track, has_face,
          fin.fps, (fw, fh),
          (job.wav, job.sample_rate), job.outfile, timer, still)
      n_source = source.n_source or n_source or n_out

    timings = dict(timer.totals)
    timings["total"] = time.perf_counter() - t_start
    # Time to first frame: what a user waits before output starts (includes
    # compiling the generator on its first batch, unless it is cached).
    timings["first_frame"] = first_frame_at - t_start
    if frames_without_face:
      notes.append(f"{frames_without_face} of {n_out} frames had no face and were "
                   "passed through unchanged")
    return RunReport(face=fin.path, audio=job.audio, outfile=job.outfile, fps=fin.fps,
                     frames=n_out, source_frames=int(n_source),
                     frames_without_face=frames_without_face,
                     audio_seconds=job.audio_seconds,
                     ping_pong=fin.image is None and n_out > n_source,
                     detection_cached=cached, timings=timings, notes=notes)

  def _frame_inputs(self, job: PreparedJob, source: FrameSource,
                    face_track: FaceTrack) -> np.ndarray:
    """What `generate_faces` gets per output frame: the mel windows (n_out,
    80, 16). Generators with other per-frame inputs (the two-stage model's
    mel context and the face's lips) override this."""
    del source, face_track
    return job.windows

  def _generate_and_write(self, source: FrameSource, n_out: int, windows: np.ndarray,
                          track, has_face, fps: float, size: tuple[int, int],
                          audio: tuple[np.ndarray, int], outfile: str, timer: Timer,
                          still: bool = False) -> tuple[int, float]:
    opts = self.options
    bs = self.batch_size
    crop = self.face_size
    abort = threading.Event()
    to_gen = Pipe(opts.queue_size, abort)
    to_paste = Pipe(opts.queue_size, abort)

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
          box, face = crop_face(frame, track(src), crop) if has_face(src) else (None, None)
          if box is not None:
            crops.append(face)
            rows.append(j)
          frames.append(frame)
          boxes.append(box)
        if len(crops) == bs or len(frames) >= 2 * bs:
          flush()
      flush()
      to_gen.put(END)

    def generate():
      feats = None  # the still face's encoder features
      while (chunk := to_gen.get()) is not END:
        frames, boxes, crops, rows = chunk
        out = mouths = None
        if crops:
          with timer("generate"):
            if still and feats is None:
              feats = self.encode_still(self.variables, crops[0][None])
            chunk_windows = windows[np.asarray(rows)]
            out = self.generate_faces(chunk_windows, crops, feats)
            mouths = self.paste_mouths(chunk_windows)
        to_paste.put((frames, boxes, out, mouths))
      to_paste.put(END)

    producer = StageThread(produce, abort, "lipsync-decode")
    generator = StageThread(generate, abort, "lipsync-generate")
    producer.start()
    generator.start()
    without_face = 0
    written = 0
    first_frame_at = time.perf_counter()
    try:
      with video_lib.VideoWriter(outfile, fps, size[0], size[1], audio=audio) as writer:
        while (chunk := to_paste.get()) is not END:
          frames, boxes, out, mouths = chunk
          k = 0
          for frame, box in zip(frames, boxes):
            if box is None:
              without_face += 1
            else:
              with timer("paste"):
                frame = np.array(frame)  # spilled/static frames may be shared
                blending.paste(frame, box, out[k], hard=opts.hard_paste,
                               color_match=opts.color_match,
                               mouth=None if mouths is None else mouths[k])
              k += 1
            with timer("encode"):
              writer.write(frame)
            if not written:
              first_frame_at = time.perf_counter()
            written += 1
        if written != n_out:
          raise InferenceError(f"internal error: wrote {written} of {n_out} frames")
    except Stop:
      pass
    finally:
      abort.set()  # unblocks the other stages when we leave early
      producer.join()
      generator.join()
    for t in (producer, generator):
      if t.error is not None:
        raise t.error
    return without_face, first_frame_at
