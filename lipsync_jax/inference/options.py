"""Inference options, reports, errors and input checks (no jax import)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
from typing import Any, Sequence

from lipsync_jax import cache

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


REFERENCES = ("rest", "frame")
MAX_ADAPT_STEPS = 5000   # InferenceOptions.adapt_steps


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
    reuse_face_features: for one face image (a photo or `static`), run the
      generator's face encoder once and only its audio-driven decoder per
      frame (Wav2Lip and LPIPS-AttnWav2Lip; the same frames within float32
      rounding). False runs the whole generator on every frame.
    lip_gain: two-stage models only: the factor on stage 1's lip motion about
      the neutral mouth before rendering. None takes the model's own for
      `lip_smoothing` on or off (`lip_gain` or `lip_gain_smoothed` in its
      manifest, measured by `python -m lipsync_jax.two_stage calibrate`; 1
      when it has none).
    reference: two-stage models only: the renderer's reference frame.
      "rest": for each frame, the nearest frame in time whose mouth is
      closed (`audio_to_lips.rest_frames`), so the input's own mouth
      movements do not show through and the head pose stays close; "frame":
      each frame itself (Wav2Lip's choice).
    mouth_paste: two-stage models only: paste only a feathered region around
      the mouth (the lips drawn and the input frame's own,
      `blending.mouth_mask`), keeping the input's own skin, folds and jaw
      line elsewhere. False pastes the whole lower face, as the pixel
      generators do. Ignored with `hard_paste`.
    lip_smoothing: two-stage models only: smooth stage 1's lips over +-1
      frame ([1, 2, 1] / 4). Off by default: it takes out fast mouth motion
      that follows the speech (docs/two_stage.md), and a stream waits one
      frame more for it.
    adapt_steps: two-stage models only: fine-tune the renderer on the face
      input's own frames for this many steps before rendering
      (`face_adaptation`), so it draws this face's lips and teeth; 0 (the
      default) renders with the model as shipped.
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
  reuse_face_features: bool = True
  lip_gain: float | None = None
  reference: str = "rest"
  mouth_paste: bool = True
  lip_smoothing: bool = False
  adapt_steps: int = 0

  def validate(self) -> None:
    if len(self.pads) != 4:
      raise InferenceError(f"pads must be 4 integers (top bottom left right), got {self.pads}")
    if int(self.resize_factor) < 1:
      raise InferenceError(f"resize factor must be >= 1, got {self.resize_factor}")
    if self.batch_size < 1:
      raise InferenceError(f"batch size must be >= 1, got {self.batch_size}")
    if not self.fps > 0:
      raise InferenceError(f"fps must be > 0, got {self.fps}")
    if self.reference not in REFERENCES:
      raise InferenceError(f"reference must be one of {', '.join(REFERENCES)}, "
                           f"got {self.reference!r}")
    if self.lip_gain is not None and not 0 < self.lip_gain <= 10:
      raise InferenceError(f"lip gain must be in (0, 10], got {self.lip_gain}")
    if not 0 <= self.adapt_steps <= MAX_ADAPT_STEPS:
      raise InferenceError(f"adapt steps must be in [0, {MAX_ADAPT_STEPS}], "
                           f"got {self.adapt_steps}")
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
    timings: seconds per stage (`STAGES`) plus "total" and "first_frame"
      (from the start of the run to the first frame written); stages overlap,
      so they add up to more than "total". With `adapt_steps`, "adapt": the
      renderer's adaptation to the face (near 0 when the model had already
      adapted to the same face).
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

def default_cache_dir() -> pathlib.Path:
  """The box-track cache: `cache.cache_root()/boxes`."""
  return cache.cache_root() / "boxes"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(chunk):
      h.update(block)
  return h.hexdigest()


def is_image(path: str) -> bool:
  return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def check_input(path: str, what: str) -> str:
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
