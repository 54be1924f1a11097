"""The audio-to-AU module of the au_tcn variant (variants.md B3 stage 2):
mel windows of 5 consecutive frames -> per-frame AU presence, trained with
BCE on the stored AU labels (data_prep/au_labels.py), then loaded into the
generator (`--config.audio_to_au_checkpoint`) and frozen.

    python train.py --config configs/audio_to_au.py --workdir runs/a2au \
        --config.data_dir=data/prep

Its width multiplier must equal the generator's. Adam 1e-3, batch 32. Evaluation reports the loss, accuracy and the balanced
accuracy averaged over the AUs.
"""

from __future__ import annotations

import ml_collections

from lipsync_jax.train import config_lib


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = config_lib.base_config("au")
  c.model.arch = "audio_to_au"
  c.batch_size = 32
  c.num_steps = 20_000
  c.eval_every = 1000
  c.eval_batches = 20
  c.checkpoint_every = 1000
  c.optimizer.learning_rate = 1e-3
  if arg == "tiny":
    config_lib.tiny(c)           # width 0.0625, as configs/au_tcn.py:tiny
  elif arg:
    raise ValueError(f"unknown config variant {arg!r}; expected 'tiny'")
  return c
