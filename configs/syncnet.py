"""SyncNet expert (`syncnet_color`): upstream `color_syncnet_train.py`.

    python train.py --config configs/syncnet.py --workdir runs/expert \
        --config.data_dir=data/prep
    python train.py --config configs/syncnet.py:tiny ...   # CPU / tests / demo

Upstream recipe (spec §6.4): batch 64, Adam lr 1e-4 with default betas, BCE
on the cosine similarity of the two (non-negative, L2-normalised)
embeddings, evaluation (loss and accuracy at cos > 0.5) on val.

`loss.learned_logit_scale=True` replaces BCE(cos) by BCE(s * cos + b) with a
learned scalar scale and bias (kept beside the model params, exported in the
model's meta); `optimizer.warmup_steps` adds a linear LR warmup. Both are
off by default (upstream behaviour).
"""

from __future__ import annotations

import ml_collections

from lipsync_jax.train import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.base_config("syncnet")
  c.model.arch = "syncnet_color"
  c.batch_size = 64
  c.num_steps = 500_000
  c.eval_every = 10_000
  c.eval_batches = 100
  c.checkpoint_every = 10_000
  c.optimizer.learning_rate = 1e-4
  if arg == "tiny":
    config_lib.tiny(c)
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; expected 'tiny'")
  return c
