"""Shared defaults for the training configs in `configs/`.

The config files hold the recipe (upstream values, our choices, documented
there); this module holds the keys every config has, so that `train.py
--config.key=value` overrides work the same way for all of them.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib

import ml_collections

PHASES = ("syncnet", "generator", "au", "lips")
EXPERT_BN_MODES = ("running", "batch")


def base_config(phase: str) -> ml_collections.ConfigDict:
  """Every key the trainer reads, with neutral defaults."""
  if phase not in PHASES:
    raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
  c = ml_collections.ConfigDict()
  c.phase = phase
  c.data_dir = ""                  # preprocessed dataset (lipsync_jax.data)
  c.batch_size = 16                # global batch, split over all devices
  c.num_steps = 100_000
  c.eval_every = 3000
  c.eval_batches = 50
  c.eval_at_start = False          # also evaluate the initial weights (fresh runs)
  c.checkpoint_every = 3000
  c.keep_last = 3                  # keep the last K checkpoints (+ the best)
  c.log_every = 50                 # TensorBoard scalars / progress-bar refresh
  c.sample_every = 3000            # PNG sample grids (generators only)
  c.seed = 0
  c.worker_count = 0               # grain worker processes (0 = in-process)
  c.progress_bar = True
  c.distributed = False            # call jax.distributed.initialize() first
  c.coordinator_address = ""       # with distributed: process 0's "host:port", or ""
  c.num_processes = 0              # to auto-detect all three (SLURM, Open MPI,
  c.process_id = -1                # TPU pods, ...)
  # Multi-host patience: a peer on a busy or slow host may be minutes late to
  # start, to a heartbeat, or to the exit barrier; these bound hangs, not work.
  c.distributed_init_timeout_s = 900       # wait for every process to join
  c.distributed_heartbeat_timeout_s = 600  # a silent peer is declared dead after
  c.distributed_shutdown_timeout_s = 1800  # wait at the exit barrier for late peers
  c.mesh_devices = 0               # 0: every device; N: the first N (one process only)
  c.mesh_model_axis = 1            # >1 shards large params over a "model" axis
  c.mesh_shard_min_size = 2**18    # ... those with at least this many elements
  c.mixed_precision = False        # bf16 compute, fp32 master weights
  c.init_from = ""                 # fresh runs: start from a saved model (workdir,
                                   # model dir or upstream .pth) of the same arch/size

  c.model = ml_collections.ConfigDict()
  c.model.arch = ""
  c.model.width_multiplier = 1.0
  c.model.overrides = ml_collections.ConfigDict()  # extra models.create kwargs

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"        # "adam" (upstream) or "sgd"
  c.optimizer.learning_rate = 1e-4
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.warmup_steps = 0     # linear warmup from 0, then ...
  c.optimizer.schedule = "constant"  # ... constant, or "cosine" to 0 at num_steps
  c.optimizer.grad_clip_norm = 0.0  # 0 disables clipping

  c.data = ml_collections.ConfigDict()   # extra make_loader sample options
  c.data.options = ml_collections.ConfigDict()

  # Debug hooks used by the tests (never set in real runs).
  c.debug = ml_collections.ConfigDict()
  c.debug.nan_at_step = -1         # poison the batch of this step with NaN
  c.debug.pause_at_step = -1       # fresh runs: wait after this step (kill tests)
  c.debug.exit_delay_s = 0.0       # this many seconds late to the exit barrier ...
  c.debug.exit_delay_process = -1  # ... for this process (slow-peer tests)

  if phase == "syncnet":
    c.best_metric = "loss"
    c.loss = ml_collections.ConfigDict()
    c.loss.learned_logit_scale = False  # BCE(s*cos + b) instead of BCE(cos)
    c.loss.init_logit_scale = 10.0
    c.loss.init_logit_bias = -5.0
    c.loss.in_batch_weight = 0.0        # + w * in-batch InfoNCE (losses.in_batch_sync_loss)
    c.data.options.augment = False      # flip/zoom/shift/colour/mel gain (data/augment.py)
  elif phase == "au":
    # au_classifier / audio_to_au on the stored AU labels (au_tcn stages).
    c.best_metric = "loss"
    c.data.options.with_aus = True
  elif phase == "lips":
    # audio_to_lips on the stored lip tracks (the two-stage model's stage 1).
    c.best_metric = "lips"
    c.lips_expert = "builtin"       # landmark expert of the sync loss: "builtin",
                                    # a lip_sync model dir, or "" (none)
    c.loss = ml_collections.ConfigDict()
    c.loss.lips = 1.0               # |pred - lips| (96-crop px)
    c.loss.motion = 1.0             # |frame-to-frame motion error|
    c.loss.gap = 0.0                # |inner-lip opening error| (the GRID model: 1)
    c.loss.gap_std = 0.0            # |how far the opening moves in a window, error| (GRID: 1)
    c.loss.sync = 0.1               # the expert's -log p(in sync) on predicted lips
    c.loss.smooth = 0.1             # |second difference| (jitter)
    c.data.options.lip_frames = 9   # frames per sample (5-frame sync windows inside)
    c.data.options.lip_context = 32  # mel columns per frame (model.overrides.context)
    c.data.options.single_frame_rest = 0.25
  else:
    c.best_metric = "loss"
    c.syncnet_checkpoint = ""       # path, "builtin" (the shipped landmark expert),
                                    # or "random" (tests/smoke only)
    c.audio_to_au_checkpoint = ""   # au_tcn: trained audio-to-AU (configs/audio_to_au.py)
    c.au_classifier_checkpoint = ""  # au_tcn: frozen AU classifier for loss.au
    c.expert_bn = "running"
    c.expert_width_multiplier = 1.0  # only for syncnet_checkpoint="random"
    c.lpips_net = "vgg16"
    c.loss = ml_collections.ConfigDict()
    c.loss.l1 = 1.0
    c.loss.l1_complement = True     # L1 weight = 1 - sync - gan (upstream)
    c.loss.lpips = 0.0
    c.loss.gan = 0.0
    # Variant losses (steps.combine_generator_losses), 0 = off:
    c.loss.vv = 0.0                 # SyncTalkFace visual-visual sync
    c.loss.store = 0.0              # SyncTalkFace memory storage
    c.loss.align = 0.0              # SyncTalkFace address alignment (KL)
    c.loss.au = 0.0                 # au_tcn AU-classifier consistency
    c.loss.a2au = 0.0               # au_tcn audio-to-AU BCE (needs with_aus)
    c.loss.mouth = 0.0              # L1 + mouth_lpips x LPIPS on the mouth alone (needs lips)
    c.loss.mouth_lpips = 1.0
    c.sync_schedule = ml_collections.ConfigDict()
    c.sync_schedule.initial = 0.0
    c.sync_schedule.value = 0.03
    c.sync_schedule.threshold = 0.75  # switch on when eval sync < threshold
    c.disc = ml_collections.ConfigDict()
    c.disc.arch = "wav2lip_disc_qual"
    c.disc.width_multiplier = 1.0
    c.disc.learning_rate = 1e-4
    c.disc.b1 = 0.5
    c.disc.b2 = 0.999
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a config for the CPU, the tests and the demo."""
  c.batch_size = 8
  c.num_steps = 200
  c.eval_every = 50
  c.eval_batches = 2
  c.checkpoint_every = 50
  c.log_every = 10
  c.sample_every = 50
  c.model.width_multiplier = 0.0625
  if c.phase == "generator":
    c.expert_width_multiplier = 0.0625
    c.disc.width_multiplier = 0.0625
  return c


def load(path: str | os.PathLike, arg: str | None = None) -> ml_collections.ConfigDict:
  """The config that `train.py --config=PATH:ARG` builds: the file's
  `get_config(arg)` (`get_config()` when `arg` is None).

  Raises:
    FileNotFoundError: `path` is not a file.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"config file not found: {path}")
  spec = importlib.util.spec_from_file_location(f"_lipsync_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config() if arg is None else module.get_config(arg)
