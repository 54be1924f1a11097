"""Wav2Lip, the upstream HQ recipe (`hq_wav2lip_train.py`).

    python train.py --config configs/wav2lip.py --workdir runs/w2l \
        --config.data_dir=data/prep --config.syncnet_checkpoint=runs/expert

Loss = sw * sync + 0.07 * GAN + (1 - sw - 0.07) * L1, with the visual-quality
discriminator trained after every G step (BCE(D(y),1) + BCE(D(G(x)),0)),
G and D both Adam lr 1e-4, betas (0.5, 0.999), batch 16. The sync weight sw
starts at 0 and becomes 0.03 once the eval sync loss drops below 0.75
(`sync_schedule`).

Expert BN mode (`expert_bn`): "running" (default) applies the frozen expert
with its BatchNorm running statistics, i.e. exactly the function that was
evaluated when the expert was trained; each sample's sync loss is then
independent of the rest of the batch and of how the batch is split over
devices. Upstream leaves the expert in train mode by accident, so its BN
uses the statistics of the batch of *generated* frames (and drifts its
running stats); "batch" reproduces that (without updating the stats).
"""

from __future__ import annotations

import ml_collections

from lipsync_jax.train import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.base_config("generator")
  c.model.arch = "wav2lip"
  c.batch_size = 16
  c.num_steps = 500_000
  c.eval_every = 3000
  c.eval_batches = 300
  c.checkpoint_every = 3000
  c.optimizer.learning_rate = 1e-4
  c.optimizer.b1 = 0.5
  c.optimizer.b2 = 0.999
  c.loss.l1 = 1.0
  c.loss.l1_complement = True
  c.loss.lpips = 0.0
  c.loss.gan = 0.07
  c.sync_schedule.initial = 0.0
  c.sync_schedule.value = 0.03
  c.sync_schedule.threshold = 0.75
  c.disc.learning_rate = 1e-4
  c.disc.b1 = 0.5
  c.disc.b2 = 0.999
  if arg == "tiny":
    config_lib.tiny(c)
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; expected 'tiny'")
  return c
