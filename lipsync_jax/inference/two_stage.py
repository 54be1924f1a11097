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
  source frame it is drawn on give its lips, smoothed over +-1 frame. They
  are the generator's per-frame input (`_frame_inputs`).
* Stage 2, jitted per batch: faces = lip_renderer(lips, masked crop + crop).
"""

from __future__ import annotations

import os

import numpy as np

from lipsync_jax.inference.options import InferenceError, InferenceOptions, InputNotFoundError
from lipsync_jax.inference.sources import FrameSource, PreparedJob, crop_face, ping_pong_index
from lipsync_jax.inference.syncer import (FaceTrack, LipSyncer, faces_to_u8, masked_faces,
                                          model_variables, pad_to_batch)
from lipsync_jax.models import audio_to_lips

NUM_POINTS = audio_to_lips.NUM_POINTS
LIP_SMOOTHING = True


def load_syncer(path: str | os.PathLike = "builtin", options: InferenceOptions | None = None,
                **overrides) -> LipSyncer:
  """The syncer of any checkpoint: "builtin" (the shipped two-stage model)
  or a two-stage model directory -> `TwoStageSyncer`; an exported `.onnx`
  -> `LipSyncer.from_onnx`; anything else `LipSyncer.from_checkpoint`."""
  from lipsync_jax import two_stage  # pylint: disable=import-outside-toplevel
  path = os.fspath(path)
  if path == "builtin" or two_stage.is_two_stage(path):
    return TwoStageSyncer.from_two_stage(path, options, **overrides)
  if os.path.isfile(path) and path.lower().endswith(".onnx"):
    return LipSyncer.from_onnx(path, options, **overrides)
  return LipSyncer.from_checkpoint(path, options, **overrides)


class TwoStageSyncer(LipSyncer):
  """`LipSyncer` for a two-stage model (`lipsync_jax.two_stage`); build it
  with `load_syncer(path)` or `TwoStageSyncer.from_two_stage(path)`."""
  # A frame needs a wider mel context and the face's lips: no streaming yet.
  frames_from_mel_windows = False

  def __init__(self, model, options: InferenceOptions | None = None, **overrides):
    self.model = model
    self.context = model.context
    self._mesh = None
    super().__init__(model.renderer_module, {}, "two_stage", options, **overrides)

  @classmethod
  def from_two_stage(cls, path: str | os.PathLike, options: InferenceOptions | None = None,
                     **overrides) -> "TwoStageSyncer":
    from lipsync_jax import two_stage  # pylint: disable=import-outside-toplevel
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
    self.lips_variables = model_variables(model.lips_variables)
    self.reuses_face_features = False
    stats = self._stats

    def generate(variables, rows, crops):
      """rows (N, 80) each frame's lips (stage 1, `_frame_inputs`), crops
      (N, S, S, 3) u8 -> (N, S, S, 3) u8."""
      stats["compilations"] += 1
      lips = rows.reshape(rows.shape[0], NUM_POINTS, 2)
      out = model.renderer_module.apply(variables["renderer"], lips, masked_faces(crops),
                                        train=False)
      return faces_to_u8(out)

    self.predict_lips = jax.jit(lambda v, mel, neutral: model.lips_module.apply(v, mel, neutral))
    self.generate_batch = jax.jit(
        generate, in_shardings=(replicated, self.data_sharding, self.data_sharding),
        out_shardings=self.data_sharding)

  def warmup(self) -> None:
    """Compiles the renderer for the fixed batch shape."""
    import jax
    s = self.face_size
    jax.block_until_ready(self.generate_batch(
        self.variables, np.full((self.batch_size, 2 * NUM_POINTS), 0.5, np.float32),
        np.zeros((self.batch_size, s, s, 3), np.uint8)))

  def generate_faces(self, windows: np.ndarray, crops=None, feats=None) -> np.ndarray:
    """Faces for n <= batch_size frames: `windows` are the frames' lips
    (n, 80) from `_frame_inputs`, `crops` (n, S, S, 3) uint8."""
    del feats
    out = self.generate_batch(self.variables,
                              pad_to_batch(np.asarray(windows, np.float32), self.batch_size),
                              pad_to_batch(np.stack(crops), self.batch_size))
    return np.asarray(out)[:len(windows)]

  # --- the face's own lips ---------------------------------------------------

  @property
  def face_mesh(self):
    if self._mesh is None:
      from lipsync_jax.vision import face_mesh  # pylint: disable=import-outside-toplevel
      self._mesh = face_mesh.FaceMesh()
    return self._mesh

  def source_lips(self, source: FrameSource, face_track: FaceTrack, path: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """FaceMesh lips of every source frame's face crop: (lips (n, 40, 2),
    valid (n,)). Raises a one-line InferenceError when no frame has lips."""
    from lipsync_jax.vision import lip_landmarks  # pylint: disable=import-outside-toplevel
    crops, rows = [], []
    for src, frame in enumerate(source.decode()):
      if face_track.has_face(src):
        _, crop = crop_face(frame, face_track.box(src), self.face_size)
        if crop is not None:
          crops.append(crop)
          rows.append(src)
    n = max(len(rows) and rows[-1] + 1, face_track.n_source or 0, 1)
    lips = np.zeros((n, NUM_POINTS, 2), np.float32)
    valid = np.zeros((n,), bool)
    if crops:
      pts, presence = lip_landmarks.crop_lips(self.face_mesh, np.stack(crops))
      lips[rows] = pts
      valid[rows] = presence >= lip_landmarks.MIN_PRESENCE
    if not valid.any():
      raise InferenceError(f"FaceMesh finds no lips on the face in {path}: the two-stage "
                           "model needs a visible mouth (a frontal face, mouth not covered)")
    return lips, valid

  def lips_for(self, mel: np.ndarray, neutral: np.ndarray, fps: float) -> np.ndarray:
    """Stage 1 over a whole utterance: (80, M) mel + (n, 40, 2) neutral lips
    of the n output frames -> (n, 40, 2) lips, smoothed over time
    (`LIP_SMOOTHING`: a 3-tap [1, 2, 1] / 4 filter, symmetric, so it moves no
    lip in time; per-frame predictions jitter by a fraction of a pixel)."""
    from lipsync_jax.data import sources  # pylint: disable=import-outside-toplevel
    n = len(neutral)
    starts = sources.mel_starts(np.arange(n), fps)
    ctx = audio_to_lips.mel_context(mel, starts, self.context)
    chunk = 256   # fixed shapes: one compilation for every length
    out = np.empty((n, NUM_POINTS, 2), np.float32)
    for i in range(0, n, chunk):
      k = min(chunk, n - i)
      out[i:i + k] = np.asarray(self.predict_lips(
          self.lips_variables, pad_to_batch(ctx[i:i + k], chunk),
          pad_to_batch(np.asarray(neutral[i:i + k], np.float32), chunk)))[:k]
    if LIP_SMOOTHING and n > 2:
      padded = np.concatenate([out[:1], out, out[-1:]])
      out = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
    return out

  def _frame_inputs(self, job: PreparedJob, source: FrameSource,
                    face_track: FaceTrack) -> np.ndarray:
    """(n_out, 80) rows: each output frame's lips (stage 1), drawn on the
    neutral mouth of the source frame it is pasted into."""
    lips, valid = self.source_lips(source, face_track, job.face.path)
    neutral = audio_to_lips.neutral_lips(lips, valid)
    n_out, n_src = job.frames, len(neutral)
    src = np.array([0 if job.face.image is not None else
                    (j if j < n_src else ping_pong_index(j, n_src)) for j in range(n_out)])
    if job.mel is None:
      raise InferenceError("internal error: the job has no mel (prepare() sets it)")
    out = self.lips_for(job.mel, neutral[np.minimum(src, n_src - 1)], job.face.fps)
    return out.reshape(n_out, -1).astype(np.float32)
