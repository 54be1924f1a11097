"""Streaming lip-sync: PCM chunks in, frames out as soon as their audio is there.

    syncer = LipSyncer.from_checkpoint("models/wav2lip_gan", batch_size=1)
    session = syncer.stream("face.mp4")          # boxes, crops, compile: once
    for chunk in microphone():                    # int16 or float32, 16 kHz, any size
      for frame in session.push(chunk):           # StreamFrame: image, audio, time
        show(frame.image)
    session.end()                                 # the utterance's last frames
    # the next utterance reuses everything: no detection, no compilation

Two layers:

* `StreamSession` (`LipSyncer.stream`) is exact and has no clock: `push`
  returns every frame whose mel window became complete, `end` the rest of the
  utterance. Its frames are the offline path's (`LipSyncer.run`) for the same
  audio, within 1 uint8 level (the generator runs at another batch size),
  whatever the chunk sizes.
* `RealtimeStream` (`session.realtime()`) puts it on the wall clock: `push`
  never blocks (a microphone thread is never stalled), a worker renders
  micro-batches, frames that could no longer be on time are dropped (their
  slot repeats the previous image, so the video keeps its length and its
  audio), and a gap in the audio is filled with silence, so the stream keeps
  time and the mouth closes. `stats()` gives latency, drops and frame rate.

Timing of frame i (fps f, 16 kHz): its timestamp is i / f, its audio the
samples [round(i * 16000 / f), round((i + 1) * 16000 / f)), and its mel
window the 16 columns from int(80 i / f) (`audio.mel_windows`). Column c is
final when sample 200 c + 400 has arrived (`audio.MelStream`), so frame i can
be made once audio 202.6-212.6 ms past its timestamp has arrived, at 25 fps:
that look-ahead is part of every frame's latency.

Frame i shows source frame `ping_pong_index(i, n)` of a face video of n
frames (a photo: always the same face, its encoder features computed once);
each utterance starts again at frame 0, as a `run` does.

The two-stage model (`TwoStageSyncer`, the built-in one) streams too: its
syncer's `stream_lips` measures the face's neutral lips once, with the rest
of the face, and its `StreamLips` turns each frame's mel context (32 columns:
0.2 s before the Wav2Lip window and the window, so no more look-ahead) into
the frame's lips as the frame completes. Its lips are smoothed over +-1
frame, as offline, so a frame is made once the next frame's audio is in:
one frame more look-ahead (40 ms at 25 fps; `lookahead_seconds(fps,
extra_frames=1)`).
"""

from __future__ import annotations

import collections
import dataclasses
import math
import queue
import resource
import tempfile
import threading
import time
from typing import Callable, Iterator

import numpy as np

from lipsync_jax.io import audio as audio_lib
from lipsync_jax.vision import blending
from lipsync_jax.inference.options import InferenceError
from lipsync_jax.inference.pipeline import Timer
from lipsync_jax.inference.sources import (FrameSource, SpillFile, crop_face, open_face,
                                           ping_pong_index, resize_frame)

SAMPLE_RATE = audio_lib.SAMPLE_RATE
_INT16_SCALE = 32768.0  # what soundfile divides PCM_16 by: the offline path's samples
N_WARMUP = 1600  # samples of silence the warm-up computes a mel of


@dataclasses.dataclass
class StreamFrame:
  """One output frame.

  Attributes:
    index: its number in the utterance (0, 1, ...).
    time: its timestamp, index / fps seconds from the utterance's start.
    image: (H, W, 3) uint8 BGR.
    audio: (k,) float32 16 kHz samples that play with it (k = 640 at 25 fps;
      the utterance's last frame has the rest).
    face: whether a face was generated on it (False: the source frame as it
      is, or a dropped frame).
    dropped: (realtime) not generated, to keep up: `image` repeats the
      previous frame.
    silence: (realtime) its audio is silence filled into a gap.
    latency: (realtime) seconds from the arrival of the audio sample at its
      timestamp (or the time it was due at real-time pace, if later) to the
      frame's output.
  """
  index: int
  time: float
  image: np.ndarray
  audio: np.ndarray
  face: bool
  dropped: bool = False
  silence: bool = False
  latency: float | None = None


@dataclasses.dataclass
class _Job:
  """A frame whose mel window is complete: what `_render` needs."""
  index: int
  window: np.ndarray     # (80, 16) float32 mel window; two-stage: (80, 32) context, then (80,) lips
  audio: np.ndarray      # (k,) float32
  sample: int            # its first sample in the utterance (its timestamp)
  ref: float = 0.0       # realtime: when that sample had arrived (and was due)
  ready: float = 0.0     # realtime: when the window was complete
  silence: bool = False


def frame_sample(i: int, fps: float) -> int:
  """First 16 kHz sample of frame `i`: round(i * 16000 / fps)."""
  return math.floor(i * SAMPLE_RATE / fps + 0.5)


def lookahead_seconds(fps: float, frames: int = 1000, extra_frames: int = 0) -> float:
  """The most audio past a frame's timestamp that its window needs (the
  first `frames` frames; at 25 fps 3401 samples, 212.6 ms); with
  `extra_frames`, the window of the frame that many later (the two-stage
  model's smoothing: 1, at 25 fps 4041 samples, 252.6 ms)."""
  i = np.arange(frames) + extra_frames
  need = (audio_lib.HOP_LENGTH * audio_lib.window_starts(i, fps)
          + audio_lib.HOP_LENGTH * (audio_lib.MEL_WINDOW - 1) + audio_lib.N_FFT // 2 + 1)
  return float(np.max(need - np.array([frame_sample(k - extra_frames, fps) for k in i]))
               ) / SAMPLE_RATE


def check_chunk(chunk, channels: int = 1, sample_rate: int | None = None) -> np.ndarray:
  """A PCM chunk as (n,) float32 mono samples, or a one-line InferenceError.

  Args:
    chunk: (n,) or (n, channels) int16 (scaled by 1/32768, as a PCM_16 file
      is read) or float32 samples at 16 kHz.
    channels: the channels the stream was opened with (averaged to mono).
    sample_rate: the chunk's rate, when the caller knows it (checked).
  """
  if sample_rate is not None and int(sample_rate) != SAMPLE_RATE:
    raise InferenceError(f"audio chunk at {sample_rate} Hz: the stream takes {SAMPLE_RATE} Hz "
                         "(resample it first)")
  a = np.asarray(chunk)
  if a.dtype not in (np.int16, np.float32):
    raise InferenceError(f"audio chunk of dtype {a.dtype}: the stream takes int16 or float32 PCM")
  got = 1 if a.ndim == 1 else a.shape[1] if a.ndim == 2 else None
  if got != channels:
    raise InferenceError(f"audio chunk of shape {a.shape}: the stream takes {channels} "
                         f"channel(s), shape (n,) or (n, {channels})")
  wav = a.astype(np.float32) / _INT16_SCALE if a.dtype == np.int16 else a.astype(np.float32)
  if wav.ndim == 2:
    wav = wav.mean(axis=1, dtype=np.float32) if channels > 1 else wav[:, 0]
  if not np.all(np.isfinite(wav)):
    raise InferenceError("audio chunk contains NaN or infinite samples")
  return np.ascontiguousarray(wav)


class StreamSession:
  """A face prepared once, lip-synced to audio that arrives in chunks.

  Built by `LipSyncer.stream`. Frames are made in micro-batches of the
  syncer's batch size (1 to 4 keeps latency low; one compiled program).
  Not thread-safe: one thread pushes (`RealtimeStream` for a clocked one).
  A syncer with `stream_lips` (the two-stage model) gets each frame's mel
  context instead of its window, and its lips from its `StreamLips`.

  Attributes:
    fps, width, height: of the output frames.
    source_frames: frames of the face input (1 for a photo).
    notes: what the face preparation found (gaps bridged, small faces, ...).
  """

  def __init__(self, syncer, face, *, channels: int = 1, warmup: bool = True):
    if channels < 1:
      raise InferenceError(f"channels must be >= 1, got {channels}")
    if not (getattr(syncer, "frames_from_mel_windows", False) or hasattr(syncer, "stream_lips")):
      raise InferenceError(f"the {syncer.arch} model does not stream yet (its frames take more "
                           "than a mel window): stream a Wav2Lip-style generator "
                           "(a model directory, .pth or .onnx) or a two-stage model")
    self.syncer = syncer
    self.channels = int(channels)
    self._tmp = tempfile.TemporaryDirectory(prefix="lipsync_stream_")
    try:
      self._prepare_face(face)
      if warmup:
        self._warmup()
    except BaseException:
      self.close()
      raise
    self._mel = audio_lib.MelStream()
    self._reset_utterance()

  # --- the face, once ----------------------------------------------------------

  def _prepare_face(self, face) -> None:
    """Opens the face, finds its box track (cache, detection or --box),
    keeps its frames (a spill file) and face crops, and for a photo the
    encoder features (the two-stage model: the face's neutral lips). A face
    input with no face is an error."""
    syncer, opts = self.syncer, self.syncer.options
    fin = open_face(face, opts)
    self.fps = fin.fps
    h, w = resize_frame(np.zeros((fin.height, fin.width, 1), np.uint8),
                        opts.resize_factor).shape[:2]
    track = syncer._face_track(fin, (h, w), Timer())  # pylint: disable=protected-access
    self.notes = list(track.notes)
    source = FrameSource(fin, opts.resize_factor, track.n_source, self._tmp.name)
    self._frames: list[np.ndarray] | SpillFile = []
    self._boxes, self._crops = [], []
    for k, frame in enumerate(source.decode()):
      if fin.image is not None:
        self._frames.append(frame)
      else:
        if not isinstance(self._frames, SpillFile):
          self._frames = SpillFile(frame.shape, self._tmp.name)
        self._frames.append(frame)
      box, crop = crop_face(frame, track.box(k), syncer.face_size) if track.has_face(k) else (None, None)
      self._boxes.append(box)
      self._crops.append(crop)
    self.source_frames = len(self._boxes)
    if not self.source_frames:
      raise InferenceError(f"no frames could be decoded from {fin.path}")
    if all(b is None for b in self._boxes):
      raise InferenceError(f"no face found in {fin.path}: nothing to lip-sync")
    self.height, self.width = h, w
    self._feats = None
    self._lips = (syncer.stream_lips(self._crops, fin.path) if hasattr(syncer, "stream_lips")
                  else None)
    if fin.image is not None and opts.reuse_face_features and syncer.reuses_face_features:
      self._feats = syncer.encode_still(syncer.variables, self._crops[0][None])

  def _warmup(self) -> None:
    """Compiles the generator for the micro-batch (on a face crop of this
    input) and imports and runs the mel code once, so that the first frame
    waits for neither."""
    audio_lib.melspectrogram(np.zeros(N_WARMUP, np.float32))
    silence = (self._lips.warmup() if self._lips is not None else
               np.zeros((1, audio_lib.NUM_MELS, audio_lib.MEL_WINDOW), np.float32))
    crop = next(c for c in self._crops if c is not None)
    self.syncer.generate_faces(silence, [crop], self._feats)

  # --- audio -> frames ---------------------------------------------------------

  def _reset_utterance(self) -> None:
    self._mel.reset()
    self._cols = np.zeros((audio_lib.NUM_MELS, 0), np.float32)  # mel columns from _col0
    self._col0 = 0
    self._wav = np.zeros(0, np.float32)  # samples from _wav0, for the frames' audio
    self._wav0 = 0
    self._next = 0  # the next frame's index

  @property
  def samples(self) -> int:
    """Samples of the current utterance pushed so far."""
    return self._mel.samples

  @property
  def batch_size(self) -> int:
    """Frames per generator call (the micro-batch)."""
    return self.syncer.batch_size

  def check_chunk(self, chunk, sample_rate: int | None = None) -> np.ndarray:
    """`check_chunk` with this stream's channel count."""
    return check_chunk(chunk, self.channels, sample_rate)

  @property
  def _before(self) -> int:
    """Mel columns a frame's input takes before its window's start."""
    return 0 if self._lips is None else self._lips.before

  def _windows(self, starts) -> np.ndarray:
    """(k,) window starts in the utterance's mel -> (k, 80, 16) the frames'
    mel windows, or their (k, 80, C) mel contexts (`StreamLips.context`)."""
    rel = np.asarray(starts, np.int64) - self._col0
    if self._lips is not None:
      return self._lips.context(self._cols, rel)
    if not len(rel):
      return np.zeros((0, audio_lib.NUM_MELS, audio_lib.MEL_WINDOW), np.float32)
    return np.stack([self._cols[:, c:c + audio_lib.MEL_WINDOW] for c in rel])

  def _lip_stage(self, jobs: list[_Job], end: bool = False) -> list[_Job]:
    """The two-stage model: the jobs whose lips are final (held back one
    frame for the smoothing; `end`: all), windows replaced by lips."""
    if self._lips is None:
      return jobs
    return self._lips.push(jobs) + (self._lips.finish() if end else [])

  def _job(self, i: int, window: np.ndarray, end: int | None = None) -> _Job:
    a = frame_sample(i, self.fps)
    b = frame_sample(i + 1, self.fps) if end is None else end
    return _Job(i, window, self._wav[a - self._wav0:b - self._wav0].copy(), a)

  def _feed(self, wav: np.ndarray) -> list[_Job]:
    """Appends checked samples; returns the frames whose windows and audio
    are now complete (cheap: no generator)."""
    self._cols = np.concatenate([self._cols, self._mel.push(wav)], axis=1)
    self._wav = np.concatenate([self._wav, wav])
    n, n_cols, fps = self._mel.samples, self._mel.columns, self.fps
    first = self._next
    while True:
      i = self._next
      start = int(audio_lib.window_starts([i], fps)[0])
      if (start + audio_lib.MEL_WINDOW > n_cols or frame_sample(i + 1, fps) > n
          or i >= audio_lib.num_frames_for_audio(n, fps)):
        break
      self._next += 1
    done = np.arange(first, self._next)
    jobs = [self._job(int(i), w)
            for i, w in zip(done, self._windows(audio_lib.window_starts(done, fps)))]
    # Keep only what the next frames need.
    keep = min(max(int(audio_lib.window_starts([self._next], fps)[0]) - self._before, 0),
               n_cols)
    self._cols, self._col0 = self._cols[:, keep - self._col0:], keep
    keep = min(frame_sample(self._next, fps), n)
    self._wav, self._wav0 = self._wav[keep - self._wav0:], keep
    return self._lip_stage(jobs)

  def _finish(self) -> list[_Job]:
    """Ends the utterance: its remaining frames, with the offline path's
    windows (the end's padding, windows clamped to the mel's end)."""
    n = self._mel.samples
    self._cols = np.concatenate([self._cols, self._mel.finish()], axis=1)
    jobs = []
    if n:
      n_out = audio_lib.num_frames_for_audio(n, self.fps)
      rest = np.arange(self._next, n_out)
      if self._lips is not None:  # contexts run into the silence past the end, as offline
        windows = self._windows(audio_lib.window_starts(rest, self.fps))
      elif self._col0 == 0:  # the whole mel is here (short utterances too)
        windows = audio_lib.mel_windows(self._cols, n_out, self.fps)[self._next:]
      else:  # windows clamped to the mel's end, as offline
        windows = self._windows(
            audio_lib.window_starts(rest, self.fps, self._col0 + self._cols.shape[1]))
      jobs = [self._job(int(i), w, n if i == n_out - 1 else None)
              for i, w in zip(rest, windows)]
    jobs = self._lip_stage(jobs, end=True)
    self._reset_utterance()
    return jobs

  def _render(self, jobs: list[_Job]) -> list[StreamFrame]:
    """Generates and pastes the faces of `jobs`, a micro-batch at a time."""
    out = []
    for k in range(0, len(jobs), self.batch_size):
      out += self._render_batch(jobs[k:k + self.batch_size])
    return out

  def _render_batch(self, jobs: list[_Job]) -> list[StreamFrame]:
    syncer, opts = self.syncer, self.syncer.options
    src = [ping_pong_index(j.index, self.source_frames) for j in jobs]
    rows = [k for k, s in enumerate(src) if self._boxes[s] is not None]
    faces, mouths = {}, {}
    if rows:
      windows = np.stack([jobs[k].window for k in rows])
      made = (syncer.generate_faces(windows, feats=self._feats) if self._feats is not None
              else syncer.generate_faces(windows, [self._crops[src[k]] for k in rows]))
      faces = dict(zip(rows, made))
      where = syncer.paste_mouths(windows)
      mouths = {} if where is None else dict(zip(rows, where))
    frames = []
    for k, job in enumerate(jobs):
      image = self.source_image(job.index)
      if k in faces:
        blending.paste(image, self._boxes[src[k]], faces[k], hard=opts.hard_paste,
                       color_match=opts.color_match, mouth=mouths.get(k))
      frames.append(StreamFrame(job.index, job.index / self.fps, image, job.audio,
                                k in faces, silence=job.silence))
    return frames

  def source_image(self, index: int) -> np.ndarray:
    """A copy of the source frame that output frame `index` shows."""
    frame = self._frames[ping_pong_index(index, self.source_frames)]
    return frame if isinstance(self._frames, SpillFile) else frame.copy()  # spill: a copy

  # --- the public, clock-free API ----------------------------------------------

  def push(self, chunk, sample_rate: int | None = None) -> list[StreamFrame]:
    """Adds a PCM chunk (see `check_chunk`) to the current utterance; returns
    the frames it completed, in order. A bad chunk raises a one-line
    InferenceError and changes nothing."""
    return self._render(self._feed(self.check_chunk(chunk, sample_rate)))

  def end(self) -> list[StreamFrame]:
    """Ends the utterance: returns its last frames (as many in all as
    `LipSyncer.run` makes for this audio) and starts a new one at frame 0."""
    return self._render(self._finish())

  def realtime(self, **kwargs) -> "RealtimeStream":
    """This session on the wall clock: see `RealtimeStream`."""
    return RealtimeStream(self, **kwargs)

  def close(self) -> None:
    """Frees the face's frames (the spill file)."""
    if isinstance(getattr(self, "_frames", None), SpillFile):
      self._frames.close()
    self._tmp.cleanup()

  def __enter__(self) -> "StreamSession":
    return self

  def __exit__(self, *exc) -> None:
    self.close()


# -----------------------------------------------------------------------------
# On the wall clock.
# -----------------------------------------------------------------------------

def _percentile(values, q: float) -> float | None:
  return float(np.percentile(values, q)) if len(values) else None


@dataclasses.dataclass
class StreamStats:
  """What a `RealtimeStream` did.

  Attributes:
    frames: frames output (dropped ones included).
    dropped: frames not generated, to keep up (the previous image repeated).
    late: generated frames output more than `max_latency` after their
      audio: a player that buffers `max_latency` shows the previous frame
      again in their slot.
    silence_frames: frames made from silence filled into gaps.
    latency_p50, latency_p95, latency_max: seconds, over generated frames.
    lookahead_p50: seconds of that latency spent waiting for the rest of the
      mel window (from the timestamp's sample's arrival to the window's).
    last_latency: latency of the last frame output (no drift: near p50).
    fps: generated frames a second of wall time, first to last.
    audio_seconds: audio taken in (gap fill included).
    cpu_cores: process CPU seconds per wall second (2.0 = two busy cores).
  """
  frames: int
  dropped: int
  late: int
  silence_frames: int
  latency_p50: float | None
  latency_p95: float | None
  latency_max: float | None
  lookahead_p50: float | None
  last_latency: float | None
  fps: float | None
  audio_seconds: float
  cpu_cores: float | None

  def summary(self) -> str:
    ms = lambda v: "-" if v is None else f"{1000 * v:.0f} ms"
    fps = "-" if self.fps is None else f"{self.fps:.1f}"
    cpu = "-" if self.cpu_cores is None else f"{100 * self.cpu_cores:.0f}%"
    return (f"{self.frames} frames ({self.dropped} dropped, {self.late} late, "
            f"{self.silence_frames} from gap silence) for {self.audio_seconds:.1f} s of audio; "
            f"latency p50 {ms(self.latency_p50)}, p95 {ms(self.latency_p95)}, "
            f"max {ms(self.latency_max)} (mel look-ahead p50 {ms(self.lookahead_p50)}); "
            f"last frame {ms(self.last_latency)}; {fps} frames/s generated; CPU {cpu}")


class RealtimeStream:
  """A `StreamSession` on the wall clock.

  `push` (any thread) checks a chunk, stamps its arrival and queues it; it
  never waits for the generator. `step` does what is due: takes the queued
  audio, fills a gap with silence, drops frames that can no longer be on
  time, renders one micro-batch, and returns the frames it output. `start`
  runs `step` in a worker thread and `frames()` yields its output; tests
  call `step` themselves with a fake `clock`.

  Args:
    session: the prepared `StreamSession`.
    max_latency: seconds from a frame's audio to its output after which it
      counts as late; a frame that would be is dropped instead, except the
      newest micro-batch, so a machine too slow for the frame rate still
      makes frames, at the rate it can, and the audio never waits.
    gap: once no audio has come for this long (seconds behind the wall
      clock), silence is filled in up to now, and from then on at every
      step until audio comes again: the frames keep coming, the mouth closed.
    clock: seconds, monotonic (`time.monotonic`).
    tick: the worker's longest sleep between steps (seconds).
  """

  def __init__(self, session: StreamSession, *, max_latency: float = 0.4, gap: float = 0.2,
               clock: Callable[[], float] = time.monotonic, tick: float = 0.005):
    self.session = session
    self.max_latency = float(max_latency)
    self.gap = float(gap)
    self.clock = clock
    self.tick = tick
    self._cond = threading.Condition()
    self._inbox: collections.deque = collections.deque()
    self._pending: collections.deque[_Job] = collections.deque()
    self._arrivals: collections.deque = collections.deque()  # (end sample, arrival)
    self._t0: float | None = None   # wall time of the utterance's sample 0
    self._in_gap = False
    self._fills: collections.deque = collections.deque()  # (first, end) samples of gap silence
    self._last_image: np.ndarray | None = None
    self._render_s = 0.0  # a micro-batch's render time (running average)
    self._records: list[tuple[float, float, float, bool, bool]] = []  # ref, ready, emit, dropped, silence
    self._late = 0
    self._samples = 0
    self._cpu0: float | None = None
    self._wall0: float | None = None
    self._out: queue.Queue = queue.Queue()
    self._thread: threading.Thread | None = None
    self._closed = False
    self.error: BaseException | None = None

  # --- producer side ---------------------------------------------------------

  def push(self, chunk, sample_rate: int | None = None) -> None:
    """Queues a PCM chunk, stamped with its arrival; a bad chunk raises a
    one-line InferenceError and the stream goes on."""
    wav = self.session.check_chunk(chunk, sample_rate)
    with self._cond:
      self._inbox.append((wav, self.clock()))
      self._cond.notify()

  def end(self) -> None:
    """Ends the utterance: its last frames follow, the next audio starts a
    new one at frame 0."""
    with self._cond:
      self._inbox.append((None, self.clock()))
      self._cond.notify()

  # --- the engine --------------------------------------------------------------

  def _take(self, wav: np.ndarray | None, arrival: float, silence: bool = False) -> None:
    s = self.session
    if wav is None:  # end of the utterance
      total = s.samples
      jobs = s._finish()  # pylint: disable=protected-access
    else:
      if silence:  # one run of filled samples, or a longer one
        first = s.samples
        if self._fills and self._fills[-1][1] == first:
          first = self._fills.pop()[0]
        self._fills.append((first, s.samples + len(wav)))
      if self._t0 is None:
        self._t0 = arrival - len(wav) / SAMPLE_RATE
        self._arrivals.clear()
        if self._cpu0 is None:
          self._cpu0, self._wall0 = _cpu_seconds(), arrival
      self._in_gap = silence
      self._samples += len(wav)
      jobs = s._feed(wav)  # pylint: disable=protected-access
      total = s.samples
      self._arrivals.append((total, arrival))
    # The windows were complete when this chunk had arrived and was due.
    ready = arrival if self._t0 is None else max(arrival, self._t0 + total / SAMPLE_RATE)
    for job in jobs:
      job.ready, job.ref = ready, self._ref(job.sample)
      job.silence = self._in_fill(job.sample, job.sample + len(job.audio))
      self._pending.append(job)
    if wav is None:
      self._t0, self._in_gap = None, False
      self._fills.clear()

  def _in_fill(self, first: int, end: int) -> bool:
    """Whether samples [first, end) are all filled-in silence."""
    while self._fills and self._fills[0][1] <= first:
      self._fills.popleft()
    return bool(self._fills) and self._fills[0][0] <= first and end <= self._fills[0][1]

  def _ref(self, sample: int) -> float:
    """When `sample` had arrived and was due at real-time pace."""
    while len(self._arrivals) > 1 and self._arrivals[0][0] <= sample:
      self._arrivals.popleft()
    arrived = self._arrivals[0][1]
    return max(arrived, self._t0 + sample / SAMPLE_RATE)

  def _fill_gap(self, now: float) -> None:
    if self._t0 is None or self._closed:
      return
    behind = now - (self._t0 + self.session.samples / SAMPLE_RATE)
    if behind > self.gap or (self._in_gap and behind > 0):
      n = int(behind * SAMPLE_RATE)
      if n > 0:
        self._take(np.zeros(n, np.float32), now, silence=True)

  def _emit(self, frame: StreamFrame, job: _Job, emit: float) -> StreamFrame:
    frame.latency = emit - job.ref
    self._records.append((job.ref, job.ready, emit, frame.dropped, frame.silence))
    if not frame.dropped:
      self._last_image = frame.image
      self._late += frame.latency > self.max_latency
    return frame

  def step(self) -> list[StreamFrame]:
    """One round of the engine (see the class); returns the frames output."""
    with self._cond:
      inbox = list(self._inbox)
      self._inbox.clear()
    for wav, arrival in inbox:
      self._take(wav, arrival)
    now = self.clock()
    self._fill_gap(now)
    out = []
    bs = self.session.batch_size
    # Drop what cannot be on time any more, but never the newest micro-batch.
    while (len(self._pending) > bs
           and now + self._render_s > self._pending[0].ref + self.max_latency):
      job = self._pending.popleft()
      image = (self._last_image if self._last_image is not None
               else self.session.source_image(job.index))
      out.append(self._emit(StreamFrame(job.index, job.index / self.session.fps, image,
                                        job.audio, False, dropped=True,
                                        silence=job.silence), job, now))
    if self._pending:
      jobs = [self._pending.popleft() for _ in range(min(bs, len(self._pending)))]
      t = self.clock()
      frames = self.session._render(jobs)  # pylint: disable=protected-access
      emit = self.clock()
      self._render_s = (emit - t) if not self._render_s else 0.8 * self._render_s + 0.2 * (emit - t)
      out += [self._emit(f, j, emit) for f, j in zip(frames, jobs)]
    return out

  @property
  def idle(self) -> bool:
    """Nothing queued and no frame waiting to be made."""
    with self._cond:
      return not self._inbox and not self._pending

  # --- the worker thread -------------------------------------------------------

  def start(self) -> "RealtimeStream":
    """Runs the engine in a worker thread; read its output with `frames()`."""
    def work():
      try:
        while not (self._closed and self.idle):
          frames = self.step()
          for f in frames:
            self._out.put(f)
          if not frames:
            with self._cond:
              if not self._inbox and not self._closed:
                self._cond.wait(self.tick)
      except BaseException as e:  # re-raised by frames()
        self.error = e
      finally:
        self._out.put(None)

    self._thread = threading.Thread(target=work, name="lipsync-stream", daemon=True)
    self._thread.start()
    return self

  def frames(self) -> Iterator[StreamFrame]:
    """The worker's frames, in order, until `close` and all are out."""
    while (frame := self._out.get()) is not None:
      yield frame
    if self.error is not None:
      raise self.error

  def close(self) -> None:
    """Lets the worker finish what is queued (call `end` first to get an
    utterance's last frames), then stops it."""
    with self._cond:
      self._closed = True
      self._cond.notify()
    if self._thread is not None and threading.current_thread() is not self._thread:
      self._thread.join()

  def stats(self) -> StreamStats:
    recs = self._records
    made = [r for r in recs if not r[3]]
    lat = [e - ref for ref, _, e, _, _ in made]
    look = [ready - ref for ref, ready, _, _, _ in made]
    fps = None
    if len(made) > 1 and made[-1][2] > made[0][2]:
      fps = (len(made) - 1) / (made[-1][2] - made[0][2])
    cpu = None
    if self._cpu0 is not None and recs and recs[-1][2] > self._wall0:
      cpu = (_cpu_seconds() - self._cpu0) / (recs[-1][2] - self._wall0)
    return StreamStats(
        frames=len(recs), dropped=sum(r[3] for r in recs), late=self._late,
        silence_frames=sum(r[4] for r in recs), latency_p50=_percentile(lat, 50),
        latency_p95=_percentile(lat, 95), latency_max=max(lat) if lat else None,
        lookahead_p50=_percentile(look, 50),
        last_latency=recs[-1][2] - recs[-1][0] if recs else None, fps=fps,
        audio_seconds=self._samples / SAMPLE_RATE, cpu_cores=cpu)


def _cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


# -----------------------------------------------------------------------------
# Feeding audio at real-time pace (infer.py --stream, bench/bench_stream.py).
# -----------------------------------------------------------------------------

def wav_chunks(wav: np.ndarray, chunk: int) -> Iterator[np.ndarray]:
  """`(n,)` samples in pieces of `chunk` (the last one shorter)."""
  for k in range(0, len(wav), chunk):
    yield wav[k:k + chunk]


def pcm_chunks(stream, chunk: int, channels: int = 1) -> Iterator[np.ndarray]:
  """Raw s16le PCM from a binary file object (stdin), up to `chunk` samples
  at a time, as they come: `(n, channels)` int16. A trailing partial sample
  is ignored."""
  size = 2 * channels
  read = getattr(stream, "read1", stream.read)  # a pipe: what is there, no waiting for more
  rest = b""
  while data := read(chunk * size - len(rest)):
    data = rest + data
    whole = len(data) // size * size
    rest = data[whole:]
    if whole:
      yield np.frombuffer(data[:whole], "<i2").reshape(-1, channels)


class Feeder(threading.Thread):
  """Pushes chunks into a `RealtimeStream` as a microphone would: chunk k
  once its last sample is due at `pace` x real time (`pace` 0: as they
  come), then ends the utterance and closes the stream. `stop()` ends it
  early; an error is kept in `error` (and ends the stream too)."""

  def __init__(self, rt: RealtimeStream, chunks, pace: float = 1.0):
    super().__init__(name="lipsync-feeder", daemon=True)
    self.rt, self.chunks, self.pace = rt, chunks, float(pace)
    self._stop_event = threading.Event()
    self.error: BaseException | None = None

  def stop(self) -> None:
    self._stop_event.set()

  def run(self) -> None:
    t0, pos = time.monotonic(), 0
    try:
      for chunk in self.chunks:
        pos += len(chunk)
        if self.pace > 0:
          wait = t0 + pos / SAMPLE_RATE / self.pace - time.monotonic()
          if self._stop_event.wait(max(0.0, wait)):
            break
        elif self._stop_event.is_set():
          break
        self.rt.push(chunk)
    except BaseException as e:  # re-raised by whoever joins
      self.error = e
    finally:
      self.rt.end()
      self.rt.close()
