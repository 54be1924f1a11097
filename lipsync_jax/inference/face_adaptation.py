"""Adapting the two-stage renderer to one face input (`InferenceOptions.adapt_steps`).

The shipped renderer learnt many speakers' mouths at 96 px; on a face it never
saw it draws a generic mouth, its teeth and the inside of the mouth a light
pink blur. The face input itself shows how this person's lips, teeth and mouth
look: its frames, their FaceMesh lips (which inference measures anyway) and
their closed-mouth references are training pairs of exactly the renderer's
task. So before rendering, the renderer can take a few optimiser steps on
them, as a short fine-tune on the face alone:

* the loss is the `:renderer` recipe's reconstruction terms: L1 (weight
  0.97) + LPIPS (AlexNet, 0.3) on the face and L1 + LPIPS on the mouth
  alone (`losses.mouth_loss`, 1.0). The GAN term is left out: the model
  directory ships no discriminator, and a few hundred steps on one face do
  not need one;
* the references are sampled as the renderer's training sampler does: the
  nearest closed-mouth frame (`audio_to_lips.closed_frames`) 3 times in 4,
  else any frame, always at least `MIN_REFERENCE_OFFSET` frames from the
  target (the renderer must draw the mouth from the lips, not copy it);
* BatchNorm statistics stay frozen (the renderer runs in inference mode):
  batches of one face would pull them off the many speakers' statistics.

Nothing here sees the speech: the renderer still draws the lips it is
given, so adaptation changes how the mouth looks, not what it says.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

# The closest a reference may be to its target (frames): the neighbours'
# mouths are nearly the target's own.
MIN_REFERENCE_OFFSET = 3
# The fewest frames with lips a face input needs to adapt to: a photo (one
# frame) would teach the renderer to copy its reference's mouth.
MIN_FRAMES = 10


@dataclasses.dataclass(frozen=True)
class AdaptationConfig:
  """How the renderer adapts to a face (the `:renderer` recipe's weights).

  Attributes:
    steps: optimiser steps (0: no adaptation).
    learning_rate: Adam's, a tenth of the recipe's peak (the weights are
      trained; a face is a few seconds of frames).
    batch_size: frames a step.
    rest_reference: probability of the nearest closed-mouth frame as the
      reference (else any frame at least `MIN_REFERENCE_OFFSET` away).
    l1, lpips, mouth: loss weights (`losses.l1`, `losses.lpips_loss`,
      `losses.mouth_loss` with LPIPS weight 1).
    seed: the sampler's.
  """
  steps: int = 100
  learning_rate: float = 1e-4
  batch_size: int = 4
  rest_reference: float = 0.75
  l1: float = 0.97
  lpips: float = 0.3
  mouth: float = 1.0
  seed: int = 0


def sample_references(targets: np.ndarray, closed: np.ndarray, candidates: np.ndarray,
                      rng: np.random.Generator, rest_reference: float) -> np.ndarray:
  """The reference frame of each target frame.

  Args:
    targets: (B,) frame indices.
    closed: (K,) indices of the face's closed-mouth frames.
    candidates: (M,) indices of the frames that may be references (those
      with a face and lips).
    rng: the sampler's generator.
    rest_reference: probability of the nearest closed frame.
  Returns:
    (B,) int64 indices: the closed frame nearest in time with probability
    `rest_reference`, else a random candidate; each at least
    MIN_REFERENCE_OFFSET frames from its target (the farthest candidate
    when none is that far).
  """
  candidates = np.asarray(candidates, np.int64)
  closed = np.asarray(closed, np.int64)
  out = np.empty(len(targets), np.int64)
  for i, t in enumerate(np.asarray(targets, np.int64)):
    if rng.random() < rest_reference:
      pool = closed[np.abs(closed - t) >= MIN_REFERENCE_OFFSET]
      if len(pool):
        out[i] = pool[np.argmin(np.abs(pool - t))]
        continue
    dist = np.abs(candidates - t)
    far = candidates[dist >= MIN_REFERENCE_OFFSET]
    out[i] = rng.choice(far) if len(far) else candidates[np.argmax(dist)]
  return out


def make_adaptation_step(module, lpips_fn: Callable, tx, config: AdaptationConfig) -> Callable:
  """A jitted step (params, batch_stats, opt_state, targets (B, S, S, 3) u8,
  references (B, S, S, 3) u8, lips (B, 40, 2) crop units) -> (params,
  opt_state, loss); `batch_stats` are read, not trained.

  The renderer's input is built as at inference (`syncer.masked_faces`, as
  `steps.generator_inputs` in training): the target with its lower half
  zeroed beside the reference, in [0, 1].
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from lipsync_jax import losses  # pylint: disable=import-outside-toplevel
  from lipsync_jax.inference.syncer import masked_faces  # pylint: disable=import-outside-toplevel

  def loss_fn(params, batch_stats, targets, references, lips):
    truth = targets.astype(jnp.float32) / 255.0
    pred = module.apply({"params": params, "batch_stats": batch_stats}, lips,
                        masked_faces(targets, references), train=False).astype(jnp.float32)
    return (config.l1 * losses.l1(pred, truth)
            + config.lpips * losses.lpips_loss(lpips_fn, pred, truth)
            + config.mouth * losses.mouth_loss(pred, truth, lips, lpips_fn, 1.0))

  @jax.jit
  def step(params, batch_stats, opt_state, targets, references, lips):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch_stats, targets, references, lips)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return step


class RendererAdapter:
  """Adapts a renderer to face inputs, one after another: the step is
  compiled once (`make_adaptation_step`) and reused for every face and
  number of steps."""

  def __init__(self, module, config: AdaptationConfig):
    import optax  # pylint: disable=import-outside-toplevel
    from lipsync_jax import lpips  # pylint: disable=import-outside-toplevel
    self.module = module
    self.config = config
    self.tx = optax.adam(config.learning_rate)
    self.step = make_adaptation_step(module, lpips.make_lpips_fn("alexnet"), self.tx, config)

  def __call__(self, variables: dict[str, Any], crops, lips: np.ndarray, valid: np.ndarray,
               steps: int | None = None, progress: bool = False
               ) -> tuple[dict[str, Any], list[float]]:
    """Fine-tunes the renderer on one face input's frames.

    Args:
      variables: the renderer's ({"params", "batch_stats"}); not modified.
      crops: n face crops of the input's frames, (S, S, 3) uint8 (None: no
        face; such a frame must not be `valid`).
      lips: (n, 40, 2) their FaceMesh lips, crop units.
      valid: (n,) bool, frames whose lips FaceMesh found (the only targets).
      steps: optimiser steps (None: the config's).
      progress: a progress bar (on a terminal).
    Returns:
      (the adapted variables, the loss of each step).
    """
    import jax  # pylint: disable=import-outside-toplevel
    import tqdm  # pylint: disable=import-outside-toplevel
    from lipsync_jax.models import audio_to_lips  # pylint: disable=import-outside-toplevel
    config = self.config
    steps = config.steps if steps is None else int(steps)
    valid = np.asarray(valid, bool)
    targets = np.flatnonzero(valid)
    if steps <= 0 or not len(targets):
      return variables, []
    blank = np.zeros_like(np.asarray(crops[targets[0]], np.uint8))
    crops = np.stack([blank if c is None else np.asarray(c, np.uint8) for c in crops])
    lips = np.asarray(lips, np.float32)
    closed = audio_to_lips.closed_frames(lips, valid)
    params = jax.tree_util.tree_map(jax.numpy.asarray, variables["params"])
    batch_stats = variables["batch_stats"]
    opt_state = self.tx.init(params)
    rng = np.random.default_rng(config.seed)
    history = []
    for _ in tqdm.trange(steps, desc="adapting the renderer to the face", unit="step",
                         disable=None if progress else True, leave=False):
      batch = rng.choice(targets, config.batch_size)
      refs = sample_references(batch, closed, targets, rng, config.rest_reference)
      params, opt_state, loss = self.step(params, batch_stats, opt_state, crops[batch],
                                          crops[refs], lips[batch])
      history.append(float(loss))
    return dict(variables, params=params), history

