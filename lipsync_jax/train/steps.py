"""One pure, jit-compiled step per phase.

    step = make_syncnet_train_step(model)          # or make_generator_train_step
    state, metrics = step(state, batch, rng)      # pure; jitted by `jit_step`

Batches are contract 5 (uint8 images, float32 mels); the step converts images
to [0, 1] floats on device. Every step returns its metrics as float32
scalars, including "loss"; the loop checks them for NaN/Inf before anything
is checkpointed.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from lipsync_jax import losses
from lipsync_jax.models import audio_to_lips
from lipsync_jax.train import families
from lipsync_jax.train import sharding as sharding_lib
from lipsync_jax.train.families import apply_module, to_unit
from lipsync_jax.train.state import TrainState

Array = jax.Array
PyTree = Any
Batch = dict[str, Array]
Metrics = dict[str, Array]
StepFn = Callable[[TrainState, Batch, Array], tuple[TrainState, Metrics]]
LpipsApply = Callable[[PyTree, Array, Array], Array]

IN_BATCH_SCALE = 10.0  # InfoNCE temperature when the expert has no learned scale
EXPERT_FACE_SIZE = 96  # the face size the SyncNet expert works at


def generator_inputs(batch: Batch) -> tuple[Array, Array]:
  """Contract-5 generator batch -> (faces (B,T,S,S,6), ground truth (B,T,S,S,3)).

  faces = concat([target with rows S/2.. zeroed, reference], -1) in [0, 1]
  (S = 96 for upstream's models, or the dataset's face size).
  """
  gt = to_unit(batch["target"])
  ref = to_unit(batch["reference"])
  masked = gt.at[:, :, gt.shape[2] // 2:].set(0.0)
  return jnp.concatenate([masked, ref], axis=-1), gt


def _apply_updates(tx, grads, opt_state, params):
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


# -----------------------------------------------------------------------------
# SyncNet expert.
# -----------------------------------------------------------------------------

def _syncnet_forward(model: nn.Module, trainable: PyTree, batch_stats: PyTree,
                     batch: Batch, train: bool, in_batch_weight: float = 0.0):
  # A dataset of larger faces trains the same 96 px expert on resized ones.
  faces = losses.lower_half_stack(losses.resize_faces(to_unit(batch["faces"]),
                                                      EXPERT_FACE_SIZE))  # (B,48,96,15)
  variables = {"params": trainable["model"], "batch_stats": batch_stats}
  if train:
    (a, v), updates = model.apply(variables, batch["audio"], faces, train=True,
                                  mutable=["batch_stats"])
    new_stats = updates["batch_stats"]
  else:
    a, v = model.apply(variables, batch["audio"], faces, train=False)
    new_stats = batch_stats
  head = trainable["head"]
  label = batch["label"].astype(jnp.float32)
  loss, cos = losses.syncnet_loss(a, v, label, head.get("scale"), head.get("bias"))
  metrics = {}
  if in_batch_weight:
    metrics["bce"] = loss
    metrics["in_batch"] = losses.in_batch_sync_loss(
        a, v, label, head.get("scale", IN_BATCH_SCALE))
    loss = loss + in_batch_weight * metrics["in_batch"]
  if "scale" in head:
    pred = head["scale"] * cos + head["bias"] > 0
  else:
    pred = cos > 0.5
  metrics.update({
      "loss": loss,
      "accuracy": jnp.mean((pred == (label > 0.5)).astype(jnp.float32)),
      "cos_pos": jnp.sum(cos * label) / jnp.maximum(jnp.sum(label), 1.0),
      "cos_neg": jnp.sum(cos * (1 - label)) / jnp.maximum(jnp.sum(1 - label), 1.0),
  })
  return loss, (new_stats, metrics)


def make_syncnet_train_step(model: nn.Module, in_batch_weight: float = 0.0) -> StepFn:
  """Expert step: BCE(cos) (or BCE(s*cos+b)) on a contract-5 SyncNet batch,
  plus `in_batch_weight` x `losses.in_batch_sync_loss` when it is > 0.

  batch: faces (B,5,96,96,3) uint8, audio (B,80,16,1) f32, label (B,) f32.
  """

  def step(state: TrainState, batch: Batch, rng: Array):
    del rng  # the expert has no stochastic layers
    trainable = {"model": state.params, "head": state.head}
    grad_fn = jax.value_and_grad(
        functools.partial(_syncnet_forward, model, train=True,
                          in_batch_weight=in_batch_weight), has_aux=True)
    (_, (new_stats, metrics)), grads = grad_fn(trainable, state.batch_stats, batch)
    new, opt_state = _apply_updates(state.tx, grads, state.opt_state, trainable)
    metrics["grad_norm"] = optax.tree.norm(grads["model"])
    if "scale" in state.head:
      metrics["logit_scale"] = new["head"]["scale"]
    state = state.replace(step=state.step + 1, params=new["model"],
                          head=new["head"], batch_stats=new_stats,
                          opt_state=opt_state)
    return state, metrics

  return step


def make_syncnet_eval_step(model: nn.Module) -> Callable[[TrainState, Batch], Metrics]:
  def step(state: TrainState, batch: Batch) -> Metrics:
    trainable = {"model": state.params, "head": state.head}
    _, (_, metrics) = _syncnet_forward(model, trainable, state.batch_stats,
                                       batch, train=False)
    return metrics
  return step


# -----------------------------------------------------------------------------
# Generators (+ optional visual-quality discriminator, fused in one step).
# -----------------------------------------------------------------------------

def make_expert_apply(expert: nn.Module, bn_mode: str):
  """Frozen expert as `fn(variables, audio, faces) -> (a, v)`.

  bn_mode "running": BN uses the expert's running statistics (eval mode).
  bn_mode "batch": BN uses the statistics of the current (generated) batch,
  as upstream does by leaving the expert in train mode; the running stats
  are not updated (the expert stays frozen).
  """
  if bn_mode not in ("running", "batch"):
    raise ValueError(f"expert_bn must be 'running' or 'batch', got {bn_mode!r}")
  if expert is None:  # a generator trained with no sync loss (the lip renderer)
    return None

  def apply(variables, audio, faces):
    if bn_mode == "batch":
      out, _ = expert.apply(variables, audio, faces, train=True,
                            mutable=["batch_stats"])
      return out
    return expert.apply(variables, audio, faces, train=False)

  return apply


# Loss parts that a model with a second decoding path (SyncTalkFace's value
# path) also reports for that path as "<name>_value"; both get the same weight.
PATH_LOSSES = ("l1", "sync", "lpips", "gan_g", "vv")
# Model-specific parts and their weights in `loss_cfg` (0 = off).
EXTRA_LOSSES = ("store", "align", "au", "a2au", "mouth")


def combine_generator_losses(parts: Metrics, sync_weight: Array,
                             loss_cfg: Any) -> Array:
  """Total G loss from its parts.

  total = w_l1 * l1 + sync_weight * sync + lpips * LPIPS + gan * GAN_G
          [+ vv * VV + store * STORE + align * ALIGN + au * AU + a2au * A2AU],
  with w_l1 = 1 - sync_weight - gan when `l1_complement` (upstream), else
  `l1`. Each of l1, sync, lpips, gan_g, vv also counts its "_value" part (a
  second decoding path) with the same weight, as SyncTalkFace sums its losses
  over both paths.
  """
  gan_w = float(loss_cfg.gan)
  w_l1 = (1.0 - sync_weight - gan_w) if loss_cfg.l1_complement else float(loss_cfg.l1)
  weights = {"l1": w_l1, "sync": sync_weight, "lpips": float(loss_cfg.lpips),
             "gan_g": gan_w, "vv": float(loss_cfg.get("vv", 0.0))}
  weights.update({k: float(loss_cfg.get(k, 0.0)) for k in EXTRA_LOSSES})
  total = jnp.float32(0.0)
  for name, w in weights.items():
    if isinstance(w, float) and w == 0.0:
      continue
    for key in (name, name + "_value") if name in PATH_LOSSES else (name,):
      if key in parts:
        total = total + w * parts[key]
  return total


def _generator_parts(family: families.GeneratorFamily, expert_apply, lpips_apply, disc,
                     loss_cfg, trainable, batch_stats, d_params, frozen, batch, train,
                     rng=None):
  """Forward pass and loss parts. Returns (parts, new_batch_stats, paths, gt);
  `paths` are the generated frames of each decoding path (inference first):
  the family's own parts plus L1, sync, LPIPS and GAN on every path."""
  faces, gt = generator_inputs(batch)
  variables = {"params": trainable["model"], "batch_stats": batch_stats}
  if rng is None:
    rng = jax.random.PRNGKey(0)
  paths, parts, new_stats = family.forward(variables, batch, faces, gt, frozen, train, rng)
  parts = dict(parts)
  if new_stats is None:
    new_stats = batch_stats
  for i, pred in enumerate(paths):
    sfx = "" if i == 0 else "_value"
    pred = pred.astype(jnp.float32)
    parts["l1" + sfx] = losses.l1(pred, gt)
    if expert_apply is not None:
      parts["sync" + sfx], _ = losses.sync_loss(
          functools.partial(expert_apply, frozen["expert"]), pred, batch["sync_audio"])
    if lpips_apply is not None and loss_cfg.lpips:
      parts["lpips" + sfx] = losses.lpips_loss(
          functools.partial(lpips_apply, frozen["lpips"]), pred, gt)
    if disc is not None:
      fake = disc.apply({"params": d_params}, pred, method="logits")
      parts["gan_g" + sfx] = losses.gan_generator_loss(fake)
  if loss_cfg.get("mouth", 0.0) and "lips" in batch:
    parts["mouth"] = losses.mouth_loss(
        paths[0].astype(jnp.float32), gt, batch["lips"],
        None if lpips_apply is None else functools.partial(lpips_apply, frozen["lpips"]),
        float(loss_cfg.mouth_lpips))
  return parts, new_stats, tuple(p.astype(jnp.float32) for p in paths), gt


def make_generator_train_step(gen: nn.Module, expert: nn.Module, loss_cfg: Any, *,
                              expert_bn: str = "running",
                              lpips_apply: LpipsApply | None = None,
                              disc: nn.Module | None = None,
                              au_classifier: nn.Module | None = None) -> StepFn:
  """G step (L1 + sync + LPIPS + GAN), then, with a discriminator, one D step
  on BCE(D(y), 1) + BCE(D(G(x).detach()), 0) as upstream.

  batch: target, reference (B,5,96,96,3) uint8; audio (B,5,80,16,1) f32;
  sync_audio (B,80,16,1) f32; SyncTalkFace also context (B,9,96,96,3) uint8
  (its lip windows); au_tcn optionally aus (B,5,K), au_valid (B,5) (the
  audio-to-AU loss). `state.frozen` holds {"expert": variables, "lpips":
  params, "au_classifier": variables (with `au_classifier`)}. `rng` feeds
  dropout (SyncTalkFace's fusion, au_tcn's heads and TCN).

  The generator's family (`families.family_of`) runs it and adds its own
  parts: wav2lip / lpips_attnwav2lip have one path; SyncTalkFace decodes a
  key path (audio address, the inference path) and a value path (lip
  address), each with l1/sync/lpips/gan_g/vv, plus the memory's store and
  align losses; au_tcn adds a2au and au.
  """
  expert_apply = make_expert_apply(expert, expert_bn)
  family = families.family_of(gen, au_classifier=au_classifier)

  def step(state: TrainState, batch: Batch, rng: Array):
    trainable = {"model": state.params, "head": state.head}

    def g_loss(tr):
      parts, new_stats, paths, gt = _generator_parts(
          family, expert_apply, lpips_apply, disc, loss_cfg, tr,
          state.batch_stats, state.d_params, state.frozen, batch, train=True, rng=rng)
      total = combine_generator_losses(parts, state.sync_weight, loss_cfg)
      return total, (parts, new_stats, paths, gt)

    (total, (parts, new_stats, paths, gt)), grads = jax.value_and_grad(
        g_loss, has_aux=True)(trainable)
    new, opt_state = _apply_updates(state.tx, grads, state.opt_state, trainable)
    metrics = dict(parts, loss=total, sync_weight=state.sync_weight,
                   grad_norm=optax.tree.norm(grads["model"]))
    state = state.replace(params=new["model"], head=new["head"],
                          batch_stats=new_stats, opt_state=opt_state)
    if disc is not None:
      fakes = [jax.lax.stop_gradient(p) for p in paths]

      def d_loss(dp):
        # BCE(D(y), 1) + sum over decoding paths of BCE(D(G(x)), 0).
        real_logits = disc.apply({"params": dp}, gt, method="logits")
        total = losses.bce_with_logits(real_logits, 1.0)
        for fake in fakes:
          total = total + losses.bce_with_logits(
              disc.apply({"params": dp}, fake, method="logits"), 0.0)
        return total

      dl, d_grads = jax.value_and_grad(d_loss)(state.d_params)
      d_params, d_opt_state = _apply_updates(state.d_tx, d_grads,
                                             state.d_opt_state, state.d_params)
      state = state.replace(d_params=d_params, d_opt_state=d_opt_state)
      metrics["disc"] = dl
    return state.replace(step=state.step + 1), metrics

  return step


def make_generator_eval_step(gen: nn.Module, expert: nn.Module, loss_cfg: Any,
                             sync_weight: float, *, expert_bn: str = "running",
                             lpips_apply: LpipsApply | None = None,
                             disc: nn.Module | None = None,
                             au_classifier: nn.Module | None = None):
  """Eval step -> (metrics, pred (B,T,96,96,3)). Its "loss" uses the fixed
  `sync_weight` (the schedule's final value) so that eval losses stay
  comparable across the schedule switch."""
  expert_apply = make_expert_apply(expert, expert_bn)
  family = families.family_of(gen, au_classifier=au_classifier)

  def step(state: TrainState, batch: Batch):
    trainable = {"model": state.params, "head": state.head}
    parts, _, paths, _ = _generator_parts(
        family, expert_apply, lpips_apply, disc, loss_cfg, trainable,
        state.batch_stats, state.d_params, state.frozen, batch, train=False)
    metrics = dict(parts, loss=combine_generator_losses(
        parts, jnp.float32(sync_weight), loss_cfg))
    return metrics, paths[0]

  return step


# -----------------------------------------------------------------------------
# AU networks of the au_tcn variant (AU classifier, audio-to-AU).
# -----------------------------------------------------------------------------

def _au_forward(model: nn.Module, params, batch_stats, batch: Batch, train: bool,
                rng: Array):
  """BCE of AU presence logits (B,5,K) against the stored labels."""
  from lipsync_jax.models import au_tcn  # pylint: disable=g-import-not-at-top
  if isinstance(model, au_tcn.AUClassifier):
    x = to_unit(batch["target"])
    args = (x[:, :, x.shape[2] // 2:],)            # lower halves (B,5,48,96,3)
  else:
    args = (batch["audio"],)                         # (B,5,80,16,1)
  out, new_stats = apply_module(model, {"params": params, "batch_stats": batch_stats}, *args,
                               train=train, rng=rng)
  logits = out[1] if isinstance(out, tuple) else out
  labels, valid = batch["aus"].astype(jnp.float32), batch["au_valid"].astype(jnp.float32)
  loss = losses.masked_bce_with_logits(logits, labels, valid)
  m = jnp.broadcast_to(valid[..., None], labels.shape)
  pred = (logits > 0).astype(jnp.float32)
  tp = jnp.sum(pred * labels * m, axis=(0, 1))
  pos = jnp.sum(labels * m, axis=(0, 1))
  tn = jnp.sum((1 - pred) * (1 - labels) * m, axis=(0, 1))
  neg = jnp.sum((1 - labels) * m, axis=(0, 1))
  # Balanced accuracy per AU (AUs absent from the batch's labels count 0.5).
  tpr = jnp.where(pos > 0, tp / jnp.maximum(pos, 1.0), 0.5)
  tnr = jnp.where(neg > 0, tn / jnp.maximum(neg, 1.0), 0.5)
  metrics = {
      "loss": loss,
      "accuracy": jnp.sum((pred == labels) * m) / jnp.maximum(jnp.sum(m), 1.0),
      "balanced_accuracy": jnp.mean(0.5 * (tpr + tnr)),
      "label_rate": jnp.sum(labels * m) / jnp.maximum(jnp.sum(m), 1.0),
  }
  return loss, (new_stats if new_stats is not None else batch_stats, metrics)


def make_au_train_step(model: nn.Module) -> StepFn:
  """AU classifier / audio-to-AU step: masked BCE on AU presence.

  batch: target (B,5,96,96,3) uint8 (classifier: its lower halves), audio
  (B,5,80,16,1) f32 (audio-to-AU), aus (B,5,K) and au_valid (B,5) f32.
  """

  def step(state: TrainState, batch: Batch, rng: Array):
    grad_fn = jax.value_and_grad(
        lambda p: _au_forward(model, p["model"], state.batch_stats, batch, True, rng),
        has_aux=True)
    trainable = {"model": state.params, "head": state.head}
    (_, (new_stats, metrics)), grads = grad_fn(trainable)
    new, opt_state = _apply_updates(state.tx, grads, state.opt_state, trainable)
    metrics["grad_norm"] = optax.tree.norm(grads["model"])
    return state.replace(step=state.step + 1, params=new["model"], batch_stats=new_stats,
                         opt_state=opt_state), metrics

  return step


def make_au_eval_step(model: nn.Module):
  def step(state: TrainState, batch: Batch) -> Metrics:
    _, (_, metrics) = _au_forward(model, state.params, state.batch_stats, batch, False,
                                  jax.random.PRNGKey(0))
    return metrics
  return step


# -----------------------------------------------------------------------------
# Compilation on a mesh.
# -----------------------------------------------------------------------------

# -----------------------------------------------------------------------------
# Audio to lips (the two-stage model's first stage).
# -----------------------------------------------------------------------------

LIPS_LOSSES = ("lips", "motion", "gap", "gap_std", "sync", "smooth")
CROP_PX = 96.0  # landmark errors are reported in pixels of a 96 px crop


def _lips_parts(model: nn.Module, expert: nn.Module | None, params: PyTree,
                frozen: PyTree, batch: Batch) -> tuple[Metrics, Array]:
  """Loss parts of an `audio_to_lips` model on (B, T) windows of frames.

  batch: mel (B,T,80,C,1), neutral (B,T,40,2), lips (B,T,40,2) (targets),
  sync_audio (B,T-4,80,16,1). Parts (landmark terms in 96-crop pixels):
    lips    mean |pred - lips|
    motion  mean |(pred[t+1] - pred[t]) - (lips[t+1] - lips[t])|: the
            movement, which plain regression to positions damps
    gap     mean |opening(pred) - opening(lips)|, the opening being the
            vertical distance between the inner lips' midpoints: the part of
            the mouth that speech drives
    gap_std mean over windows of |std_t opening(pred) - std_t opening(lips)|:
            how far the mouth moves, which regression to the mean shrinks
    smooth  mean |pred[t+1] - 2 pred[t] + pred[t-1]| (jitter)
    sync    the frozen landmark expert's -log p(in sync) of every 5-frame
            window of predicted lips with its mel window (needs `expert`;
            frozen["expert"] its variables, frozen["expert_head"] its
            {"scale", "bias"})
  Returns (parts, pred (B,T,40,2)).
  """
  mel, neutral, lips = batch["mel"], batch["neutral"], batch["lips"]
  b, t = lips.shape[:2]
  pred = model.apply({"params": params}, mel.reshape((b * t,) + mel.shape[2:]),
                     neutral.reshape((b * t,) + neutral.shape[2:])).reshape(lips.shape)
  parts = {"lips": CROP_PX * jnp.mean(jnp.abs(pred - lips)),
           "motion": CROP_PX * jnp.mean(jnp.abs(jnp.diff(pred, axis=1) - jnp.diff(lips, axis=1))),
           "smooth": CROP_PX * jnp.mean(jnp.abs(jnp.diff(pred, n=2, axis=1)))}
  opening = lambda x: (x[..., audio_to_lips.INNER_LOWER, 1]
                       - x[..., audio_to_lips.INNER_UPPER, 1])          # (B, T)
  gp, gt = opening(pred), opening(lips)
  parts["gap"] = CROP_PX * jnp.mean(jnp.abs(gp - gt))
  # sqrt(var + eps): the std's gradient is finite at a still mouth (std 0).
  std = lambda x: jnp.sqrt(jnp.var(x, axis=1) + 1e-10)
  parts["gap_std"] = CROP_PX * jnp.mean(jnp.abs(std(gp) - std(gt)))
  if expert is not None:
    parts["sync"] = landmark_sync_loss(expert, frozen, pred, batch["sync_audio"])
  return parts, pred


def landmark_sync_loss(expert: nn.Module, frozen: PyTree, lips: Array,
                       sync_audio: Array) -> Array:
  """Mean -log p(in sync) of the landmark expert over every window of
  `expert.window` consecutive frames of `lips` (B,T,40,2) with its mel
  window `sync_audio` (B,T-window+1,80,16,1)."""
  b, t = lips.shape[:2]
  w = expert.window
  n = t - w + 1
  windows = jnp.stack([lips[:, k:k + w] for k in range(n)], axis=1)   # (B, n, w, 40, 2)
  audio = sync_audio.reshape((b * n,) + sync_audio.shape[2:])
  a, v = expert.apply(frozen["expert"], audio, windows.reshape((b * n,) + windows.shape[2:]))
  head = frozen["expert_head"]
  logit = head["scale"] * jnp.sum(a * v, axis=-1) + head["bias"]
  return jnp.mean(jax.nn.softplus(-logit))


def combine_lips_losses(parts: Metrics, loss_cfg: Any) -> Array:
  """sum over LIPS_LOSSES of loss_cfg[name] * part (missing parts count 0)."""
  total = jnp.float32(0.0)
  for name in LIPS_LOSSES:
    w = float(loss_cfg.get(name, 0.0))
    if w and name in parts:
      total = total + w * parts[name]
  return total


def make_lips_train_step(model: nn.Module, expert: nn.Module | None, loss_cfg: Any) -> StepFn:
  """One optimiser step of an `audio_to_lips` model (`_lips_parts`)."""

  def step(state: TrainState, batch: Batch, rng: Array):
    del rng

    def loss_fn(tr):
      parts, _ = _lips_parts(model, expert, tr["model"], state.frozen, batch)
      return combine_lips_losses(parts, loss_cfg), parts

    trainable = {"model": state.params, "head": state.head}
    (total, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    new, opt_state = _apply_updates(state.tx, grads, state.opt_state, trainable)
    metrics = dict(parts, loss=total, grad_norm=optax.tree.norm(grads["model"]))
    return state.replace(params=new["model"], opt_state=opt_state,
                         step=state.step + 1), metrics

  return step


def make_lips_eval_step(model: nn.Module, expert: nn.Module | None, loss_cfg: Any):
  """Eval step -> metrics: the loss parts, plus the expert's sync loss of the
  true lips (`sync_true`: the level a perfect prediction would reach)."""

  def step(state: TrainState, batch: Batch):
    parts, _ = _lips_parts(model, expert, state.params, state.frozen, batch)
    metrics = dict(parts, loss=combine_lips_losses(parts, loss_cfg))
    if expert is not None:
      metrics["sync_true"] = landmark_sync_loss(expert, state.frozen, batch["lips"],
                                                batch["sync_audio"])
    return metrics

  return step


def state_shardings(state: TrainState, mesh: Mesh,
                    min_size: int = 2**18) -> TrainState:
  return sharding_lib.param_shardings(state, mesh, min_size)


def jit_train_step(step: StepFn, state: TrainState, mesh: Mesh, donate: bool = True,
                   min_size: int = 2**18):
  """jit with explicit shardings: state as `state_shardings`, batch over
  "data", rng and metrics replicated. The state is donated."""
  st = state_shardings(state, mesh, min_size)
  repl = sharding_lib.replicated(mesh)
  return jax.jit(step, in_shardings=(st, sharding_lib.batch_sharding(mesh), repl),
                 out_shardings=(st, repl), donate_argnums=(0,) if donate else ())


def jit_eval_step(step, state: TrainState, mesh: Mesh, min_size: int = 2**18):
  st = state_shardings(state, mesh, min_size)
  return jax.jit(step, in_shardings=(st, sharding_lib.batch_sharding(mesh)))
