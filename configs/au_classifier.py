"""The AU classifier of the au_tcn variant (variants.md B3 stage 1): a small
CNN from lower-half face crops to AU presence, trained on the stored AU
labels (data_prep/au_labels.py), then frozen as the generator's AU loss.

    python train.py --config configs/au_classifier.py --workdir runs/au_cls \
        --config.data_dir=data/prep

Loss: BCE over the K AUs of every labelled target frame (frames without a
face or landmarks are masked out). Adam 1e-3, batch 32. Evaluation reports
the loss, accuracy and the balanced accuracy averaged over the AUs.
"""

from __future__ import annotations

import ml_collections

from lipsync_jax.train import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.base_config("au")
  c.model.arch = "au_classifier"
  c.batch_size = 32
  c.num_steps = 20_000
  c.eval_every = 1000
  c.eval_batches = 20
  c.checkpoint_every = 1000
  c.optimizer.learning_rate = 1e-3
  if arg == "tiny":
    config_lib.tiny(c)
    c.model.width_multiplier = 0.25
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; expected 'tiny'")
  return c
