"""The training loop: `train_and_evaluate(config, workdir)`.

WORKDIR layout after a run:

  checkpoints/<step>/   orbax checkpoints (state, data-iterator state, meta)
  model/, model_best/   exported models (lipsync_jax.checkpoint.save_model)
  metrics.jsonl         one line per train step {"step", "loss", ...}
  eval.jsonl            one line per evaluation
  tb/                   TensorBoard event files
  samples/step_N.png    val sample grids (generators)
  summary.json          final summary
  config.json           the config of the latest start

Resume: starting again with the same workdir restores the latest checkpoint
(params, batch stats, optimiser state, step, RNG key, sync weight and the
data iterator) and continues with exactly the batches and losses of an
uninterrupted run; metrics.jsonl lines after the checkpoint are dropped.
SIGTERM saves a checkpoint after the current step and returns normally.
A NaN/Inf loss raises `TrainingDiverged` before anything is saved.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lipsync_jax import checkpoint as model_ckpt
from lipsync_jax import models
from lipsync_jax.data.prefetch import ThreadPrefetchIterator
from lipsync_jax.train import checkpointing
from lipsync_jax.train import sharding as sharding_lib
from lipsync_jax.train import state as state_lib
from lipsync_jax.train import steps as steps_lib
from lipsync_jax.train import summary as summary_lib

log = logging.getLogger(__name__)

IMG = 96


# Generators the trainer handles (synctalkface_paper is a 128 px model preset;
# the experts and datasets here are 96 px).
TRAINABLE_GENERATORS = models.GENERATORS + ("synctalkface", "au_tcn", "lip_renderer")
# Generators trained by reconstruction alone: no expert, no sync loss.
NO_SYNC_GENERATORS = ("lip_renderer",)
AU_ARCHS = ("au_classifier", "audio_to_au")


class TrainConfigError(ValueError):
  """A config value that cannot work (one-line message)."""


class TrainingDiverged(RuntimeError):
  """A non-finite loss; the message names the step and last good checkpoint."""


# -----------------------------------------------------------------------------
# Set-up helpers.
# -----------------------------------------------------------------------------

def _validate(config: ml_collections.ConfigDict) -> None:
  if config.phase not in ("syncnet", "generator", "au", "lips"):
    raise TrainConfigError(f"config.phase must be 'syncnet', 'generator', 'au' or "
                           f"'lips', got {config.phase!r}")
  if not config.data_dir:
    raise TrainConfigError("config.data_dir is not set (pass --config.data_dir=DIR)")
  if not os.path.isdir(config.data_dir):
    raise TrainConfigError(f"config.data_dir {config.data_dir} is not a directory")
  for key in ("batch_size", "num_steps", "eval_every", "checkpoint_every", "log_every"):
    if int(config[key]) <= 0:
      raise TrainConfigError(f"config.{key} must be positive, got {config[key]}")
  if int(config.mesh_devices) < 0:
    raise TrainConfigError(f"config.mesh_devices must be 0 (every device) or a count, "
                           f"got {config.mesh_devices}")
  arch = config.model.arch
  if config.phase == "syncnet" and arch != "syncnet_color":
    raise TrainConfigError(f"the syncnet phase trains 'syncnet_color', not {arch!r}")
  if config.phase == "au" and arch not in AU_ARCHS:
    raise TrainConfigError(f"the au phase trains one of {AU_ARCHS}, not {arch!r}")
  if config.phase == "lips" and arch != "audio_to_lips":
    raise TrainConfigError(f"the lips phase trains 'audio_to_lips', not {arch!r}")
  if config.phase == "lips":
    ctx = int(config.model.overrides.get("context", 32))
    if int(config.data.options.get("lip_context", 32)) != ctx:
      raise TrainConfigError(f"config.data.options.lip_context must equal the model's "
                             f"mel context ({ctx}: model.overrides.context)")
  # What reads the lip tracks, if anything: the renderer's input, or the
  # mouth term's crop.
  needs_lips = ("lip_renderer trains on lip tracks" if arch == "lip_renderer" else
                "config.loss.mouth crops the mouth at the target's lips"
                if config.phase == "generator" and config.loss.get("mouth", 0.0) else None)
  if needs_lips and not config.data.options.get("with_lips", False):
    raise TrainConfigError(f"{needs_lips}: set config.data.options.with_lips=True (and run "
                           "data_prep/lip_tracks.py on the dataset)")
  if config.phase == "generator":
    if arch not in TRAINABLE_GENERATORS:
      raise TrainConfigError(f"config.model.arch must be one of {TRAINABLE_GENERATORS}, "
                             f"got {arch!r}")
    opts = config.data.options
    if arch == "synctalkface":
      window = int(config.model.overrides.get("lip_window", 5))
      if int(opts.get("context_frames", 0)) != window // 2:
        raise TrainConfigError(f"synctalkface needs config.data.options.context_frames="
                               f"{window // 2} (its {window}-frame lip windows)")
    if float(config.loss.get("a2au", 0.0)) > 0 and not opts.get("with_aus", False):
      raise TrainConfigError("loss.a2au > 0 needs AU labels: set "
                             "config.data.options.with_aus=True")
    if float(config.loss.get("au", 0.0)) > 0 and not config.get("au_classifier_checkpoint"):
      if arch == "au_tcn":
        raise TrainConfigError("loss.au > 0 needs config.au_classifier_checkpoint (train "
                               "one with configs/au_classifier.py) or loss.au=0")
    if (arch == "au_tcn" and not config.get("audio_to_au_checkpoint")
        and not config.model.overrides.get("finetune_audio_to_au", False)):
      raise TrainConfigError("au_tcn needs config.audio_to_au_checkpoint (train one with "
                             "configs/audio_to_au.py) or model.overrides."
                             "finetune_audio_to_au=True with loss.a2au > 0")
    if not config.syncnet_checkpoint and arch not in NO_SYNC_GENERATORS:
      raise TrainConfigError("config.syncnet_checkpoint is not set: the generator needs "
                             "a trained expert (a workdir, model dir or .pth)")
    if config.expert_bn not in ("running", "batch"):
      raise TrainConfigError(f"config.expert_bn must be 'running' or 'batch', got "
                             f"{config.expert_bn!r}")


def model_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The `models.create` kwargs of the trained model (export config)."""
  kw = {}
  if "width_multiplier" in getattr(models.model_class(config.model.arch),
                                   "__dataclass_fields__", {}):
    kw["width_multiplier"] = float(config.model.width_multiplier)
  kw.update(config.model.overrides.to_dict())
  return kw


def _dtype(config) -> Any:
  return jnp.bfloat16 if config.mixed_precision else None


def _init_variables(module, rng, *inputs) -> tuple[Any, Any]:
  variables = models.init_variables(module, rng, *inputs, train=False)
  return variables["params"], variables.get("batch_stats", {})


def face_size(config: ml_collections.ConfigDict) -> int:
  """The side of the faces the trained model takes: its `face_size` override
  (generators and discriminator at 96, 128, 192, 256, ...), else 96."""
  return int(config.model.overrides.get("face_size", IMG) or IMG)


def _dummy_inputs(arch: str, size: int = IMG) -> tuple[Any, ...]:
  """Zero inputs of batch 1 that `init` traces `arch` with; `size` is the
  face side of the sized models (the generators and the discriminator)."""
  if arch in models.GENERATORS or arch == "synctalkface":
    return (jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, size, size, 6)))
  if arch == "wav2lip_disc_qual":
    return (jnp.zeros((1, 1, size, size, 3)),)
  if arch == "syncnet_color":
    return (jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, IMG // 2, IMG, 15)))
  if arch == "au_tcn":
    return (jnp.zeros((1, 5, 80, 16, 1)), jnp.zeros((1, 5, IMG, IMG, 6)))
  if arch == "audio_to_au":
    return (jnp.zeros((1, 5, 80, 16, 1)),)
  if arch == "au_classifier":
    return (jnp.zeros((1, IMG // 2, IMG, 3)),)
  if arch == "lip_renderer":
    return (jnp.full((1, 40, 2), 0.5), jnp.zeros((1, size, size, 6)))
  if arch == "audio_to_lips":
    return (jnp.zeros((1, 80, 32, 1)), jnp.full((1, 40, 2), 0.5))
  raise TrainConfigError(f"the trainer cannot build {arch!r}; it trains "
                         f"{', '.join(TRAINABLE_GENERATORS + AU_ARCHS)}, "
                         "syncnet_color and wav2lip_disc_qual")


def _model_for_init(model, arch: str):
  """au_tcn one_shot takes (B, S, S, 3) identities: init in inpaint mode
  (same parameters)."""
  if arch == "au_tcn" and getattr(model, "mode", "inpaint") != "inpaint":
    return model.clone(mode="inpaint")
  return model


def _check_au_columns(config, model_aus: tuple[int, ...]) -> None:
  from lipsync_jax import data  # pylint: disable=g-import-not-at-top
  from lipsync_jax.data import au_store  # pylint: disable=g-import-not-at-top
  clips = data.load_index(config.data_dir).split("train")
  stored = au_store.stored_aus(config.data_dir, clips)
  if stored != model_aus:
    raise TrainConfigError(f"the dataset's AU labels have columns {stored}, the model "
                           f"predicts {model_aus}: set config.model.overrides.aus")


def _check_face_size(config: ml_collections.ConfigDict) -> None:
  """A generator trains on crops of its own face size; the expert takes any
  (they are resized to its 96 px)."""
  if config.phase != "generator":
    return
  from lipsync_jax import data  # pylint: disable=g-import-not-at-top
  stored = data.load_index(config.data_dir).img_size
  size = face_size(config)
  if stored != size:
    raise TrainConfigError(
        f"the model takes {size} px faces (config.model.overrides.face_size) "
        f"but {config.data_dir} holds {stored} px crops; prepare the data with "
        f"--img-size {size} or set face_size={stored}")


def _tree_shapes(tree: Any) -> Any:
  """The tree with every array replaced by its shape (for compatibility checks)."""
  return jax.tree_util.tree_map(lambda x: tuple(np.shape(x)), tree)


def _init_from(config, params: Any, batch_stats: Any) -> tuple[Any, Any, dict]:
  """The variables (and saved meta) of `config.init_from`, checked against
  the model's: fine-tuning starts from them instead of a random init."""
  arch = config.model.arch
  loaded = model_ckpt.load_model(config.init_from, expected_arch=arch)
  lv = dict(loaded.variables)
  if (_tree_shapes(params) != _tree_shapes(lv.get("params"))
      or _tree_shapes(batch_stats or {}) != _tree_shapes(lv.get("batch_stats") or {})):
    raise TrainConfigError(f"init_from {config.init_from}: its {arch} (config "
                           f"{dict(loaded.config)}) does not match this model's "
                           "shapes; set model.width_multiplier to match")
  params = jax.tree_util.tree_map(jnp.asarray, lv["params"])
  if lv.get("batch_stats"):
    batch_stats = jax.tree_util.tree_map(jnp.asarray, lv["batch_stats"])
  return params, batch_stats, dict(loaded.meta)


def _load_into_group(params: Any, batch_stats: Any, group: str, path: str,
                     expected_arch: str) -> tuple[Any, Any]:
  """Replaces `group` of a model's variables by a saved model's variables."""
  loaded = model_ckpt.load_model(path, expected_arch=expected_arch)
  lv = dict(loaded.variables)
  if _tree_shapes(dict(params).get(group)) != _tree_shapes(lv.get("params")):
    raise TrainConfigError(f"{path}: its {expected_arch} does not match the model's "
                           f"{group!r} (width, AUs)")
  params = dict(params, **{group: jax.tree_util.tree_map(jnp.asarray, lv["params"])})
  if lv.get("batch_stats"):
    batch_stats = dict(batch_stats, **{group: jax.tree_util.tree_map(
        jnp.asarray, lv["batch_stats"])})
  return params, batch_stats


@dataclasses.dataclass
class Setup:
  """Everything built from a config before the loop."""
  state: state_lib.TrainState
  train_step: Any
  eval_step: Any
  mesh: Any
  model: Any


def build(config: ml_collections.ConfigDict, mesh, *, with_frozen: bool = True,
          resuming: bool = False) -> Setup:
  """Models, optimiser, initial state (on the mesh) and jitted steps.

  Used by the loop and by the tests (which call the returned steps directly).
  `resuming`: a checkpoint will replace the state, so `init_from` is not read.
  """
  rng = jax.random.PRNGKey(int(config.seed))
  init_rng, d_rng = jax.random.split(rng)
  dtype = _dtype(config)
  arch = config.model.arch
  size = face_size(config)
  model = models.create(arch, dtype=dtype, **model_kwargs(config))
  params, batch_stats = _init_variables(_model_for_init(model, arch), init_rng,
                                        *_dummy_inputs(arch, size))
  init_meta: dict[str, Any] = {}
  if config.init_from and not resuming:
    params, batch_stats, init_meta = _init_from(config, params, batch_stats)
  if config.data.options.get("with_aus", False):
    _check_au_columns(config, tuple(int(a) for a in model.aus))
  opt = config.optimizer
  tx = state_lib.make_optimizer(opt.learning_rate, opt.b1, opt.b2,
                                int(opt.warmup_steps), float(opt.grad_clip_norm),
                                name=opt.name, schedule=opt.schedule,
                                decay_steps=int(config.num_steps))

  if config.phase == "syncnet":
    head = {}
    if config.loss.learned_logit_scale:
      # A fine-tuned expert keeps its learned decision head.
      head = {"scale": jnp.float32(init_meta.get("logit_scale",
                                                 config.loss.init_logit_scale)),
              "bias": jnp.float32(init_meta.get("logit_bias",
                                                config.loss.init_logit_bias))}
    state = state_lib.create_state(params, batch_stats, tx, head=head)
    train_step = steps_lib.make_syncnet_train_step(
        model, in_batch_weight=float(config.loss.get("in_batch_weight", 0.0)))
    eval_step = steps_lib.make_syncnet_eval_step(model)
  elif config.phase == "au":
    state = state_lib.create_state(params, batch_stats, tx)
    train_step = steps_lib.make_au_train_step(model)
    eval_step = steps_lib.make_au_eval_step(model)
  elif config.phase == "lips":
    expert, frozen = _lips_expert(config)
    state = state_lib.create_state(params, batch_stats, tx, frozen=frozen)
    train_step = steps_lib.make_lips_train_step(model, expert, config.loss)
    eval_step = steps_lib.make_lips_eval_step(model, expert, config.loss)
  else:
    frozen = {}
    if arch in NO_SYNC_GENERATORS:
      expert = None
    elif config.syncnet_checkpoint == "random":
      expert = models.create("syncnet_color", dtype=dtype,
                             width_multiplier=float(config.expert_width_multiplier))
      e_params, e_stats = _init_variables(expert, jax.random.PRNGKey(1),
                                          *_dummy_inputs("syncnet_color"))
      frozen["expert"] = {"params": e_params, "batch_stats": e_stats}
    else:
      # The pixel SyncNet, or the landmark expert behind its lip regressor
      # (configs/lip_sync.py): both take (mel, stacked lower halves).
      path = config.syncnet_checkpoint
      if path == "builtin":  # the landmark expert shipped with the package
        from lipsync_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
        path = metrics.builtin_pixel_expert_path()
      loaded = model_ckpt.load_model(path, expected_arch=("syncnet_color", "lip_sync_pixels"))
      if loaded.arch == "syncnet_color":
        expert = models.create("syncnet_color", dtype=dtype, **dict(loaded.config))
      else:
        expert = models.create(loaded.arch, **dict(loaded.config))
      frozen["expert"] = jax.tree_util.tree_map(jnp.asarray, dict(loaded.variables))
    lpips_apply = None
    if float(config.loss.lpips) > 0:
      from lipsync_jax import lpips as lpips_lib
      net = config.lpips_net
      frozen["lpips"] = jax.tree_util.tree_map(
          jnp.asarray, lpips_lib.load_lpips_params(net)) if with_frozen else None
      lpips_apply = lambda p, x, y: lpips_lib.lpips_distance(p, x, y, net, dtype)
    disc = d_params = d_tx = None
    if float(config.loss.gan) > 0:
      # The discriminator judges the generator's faces at their size.
      size_kw = {"face_size": size} if size != IMG else {}
      disc = models.create(config.disc.arch, dtype=dtype,
                           width_multiplier=float(config.disc.width_multiplier), **size_kw)
      d_params, _ = _init_variables(disc, d_rng, *_dummy_inputs(config.disc.arch, size))
      d_tx = state_lib.make_optimizer(config.disc.learning_rate, config.disc.b1,
                                      config.disc.b2)
    au_cls = None
    if arch == "au_tcn":
      if config.audio_to_au_checkpoint:
        params, batch_stats = _load_into_group(params, batch_stats, "audio_to_au",
                                               config.audio_to_au_checkpoint, "audio_to_au")
      if float(config.loss.au) > 0:
        loaded = model_ckpt.load_model(config.au_classifier_checkpoint,
                                       expected_arch="au_classifier")
        au_cls = models.create("au_classifier", dtype=dtype, **dict(loaded.config))
        frozen["au_classifier"] = jax.tree_util.tree_map(jnp.asarray, dict(loaded.variables))
    state = state_lib.create_state(
        params, batch_stats, tx, d_params=d_params, d_tx=d_tx,
        sync_weight=float(config.sync_schedule.initial), frozen=frozen)
    kw = dict(expert_bn=config.expert_bn, lpips_apply=lpips_apply, disc=disc,
              au_classifier=au_cls)
    train_step = steps_lib.make_generator_train_step(model, expert, config.loss, **kw)
    eval_step = steps_lib.make_generator_eval_step(
        model, expert, config.loss, float(config.sync_schedule.value), **kw)

  min_size = int(config.mesh_shard_min_size)
  state = jax.device_put(state, steps_lib.state_shardings(state, mesh, min_size))
  return Setup(state=state,
               train_step=steps_lib.jit_train_step(train_step, state, mesh,
                                                   min_size=min_size),
               eval_step=steps_lib.jit_eval_step(eval_step, state, mesh, min_size),
               mesh=mesh, model=model)


def _lips_expert(config) -> tuple[Any, dict[str, Any]]:
  """The frozen landmark expert of the lips phase's sync loss
  (`config.lips_expert`: "builtin", a `lip_sync` model dir, or "" for none)
  and its frozen variables {"expert", "expert_head"}."""
  path = config.get("lips_expert", "")
  if not path or float(config.loss.get("sync", 0.0)) == 0.0:
    return None, {}
  if path == "builtin":
    from lipsync_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
    path = metrics.builtin_scorer_path()
  loaded = model_ckpt.load_model(path, expected_arch="lip_sync")
  if loaded.meta.get("inputs", {}).get("normalise", False):
    raise TrainConfigError(f"{path}: a per-clip normalised expert cannot judge predicted "
                           "lips window by window; use an expert trained with "
                           "normalise=False")
  expert = models.create("lip_sync", **dict(loaded.config))
  head = {"scale": jnp.float32(loaded.meta["logit_scale"]),
          "bias": jnp.float32(loaded.meta["logit_bias"])}
  return expert, {"expert": jax.tree_util.tree_map(jnp.asarray, dict(loaded.variables)),
                  "expert_head": head}


def _loader_kind(config) -> str:
  return {"syncnet": "syncnet", "lips": "lips"}.get(config.phase, "generator")


def make_train_loader(config):
  from lipsync_jax import data
  return data.make_loader(
      config.data_dir, "train", _loader_kind(config), int(config.batch_size),
      int(config.seed), worker_count=int(config.worker_count),
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      **config.data.options.to_dict())


def make_val_loader(config):
  """An endless, seeded val stream: a fresh iterator yields the same batches
  (never augmented)."""
  from lipsync_jax import data
  options = config.data.options.to_dict()
  if "augment" in options:  # a syncnet option (config_lib)
    options["augment"] = False
  return data.make_loader(
      config.data_dir, "val", _loader_kind(config), int(config.batch_size),
      int(config.seed) + 1, worker_count=0,
      shard_index=jax.process_index(), shard_count=jax.process_count(),
      **options)


def _host(metrics: dict[str, Any]) -> dict[str, float]:
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def _finite(metrics: dict[str, float]) -> bool:
  return all(math.isfinite(v) for v in metrics.values())


def evaluate(setup: Setup, config, val_loader) -> tuple[dict[str, float], Any]:
  """Mean metrics over `config.eval_batches` val batches, and the first
  batch with its predictions (generators) for the sample grid."""
  it = iter(val_loader)
  sums: dict[str, float] = {}
  first = None
  n = 0
  for _ in range(int(config.eval_batches)):
    try:
      batch = next(it)
    except StopIteration:
      break
    gbatch = sharding_lib.shard_batch(_model_inputs(batch), setup.mesh)
    out = setup.eval_step(setup.state, gbatch)
    metrics, pred = out if isinstance(out, tuple) else (out, None)
    m = _host(metrics)
    for k, v in m.items():
      sums[k] = sums.get(k, 0.0) + v
    if first is None and pred is not None:
      first = (batch, np.asarray(jax.device_get(pred)))
    n += 1
  if n == 0:
    raise TrainConfigError("the val split yielded no batch")
  return {k: v / n for k, v in sums.items()}, first


_BATCH_KEYS = {"faces", "audio", "label", "target", "reference", "sync_audio",
               "context", "aus", "au_valid", "lips", "mel", "neutral"}


def _model_inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  return {k: v for k, v in batch.items() if k in _BATCH_KEYS}


def _poison(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  out = dict(batch)
  key = "audio" if "audio" in batch else "mel"
  out[key] = np.full_like(batch[key], np.nan)
  return out


# -----------------------------------------------------------------------------
# The loop.
# -----------------------------------------------------------------------------

class _StopFlag:
  """Set by SIGTERM (preemption); the loop saves and returns."""

  def __init__(self):
    self.stop = False
    self._old = None

  def __enter__(self):
    try:
      self._old = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread
      self._old = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    self.stop = True

  def __exit__(self, *exc):
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)


def _export(workdir: str, name: str, config, state, step: int,
            extra: dict[str, Any]) -> None:
  if jax.process_index() != 0:
    return
  variables = {"params": jax.device_get(state.params)}
  if state.batch_stats:
    variables["batch_stats"] = jax.device_get(state.batch_stats)
  meta = {"step": step, "phase": config.phase, **extra}
  if "scale" in state.head:
    meta["logit_scale"] = float(state.head["scale"])
    meta["logit_bias"] = float(state.head["bias"])
  model_ckpt.save_model(os.path.join(workdir, name), config.model.arch,
                        model_kwargs(config), variables, extra_meta=meta)


def _trainable_for_ckpt(state) -> dict[str, Any]:
  return {k: v for k, v in state.trainable().items() if v is not None}


def _initialize_distributed(config) -> None:
  """jax.distributed.initialize(), with an explicit cluster when the config
  names a coordinator, else from the cluster environment; the timeouts come
  from the config (generous: a slow peer must not fail the job)."""
  timeouts = dict(initialization_timeout=int(config.distributed_init_timeout_s),
                  heartbeat_timeout_seconds=int(config.distributed_heartbeat_timeout_s),
                  shutdown_timeout_seconds=int(config.distributed_shutdown_timeout_s))
  if min(timeouts.values()) <= 0:
    raise TrainConfigError(f"the distributed timeouts must be positive, got {timeouts}")
  if not config.coordinator_address:
    jax.distributed.initialize(**timeouts)
    return
  n, i = int(config.num_processes), int(config.process_id)
  if n < 1 or not 0 <= i < n:
    raise TrainConfigError(f"with coordinator_address, num_processes ({n}) must be >= 1 "
                           f"and process_id ({i}) in [0, {n})")
  jax.distributed.initialize(coordinator_address=config.coordinator_address,
                             num_processes=n, process_id=i, **timeouts)


def _leave_distributed(config) -> None:
  """The exit barrier, reached once this process's last checkpoint is
  committed (`Checkpointer.close` waits for it). A peer may arrive up to
  `distributed_shutdown_timeout_s` later."""
  delay = float(config.debug.exit_delay_s)
  if delay > 0 and jax.process_index() == int(config.debug.exit_delay_process):
    log.warning("debug: %.1f s late to the exit barrier", delay)
    time.sleep(delay)
  jax.distributed.shutdown()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains per `config`, resuming from `workdir` if it holds a checkpoint.

  Returns the summary dict (also written to WORKDIR/summary.json).
  Raises:
    TrainConfigError / CheckpointError / DatasetFormatError (ValueErrors) for
    bad configs or inputs; TrainingDiverged for a NaN/Inf loss.
  """
  _validate(config)
  _check_face_size(config)
  if config.distributed:
    _initialize_distributed(config)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0

  num_devices = int(config.mesh_devices) or None
  if num_devices and jax.process_count() > 1:
    raise TrainConfigError(f"config.mesh_devices={num_devices} needs one process; a "
                           f"multi-host run uses every device (set it to 0)")
  try:
    mesh = sharding_lib.make_mesh(num_devices, model_axis=int(config.mesh_model_axis))
    sharding_lib.check_batch_size(int(config.batch_size), mesh)
  except ValueError as e:
    raise TrainConfigError(str(e)) from None

  ckpt = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"),
                                    keep_last=int(config.keep_last),
                                    best_metric=config.best_metric)
  try:
    # The loaders first: an empty or too short split fails before the models
    # are built.
    train_loader = make_train_loader(config)
    val_loader = make_val_loader(config)
    setup = build(config, mesh, resuming=ckpt.latest_step() is not None)
  except BaseException:
    ckpt.close()
    raise
  data_iter = ThreadPrefetchIterator(iter(train_loader))

  base_key = jax.random.PRNGKey(int(config.seed))
  best = {"value": math.inf, "step": None}
  start = 0
  last_good: str | None = None
  latest = ckpt.latest_step()
  if latest is not None:
    trainable, meta = ckpt.restore(latest, _trainable_for_ckpt(setup.state), data_iter)
    setup.state = setup.state.replace_trainable(trainable)
    base_key = jnp.asarray(np.asarray(meta["rng"], np.uint32))
    best = dict(meta.get("best", best))
    if best["value"] is None:
      best["value"] = math.inf
    start = latest
    last_good = ckpt.step_dir(latest)
    log.info("resumed from %s", last_good)
  if int(setup.state.step) != start:
    raise TrainConfigError(f"checkpoint step {start} holds state step {int(setup.state.step)}")

  writer = summary_lib.MetricsWriter(workdir, enabled=is_main, resume_step=start)
  if is_main:
    summary_lib.write_json_atomic(os.path.join(workdir, "config.json"), config.to_dict())

  repl = sharding_lib.replicated(mesh)

  def save(step: int, eval_metrics: dict[str, float] | None = None) -> str:
    meta = {"rng": np.asarray(jax.device_get(base_key)).tolist(),
            "best": {"value": None if math.isinf(best["value"]) else best["value"],
                     "step": best["step"]},
            "eval": eval_metrics}
    path = ckpt.save(step, _trainable_for_ckpt(setup.state), data_iter, meta,
                     metrics=eval_metrics)
    _export(workdir, "model", config, setup.state, step, {"eval": eval_metrics})
    return path

  num_steps = int(config.num_steps)
  t0 = time.time()
  status = "completed"
  train_m: dict[str, float] = {}
  eval_m: dict[str, float] | None = None
  pbar = summary_lib.progress(num_steps, start, enabled=is_main and config.progress_bar)
  step = start
  initial_eval: dict[str, float] | None = None
  step_times: list[float] = []   # data wait + step, compiled steps only
  try:
    if start == 0 and config.eval_at_start:
      # The baseline that training must beat, on the same val batches.
      initial_eval, _ = evaluate(setup, config, val_loader)
      writer.eval(0, initial_eval)
    with _StopFlag() as flag:
      while step < num_steps:
        t_step = time.perf_counter()
        batch = _model_inputs(next(data_iter))
        if step + 1 == int(config.debug.nan_at_step):
          batch = _poison(batch)
        gbatch = sharding_lib.shard_batch(batch, mesh)
        rng = jax.random.fold_in(base_key, step)
        setup.state, metrics = setup.train_step(setup.state, gbatch, rng)
        step += 1
        train_m = _host(metrics)
        if step > start + 1:   # the first step compiles
          step_times.append(time.perf_counter() - t_step)
        if not _finite(train_m):
          bad = ", ".join(f"{k}={v}" for k, v in train_m.items() if not math.isfinite(v))
          where = (f"last good checkpoint: {last_good}" if last_good
                   else "no checkpoint was saved before it")
          raise TrainingDiverged(f"non-finite loss at step {step} ({bad}); training "
                                 f"stopped without saving; {where}")
        writer.train(step, train_m, log_tb=step % int(config.log_every) == 0)
        pbar.update(step, train_m)

        improved = False
        eval_now = step % int(config.eval_every) == 0 or step == num_steps
        if eval_now:
          eval_m, first = evaluate(setup, config, val_loader)
          writer.eval(step, eval_m)
          if config.phase == "generator":
            sw = float(setup.state.sync_weight)
            if ("sync" in eval_m and sw != float(config.sync_schedule.value)
                and eval_m["sync"] < float(config.sync_schedule.threshold)):
              setup.state = setup.state.replace(sync_weight=jax.device_put(
                  jnp.float32(config.sync_schedule.value), repl))
              log.info("step %d: eval sync %.4f < %.4f, sync weight -> %g", step,
                       eval_m["sync"], config.sync_schedule.threshold,
                       config.sync_schedule.value)
            if (first is not None and is_main and config.sample_every > 0
                and step % int(config.sample_every) == 0):
              summary_lib.save_sample_grid(workdir, step, first[0], first[1])
          value = eval_m.get(config.best_metric)
          if value is not None and value < best["value"]:
            best = {"value": value, "step": step}
            improved = True
        if step % int(config.checkpoint_every) == 0 or improved or step == num_steps:
          last_good = save(step, eval_m if eval_now else None)
          if improved:
            _export(workdir, "model_best", config, setup.state, step, {"eval": eval_m})
        if step == int(config.debug.pause_at_step) and start == 0:
          while not flag.stop:  # test hook (fresh runs only): wait to be killed
            time.sleep(0.05)
        if flag.stop:
          if ckpt.latest_step() != step:
            last_good = save(step)
          status = "preempted"
          log.warning("SIGTERM: saved %s, stopping", last_good)
          break
  finally:
    data_iter.close()
    pbar.close()
    writer.close()
    ckpt.close()

  wall = time.time() - t0
  summary = {
      "status": status,
      "phase": config.phase,
      "arch": config.model.arch,
      "step": step,
      "num_steps": num_steps,
      "resumed_from": start or None,
      "wall_time_s": round(wall, 3),
      "steps_per_s": round((step - start) / wall, 4) if wall > 0 else None,
      # Median seconds a step, data wait included; compiling, evals and
      # checkpoints excluded.
      "step_time_s": round(float(np.median(step_times)), 4) if step_times else None,
      "final_train": train_m,
      "initial_eval": initial_eval,
      "final_eval": eval_m,
      "best": best if best["step"] is not None else None,
      "last_checkpoint": last_good,
      "devices": jax.device_count(),
      "mesh": dict(mesh.shape),
      "processes": jax.process_count(),
  }
  if is_main:
    summary_lib.write_json_atomic(os.path.join(workdir, "summary.json"), summary)
  if config.distributed:
    _leave_distributed(config)
  return summary
