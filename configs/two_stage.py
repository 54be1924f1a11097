"""The two-stage real-face model: audio -> lip landmarks -> renderer.

Two configs, one per stage, each trained by `train.py` on a packed dataset
with lip tracks (`data_prep/preprocess.py`, then `data_prep/lip_tracks.py`):

    python train.py --config configs/two_stage.py:renderer --workdir runs/renderer \
        --config.data_dir=data/prep
    python train.py --config configs/two_stage.py:lips --workdir runs/lips \
        --config.data_dir=data/prep

`:renderer` trains `lip_renderer` (models/lip_renderer.py) by reconstruction
alone: the target frame's true lips, its masked upper half and a reference
frame in; L1 + LPIPS (AlexNet) on the face and on the mouth alone + the
Wav2Lip visual-quality GAN out. There is
no expert and no sync loss, so nothing rewards pixel patterns that only a
network reads as lips.

`:lips` trains `audio_to_lips` (models/audio_to_lips.py): regression to the
FaceMesh lip tracks, their frame-to-frame motion, the shipped landmark
expert's sync loss on the predicted landmarks, and a smoothness term, on
9-frame windows.

Both recipes are sized for a 2-core CPU (width 0.25, batch 4 / 32). Run the
pair with `infer.py --checkpoint RENDERER_WORKDIR,LIPS_WORKDIR`, or pack
them into one model directory with `python -m lipsync_jax.two_stage pack`
(docs/two_stage.md). `:renderer_tiny` and `:lips_tiny` are for tests.
"""

from __future__ import annotations

import ml_collections

from lipsync_jax.train import config_lib

VARIANTS = ("renderer", "lips", "renderer_tiny", "lips_tiny")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}; expected one of {VARIANTS}")
  if arg.startswith("renderer"):
    c = config_lib.base_config("generator")
    c.model.arch = "lip_renderer"
    c.model.width_multiplier = 0.25
    c.model.overrides.face_size = 96
    c.data.options.with_lips = True
    # The reference is a closed-mouth frame near the target 3 times in 4, as at
    # inference (InferenceOptions.reference), so openings come from the lips.
    c.data.options.rest_reference = 0.75
    c.batch_size = 4
    c.num_steps = 1600
    c.eval_every = 400
    c.eval_batches = 8
    c.eval_at_start = True
    c.checkpoint_every = 200
    c.sample_every = 400
    c.keep_last = 2
    c.log_every = 10
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 50
    c.optimizer.schedule = "cosine"
    c.optimizer.grad_clip_norm = 1.0
    c.loss.l1_complement = True     # L1 weight = 1 - gan (no sync term)
    c.loss.lpips = 0.3
    c.lpips_net = "alexnet"         # 10x cheaper than VGG16 on a CPU
    c.loss.gan = 0.03
    # The lips, teeth and inside of the mouth get L1 + LPIPS of their own, on
    # a crop around the target's lips (losses.mouth_loss): in the face terms
    # they are a tenth of the pixels, and the renderer drew openings FaceMesh
    # read at 0.84x the size it was given, their motion blurred (r 0.55 on
    # the frame-to-frame change, 0.71 with this term; docs/two_stage.md).
    c.loss.mouth = 1.0
    c.disc.width_multiplier = 0.25
    c.disc.learning_rate = 1e-4
    c.sync_schedule.initial = 0.0
    c.sync_schedule.value = 0.0
    c.best_metric = "l1"
  else:
    c = config_lib.base_config("lips")
    c.model.arch = "audio_to_lips"
    c.model.width_multiplier = 1.0  # not used by audio_to_lips (kept for the exporter)
    c.model.overrides.context = 32
    c.batch_size = 32
    c.num_steps = 1500
    c.eval_every = 500
    c.eval_batches = 16
    c.eval_at_start = True
    c.checkpoint_every = 500
    c.keep_last = 2
    c.log_every = 20
    c.optimizer.learning_rate = 1e-3
    c.optimizer.warmup_steps = 100
    c.optimizer.schedule = "cosine"
    c.optimizer.grad_clip_norm = 1.0
  if arg.endswith("_tiny"):
    config_lib.tiny(c)
    c.num_steps = 6
    c.eval_every = 3
    c.checkpoint_every = 3
    c.sample_every = 3
    c.eval_at_start = False
    c.batch_size = 8
    c.optimizer.warmup_steps = 1
    if arg.startswith("renderer"):
      c.model.width_multiplier = 0.0625
    else:
      c.model.overrides.channels = (8, 8, 8, 8)
      c.model.overrides.width = 32
      c.model.overrides.shape_width = 16
  return c
