"""`TwoStageSyncer`: the two-stage model (audio -> lips -> renderer) in
`infer.py`'s pipeline.

Everything but the generator is `LipSyncer`'s: decoding, face boxes and
their cache, the threads, pasting and encoding. What differs:

* Before generating, the face input's own lips are measured: FaceMesh on
  every source frame's face crop (`lip_landmarks.crop_lips`, the crop the
  renderer sees). They give the mouth at rest (`audio_to_lips.rest_shape`:
  its most closed frames, so silence draws a closed mouth) and where the
  mouth sits in each frame (`audio_to_lips.anchor_track`: the lip centroid
  smoothed over +-0.5 s, following the head but not the jaw). A face whose
  lips FaceMesh cannot find is a one-line error.
* Stage 1 runs over the whole utterance first (`lips_for`): each output
  frame's mel context (80 x C columns around it) and the neutral lips of the
  source frame it is drawn on give its lips (smoothed over +-1 frame with
  `options.lip_smoothing`). They are the generator's per-frame input
  (`_frame_inputs`).
* Stage 2, jitted per batch: faces = lip_renderer(lips, masked crop +
  reference). The reference is each frame's nearest closed-mouth frame of
  the face input (`options.reference` "rest", `audio_to_lips.rest_frames`),
  so the input's own mouth movements do not show through the new ones;
  "frame" gives each frame itself, as Wav2Lip does.
* With `options.adapt_steps`, the renderer is first fine-tuned on the face
  input's own frames, lips and references (`face_adaptation`); the adapted
  weights are kept with the face's references, under its key.
* Stage 1's motion about the neutral mouth is scaled by the model's lip gain
  (`two_stage.calibrate`): stage 1 and the renderer each damp it. The model
  keeps one gain per `options.lip_smoothing` mode.

Streaming (`LipSyncer.stream`, `inference.stream`): the face's neutral lips
are measured once, when the stream prepares its face (`stream_lips`), and
`StreamLips` runs stage 1 on each frame as soon as its mel context is
complete (the same look-ahead as Wav2Lip's window), through the same
`predict_lips` and `LipSmoother` as `lips_for`, so a stream gives the
offline lips. With `options.lip_smoothing` a frame's lips are final only
once the next frame's are known: streaming then adds one frame (40 ms at 25
fps) to the look-ahead.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import itertools
import os
from typing import Any, NamedTuple

import numpy as np

from lipsync_jax.inference.options import InferenceError, InferenceOptions, InputNotFoundError
from lipsync_jax.inference.sources import FrameSource, PreparedJob, crop_face, ping_pong_index
from lipsync_jax.inference.syncer import (FaceTrack, LipSyncer, faces_to_u8, masked_faces,
                                          model_variables, pad_to_batch)
from lipsync_jax.models import audio_to_lips

NUM_POINTS = audio_to_lips.NUM_POINTS
# A frame's row: the lips to draw, the input frame's own lips (where the
# mouth paste must cover), then its reference's key and slot.
ROW = 4 * NUM_POINTS + 2
FRAME_REFERENCE = -1       # the key of "each frame is its own reference"
MAX_REFERENCES = 4         # face inputs whose rest crops (and adapted weights) are kept


class FaceEntry(NamedTuple):
  """What the renderer keeps of one face input, under its key: the crops of
  its references (None: each frame is its own) and its adapted variables
  (None: the model's own)."""
  references: np.ndarray | None
  variables: Any = None


def load_syncer(path: str | os.PathLike = "builtin", options: InferenceOptions | None = None,
                **overrides) -> LipSyncer:
  """The syncer of any checkpoint: "builtin" (the shipped two-stage model)
  or a two-stage model directory -> `TwoStageSyncer`; an exported `.onnx`
  -> `LipSyncer.from_onnx`; anything else `LipSyncer.from_checkpoint`."""
  from lipsync_jax import two_stage_model as two_stage  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  if path == "builtin" or two_stage.is_two_stage(path):
    return TwoStageSyncer.from_two_stage(path, options, **overrides)
  if os.path.isfile(path) and path.lower().endswith(".onnx"):
    return LipSyncer.from_onnx(path, options, **overrides)
  return LipSyncer.from_checkpoint(path, options, **overrides)


class LipSmoother:
  """The [1, 2, 1] / 4 smoothing of a lip track over time
  (`InferenceOptions.lip_smoothing`), fed in pieces: the first and last
  frames are repeated past the ends.

  Symmetric, so it moves no lip in time. It is off by default: it takes out
  the fast frame-to-frame motion along with stage 1's sub-pixel jitter, and
  the renderer draws that motion (docs/two_stage.md, "The lips unsmoothed").
  A frame's smoothed lips need the next frame's: `push` returns all but the
  newest frame pushed so far, `finish` that one. The whole track in one
  `push` + `finish` is `lips_for`'s smoothing; the same track in any pieces
  gives the same numbers. With `enabled` False, `push` returns its frames
  as they are, at once.
  """

  def __init__(self, enabled: bool = True):
    self.enabled = bool(enabled)
    self._tail: np.ndarray | None = None   # (<= 2, 40, 2): the last frames pushed

  def push(self, lips: np.ndarray) -> np.ndarray:
    """(k, 40, 2) the next frames' lips -> (m, 40, 2) smoothed lips of the
    frames now final (m = k - 1 on the first push, k after it)."""
    lips = np.asarray(lips, np.float32)
    if not self.enabled or not len(lips):
      return lips
    # The first push: frame -1 repeats frame 0.
    seq = np.concatenate([lips[:1] if self._tail is None else self._tail, lips])
    self._tail = seq[-2:]
    return _smooth(seq)

  def finish(self) -> np.ndarray:
    """(0 or 1, 40, 2): the last frame's smoothed lips (frame n repeats
    frame n - 1); starts a new track."""
    if self._tail is None or not self.enabled:
      self._tail = None
      return np.zeros((0, NUM_POINTS, 2), np.float32)
    seq = np.concatenate([self._tail, self._tail[-1:]])
    self._tail = None
    return _smooth(seq)


def _smooth(seq: np.ndarray) -> np.ndarray:
  """(k + 2, ...) -> (k, ...): 0.25 x[i - 1] + 0.5 x[i] + 0.25 x[i + 1]."""
  return 0.25 * seq[:-2] + 0.5 * seq[1:-1] + 0.25 * seq[2:]


def renderer_rows(lips: np.ndarray, key: int, slots, own: np.ndarray | None = None
                  ) -> np.ndarray:
  """(n, 40, 2) lips to draw on n frames, their references' key and (n,)
  slots, and (n, 40, 2) the frames' own lips (None: the lips drawn) ->
  (n, ROW) float32 rows: the lips, the own lips, the key and the slot."""
  lips = np.asarray(lips, np.float32).reshape(len(lips), -1)
  own = lips if own is None else np.asarray(own, np.float32).reshape(len(lips), -1)
  return np.concatenate([lips, own, np.full((len(lips), 1), key, np.float32),
                         np.asarray(slots, np.float32).reshape(-1, 1)], axis=1)


def own_lips(lips: np.ndarray, valid: np.ndarray, neutral: np.ndarray) -> np.ndarray:
  """(n, 40, 2) FaceMesh lips of a face input's frames, (n,) their validity
  and (n, 40, 2) neutral lips -> the frames' own lips, the neutral ones
  where FaceMesh found none."""
  return np.where(np.asarray(valid, bool)[:, None, None], lips, neutral).astype(np.float32)


def frame_neutral(neutral: np.ndarray, frames) -> np.ndarray:
  """(n_src, 40, 2) neutral lips of the face input's frames, (k,) output
  frame indices -> (k, 40, 2): each output frame's source frame's (played
  back and forth, `ping_pong_index`; a photo's one frame)."""
  return neutral[[ping_pong_index(int(j), len(neutral)) for j in frames]]


class RecentItems(collections.OrderedDict):
  """An OrderedDict that keeps the `maxlen` items set last: setting an item
  makes it the newest (a key set again too), and the oldest beyond
  `maxlen` are dropped."""

  def __init__(self, maxlen: int):
    super().__init__()
    self.maxlen = maxlen

  def __setitem__(self, key, value) -> None:
    super().__setitem__(key, value)
    self.move_to_end(key)
    while len(self) > self.maxlen:
      self.popitem(last=False)


class AdaptationState:
  """What the copies of one `TwoStageSyncer` share of the renderer's
  adaptation: the `face_adaptation.RendererAdapter` (None until first used)
  and the adapted variables of the last MAX_REFERENCES face inputs, by
  `face_digest`."""

  def __init__(self):
    self.adapter = None
    self.adapted = RecentItems(MAX_REFERENCES)


def face_digest(crops: list, lips: np.ndarray, valid: np.ndarray, steps: int) -> str:
  """A digest of what the renderer's adaptation learns from: the face
  input's crops (S, S, 3) u8, its lips (n, P, 2), their validity (n,) and
  the step count. Equal digests give equal adapted weights."""
  h = hashlib.blake2b(digest_size=16)
  h.update(np.int64(steps).tobytes())
  h.update(np.ascontiguousarray(lips, np.float32).tobytes())
  h.update(np.ascontiguousarray(valid, bool).tobytes())
  for crop in crops:
    h.update(b"-" if crop is None else np.ascontiguousarray(crop).tobytes())
  return h.hexdigest()


class TwoStageSyncer(LipSyncer):
  """`LipSyncer` for a two-stage model (`lipsync_jax.two_stage`); build it
  with `load_syncer(path)` or `TwoStageSyncer.from_two_stage(path)`."""
  # A frame takes a wider mel context and the face's lips, not a mel window:
  # a StreamSession streams it through `stream_lips`.
  frames_from_mel_windows = False
  adapts_to_face = True

  def __init__(self, model, options: InferenceOptions | None = None, **overrides):
    self.model = model
    self.context = model.context
    self._mesh = None
    # The face inputs in use, by key (`FaceEntry`: rest crops, adapted
    # weights): a frame's row carries the key and the slot of its reference,
    # so runs and stream sessions never share mutable state.
    self._references = RecentItems(MAX_REFERENCES)
    self._reference_keys = itertools.count()
    # The renderer's adaptation (`face_adaptation`): its jitted step, built
    # on first use, and the weights it made, by the face input's content and
    # the step count. One object shared by every copy `with_options` makes,
    # so the step compiles once per model, and a face already adapted (the
    # live page's sessions, the app's repeated requests) is not adapted again.
    self._adaptation = AdaptationState()
    self.last_adaptation_losses: list = []   # each step's loss, the last face adapted
    super().__init__(model.renderer_module, {}, "two_stage", options, **overrides)

  @property
  def lip_gain(self) -> float:
    """The factor on stage 1's motion: the option's, else the model's own
    for the lips smoothed or not (`options.lip_smoothing`)."""
    gain = self.options.lip_gain
    return float(self.model.lip_gain_for(self.options.lip_smoothing) if gain is None else gain)

  @classmethod
  def from_two_stage(cls, path: str | os.PathLike, options: InferenceOptions | None = None,
                     **overrides) -> "TwoStageSyncer":
    from lipsync_jax import two_stage_model as two_stage  # pylint: disable=import-outside-toplevel
    if str(path) != "builtin" and not os.path.exists(path):
      raise InputNotFoundError(f"checkpoint not found: {path}")
    return cls(two_stage.load(path), options, **overrides)

  def _init_jax(self, module, variables) -> None:
    import jax
    del module, variables
    self.backend = "jax"
    model = self.model
    self.face_size = model.face_size
    replicated = self._place_on_devices({"renderer": model_variables(model.renderer_variables)},
                                        1)
    self._replicated = replicated
    self.lips_variables = model_variables(model.lips_variables)
    self.reuses_face_features = False
    stats = self._stats

    def generate(variables, lips, crops, references):
      """lips (N, 80) each frame's lips (stage 1, `_frame_inputs`), crops
      and their references (N, S, S, 3) u8 -> (N, S, S, 3) u8."""
      stats["compilations"] += 1
      lips = lips.reshape(lips.shape[0], NUM_POINTS, 2)
      out = model.renderer_module.apply(variables["renderer"], lips,
                                        masked_faces(crops, references), train=False)
      return faces_to_u8(out)

    self.predict_lips_batch = jax.jit(
        lambda v, mel, neutral: model.lips_module.apply(v, mel, neutral))
    self.generate_batch = jax.jit(
        generate, in_shardings=(replicated, self.data_sharding, self.data_sharding,
                                self.data_sharding),
        out_shardings=self.data_sharding)

  def warmup(self) -> None:
    """Compiles the renderer for the fixed batch shape."""
    import jax
    s = self.face_size
    crops = np.zeros((self.batch_size, s, s, 3), np.uint8)
    jax.block_until_ready(self.generate_batch(
        self.variables, np.full((self.batch_size, 2 * NUM_POINTS), 0.5, np.float32),
        crops, crops))

  def generate_faces(self, windows: np.ndarray, crops=None, feats=None) -> np.ndarray:
    """Faces for n <= batch_size frames: `windows` are the frames' rows
    (n, ROW) from `_frame_inputs` or `StreamLips` (lips, then their
    references' key and slot, `references`), `crops` (n, S, S, 3) uint8."""
    del feats
    windows = np.asarray(windows, np.float32)
    lips = windows[:, :2 * NUM_POINTS]
    crops = np.stack(crops)
    keys = {int(k) for k in windows[:, -2]}
    if len(keys) != 1:
      raise InferenceError(f"internal error: one batch holds frames of {len(keys)} face inputs")
    key = keys.pop()
    entry = FaceEntry(None) if key == FRAME_REFERENCE else self._references[key]
    references = (crops if entry.references is None else
                  entry.references[windows[:, -1].astype(np.int64)])
    out = self.generate_batch(self.variables if entry.variables is None else entry.variables,
                              pad_to_batch(lips, self.batch_size),
                              pad_to_batch(crops, self.batch_size),
                              pad_to_batch(np.asarray(references), self.batch_size))
    return np.asarray(out)[:len(windows)]

  def paste_mouths(self, windows: np.ndarray) -> np.ndarray | None:
    """(n, ROW) rows -> (n, 80, 2): for each frame, the lips drawn and the
    frame's own, which the paste must cover (`blending.mouth_mask`); None
    when `options.mouth_paste` is off."""
    if not self.options.mouth_paste or self.options.hard_paste:
      return None
    return np.asarray(windows, np.float32)[:, :4 * NUM_POINTS].reshape(len(windows), -1, 2)

  def references(self, crops: list, lips: np.ndarray, valid: np.ndarray
                 ) -> tuple[int, np.ndarray]:
    """The renderer's references for a face input's frames
    (`options.reference`), and its weights: (key, slots (n_src,)). "rest":
    each frame's nearest closed-mouth frame (`audio_to_lips.rest_frames`),
    whose crops are kept under a new key, slot s of frame j being its crop;
    "frame": each frame its own (slots zeros; the key FRAME_REFERENCE
    unless the renderer is adapted). With `options.adapt_steps` the
    renderer adapted to these frames (`face_adaptation`) is kept under the
    same key."""
    variables = self.adapted_variables(crops, lips, valid)
    if self.options.reference == "frame":
      stored, slots = None, np.zeros(len(lips), np.int64)
      if variables is None:
        return FRAME_REFERENCE, slots
    else:
      used, slots = np.unique(audio_to_lips.rest_frames(lips, valid), return_inverse=True)
      stored = np.stack([np.asarray(crops[k], np.uint8) for k in used])
    key = next(self._reference_keys)
    self._references[key] = FaceEntry(stored, variables)
    return key, slots.reshape(-1)

  def adapted_variables(self, crops: list, lips: np.ndarray, valid: np.ndarray):
    """The renderer's variables fine-tuned on a face input's frames for
    `options.adapt_steps` (`face_adaptation.RendererAdapter`), placed as the
    model's; None when the option is 0. A face input already adapted for as
    many steps (the same crops and lips) gets the weights made then."""
    if not self.options.adapt_steps:
      return None
    import jax  # pylint: disable=import-outside-toplevel
    from lipsync_jax.inference import face_adaptation  # pylint: disable=import-outside-toplevel
    if int(np.sum(valid)) < face_adaptation.MIN_FRAMES:
      raise InferenceError(
          "adapting the renderer needs a face video with at least "
          f"{face_adaptation.MIN_FRAMES} frames of visible lips, got {int(np.sum(valid))} "
          "(a photo cannot teach it: drop --adapt-steps)")
    steps = int(self.options.adapt_steps)
    state = self._adaptation
    key = face_digest(crops, lips, valid, steps)
    adapted = state.adapted.get(key)
    if adapted is None:
      if state.adapter is None:
        state.adapter = face_adaptation.RendererAdapter(self.model.renderer_module,
                                                        face_adaptation.AdaptationConfig())
      adapted, self.last_adaptation_losses = state.adapter(
          self.variables["renderer"], crops, lips, valid, steps=steps, progress=True)
    state.adapted[key] = adapted   # kept, or made the newest again
    return jax.device_put({"renderer": adapted}, self._replicated)

  # --- the face's own lips ---------------------------------------------------

  @property
  def face_mesh(self):
    if self._mesh is None:
      from lipsync_jax.vision import face_mesh  # pylint: disable=import-outside-toplevel
      self._mesh = face_mesh.FaceMesh()
    return self._mesh

  def source_crops(self, source: FrameSource, face_track: FaceTrack) -> list:
    """Every source frame's face crop ((S, S, 3) uint8; None: no face)."""
    crops = [crop_face(frame, face_track.box(src), self.face_size)[1]
             if face_track.has_face(src) else None
             for src, frame in enumerate(source.decode())]
    return crops + [None] * ((face_track.n_source or 0) - len(crops))

  def face_lips(self, crops: list, path: str) -> tuple[np.ndarray, np.ndarray]:
    """FaceMesh lips of a face input's frames from their face crops
    ((S, S, 3) uint8, None where the frame has no face): (lips (n, 40, 2),
    valid (n,)), n = max(len(crops), 1). Raises a one-line InferenceError
    when no frame has lips."""
    from lipsync_jax.vision import lip_landmarks  # pylint: disable=import-outside-toplevel
    rows = [k for k, c in enumerate(crops) if c is not None]
    n = max(len(crops), 1)
    lips = np.zeros((n, NUM_POINTS, 2), np.float32)
    valid = np.zeros((n,), bool)
    if rows:
      pts, presence = lip_landmarks.crop_lips(self.face_mesh, np.stack([crops[k] for k in rows]))
      lips[rows] = pts
      valid[rows] = presence >= lip_landmarks.MIN_PRESENCE
    if not valid.any():
      raise InferenceError(f"FaceMesh finds no lips on the face in {path}: the two-stage "
                           "model needs a visible mouth (a frontal face, mouth not covered)")
    return lips, valid

  def predict_lips(self, ctx: np.ndarray, neutral: np.ndarray, chunk: int) -> np.ndarray:
    """Stage 1, unsmoothed: (n, 80, C, 1) mel contexts + (n, 40, 2) neutral
    lips -> (n, 40, 2) lips, `chunk` frames a call (fixed shapes: one
    compilation per chunk size), their motion about the neutral mouth scaled
    by `lip_gain`."""
    n = len(ctx)
    neutral = np.asarray(neutral, np.float32)
    out = np.empty((n, NUM_POINTS, 2), np.float32)
    for i in range(0, n, chunk):
      k = min(chunk, n - i)
      out[i:i + k] = np.asarray(self.predict_lips_batch(
          self.lips_variables, pad_to_batch(np.asarray(ctx[i:i + k], np.float32), chunk),
          pad_to_batch(neutral[i:i + k], chunk)))[:k]
    # Stage 1 regresses to many speakers' mean and damps the motion (about
    # half the natural amplitude), and the renderer damps it again: the gain
    # is the model's measured correction (`two_stage.calibrate`).
    return neutral + np.float32(self.lip_gain) * (out - neutral)

  def lips_for(self, mel: np.ndarray, neutral: np.ndarray, fps: float,
               first_frame: int = 0) -> np.ndarray:
    """Stage 1 over a whole utterance: (80, M) mel + (n, 40, 2) neutral lips
    of the n output frames (frames first_frame.. of the mel's timeline) ->
    (n, 40, 2) lips (smoothed over time with `options.lip_smoothing`,
    `LipSmoother`)."""
    from lipsync_jax.data import sources  # pylint: disable=import-outside-toplevel
    starts = sources.mel_starts(first_frame + np.arange(len(neutral)), fps)
    ctx = audio_to_lips.mel_context(mel, starts, self.context)
    smoother = LipSmoother(self.options.lip_smoothing)
    lips = self.predict_lips(ctx, neutral, 256)
    return np.concatenate([smoother.push(lips), smoother.finish()])

  def _frame_inputs(self, job: PreparedJob, source: FrameSource,
                    face_track: FaceTrack) -> np.ndarray:
    """(n_out, ROW) rows: each output frame's lips (stage 1), drawn on the
    neutral mouth of the source frame it is pasted into, then the key and
    slot of that source frame's reference (`references`)."""
    crops = self.source_crops(source, face_track)
    lips, valid = self.face_lips(crops, job.face.path)
    # The renderer's adaptation, when asked for, is timed as its own stage.
    with job.timer("adapt") if self.options.adapt_steps else contextlib.nullcontext():
      key, slots = self.references(crops, lips, valid)
    del crops
    neutral = audio_to_lips.neutral_lips(lips, valid)
    own = own_lips(lips, valid, neutral)
    if job.face.image is not None:
      neutral, own, slots = neutral[:1], own[:1], slots[:1]
    if job.mel is None:
      raise InferenceError("internal error: the job has no mel (prepare() sets it)")
    src = [ping_pong_index(j, len(neutral)) for j in range(job.frames)]
    return renderer_rows(self.lips_for(job.mel, neutral[src], job.face.fps), key, slots[src],
                         own[src])

  # --- streaming -------------------------------------------------------------

  def stream_lips(self, crops: list, path: str) -> "StreamLips":
    """Stage 1 for a `StreamSession` on a face input whose frames' face
    crops are `crops` ((S, S, 3) uint8, None: no face): measures the face's
    neutral lips once (a one-line InferenceError if it has none)."""
    lips, valid = self.face_lips(crops, path)
    neutral = audio_to_lips.neutral_lips(lips, valid)
    return StreamLips(self, neutral, *self.references(crops, lips, valid),
                      own=own_lips(lips, valid, neutral))


class StreamLips:
  """Stage 1 of the two-stage model for a `StreamSession`: mel contexts in,
  the renderer's per-frame lips out, as `TwoStageSyncer.lips_for` makes them.

  The session hands it each frame once the frame's mel context, columns
  [s - `before`, s - `before` + `columns`) of the utterance's mel around
  the frame's Wav2Lip window start s, is complete (`context`): that is the
  Wav2Lip window's own look-ahead. `push` runs stage 1 on those frames
  (micro-batches of the syncer's batch size) and returns their lips at once;
  with `options.lip_smoothing` it smooths them (`LipSmoother`), so it
  returns each frame one frame later, with its final lips, and `finish`
  returns the utterance's last one.

  Attributes:
    before, columns: the mel context (16 and 32 columns).
    neutral: (n_src, 40, 2) the face input's neutral lips per frame.
    key, slots: the renderer's references for this face input's frames
      (`TwoStageSyncer.references`), appended to each frame's row.
    own: (n_src, 40, 2) the face input's own lips per frame (where the
      mouth paste must cover; default: the neutral lips).
  """

  def __init__(self, syncer: TwoStageSyncer, neutral: np.ndarray,
               key: int = FRAME_REFERENCE, slots: np.ndarray | None = None,
               own: np.ndarray | None = None):
    self.syncer = syncer
    self.neutral = np.asarray(neutral, np.float32)
    self.own = self.neutral if own is None else np.asarray(own, np.float32)
    self.key = key
    self.slots = np.zeros(len(self.neutral), np.int64) if slots is None else slots
    self.before = audio_to_lips.CONTEXT_BEFORE
    self.columns = syncer.context
    self._smoother = LipSmoother(syncer.options.lip_smoothing)
    self._held: list = []   # the frames pushed whose lips are not final yet

  def context(self, cols: np.ndarray, starts) -> np.ndarray:
    """(80, M) mel columns, (k,) window starts within them -> (k, 80, C)
    contexts; columns outside `cols` are silence (`audio_to_lips.mel_context`)."""
    return audio_to_lips.mel_context(cols, np.asarray(starts), self.columns, self.before)[..., 0]

  def warmup(self) -> np.ndarray:
    """Compiles stage 1 for the micro-batch; -> (1, 80) lips of silence on
    the first source frame, for compiling the renderer."""
    ctx = self.context(np.zeros((80, 0), np.float32), [0])
    lips = self.syncer.predict_lips(ctx[..., None], self.neutral[:1], self.syncer.batch_size)
    return self._row(lips[0], 0)[None]

  def push(self, jobs: list) -> list:
    """Jobs (`.index` the frame, `.window` its (80, C) mel context) ->
    the jobs whose lips are now final, their `.window` replaced by the
    (ROW,) row the renderer takes (lips, references' key and slot)."""
    if not jobs:
      return []
    ctx = np.stack([j.window for j in jobs])[..., None]
    lips = self.syncer.predict_lips(ctx, frame_neutral(self.neutral, [j.index for j in jobs]),
                                    self.syncer.batch_size)
    return self._release(self._smoother.push(lips), jobs)

  def finish(self) -> list:
    """The utterance's last held job, with its lips; starts a new one."""
    return self._release(self._smoother.finish(), [])

  def _release(self, lips: np.ndarray, jobs: list) -> list:
    self._held += jobs
    done, self._held = self._held[:len(lips)], self._held[len(lips):]
    for job, row in zip(done, lips):
      job.window = self._row(row, job.index)
    return done

  def _row(self, lips: np.ndarray, index: int) -> np.ndarray:
    """(40, 2) lips of output frame `index` -> its (ROW,) renderer row."""
    src = ping_pong_index(int(index), len(self.slots))
    return renderer_rows(lips[None], self.key, [self.slots[src]], self.own[src][None])[0]
