"""Training configs of the end-to-end demo (`python -m lipsync_jax.demo`).

    configs/demo.py:syncnet          the demo's SyncNet expert
    configs/demo.py:generator        the demo's LPIPS-AttnWav2Lip
    configs/demo.py:syncnet_quick    reduced versions for CI (`--quick`)
    configs/demo.py:generator_quick

They start from the `tiny` variants of configs/syncnet.py and
configs/lpips_attnwav2lip.py and are tuned for a few minutes on a 2-core CPU
on the synthetic dataset of `lipsync_jax.data.synthetic`:

* expert: configs/syncnet.py:tiny (learned logit scale + in-batch InfoNCE,
  lr 1e-3 with a short warmup, cosine decay) at width 0.25 and batch 32: width 0.125
  plateaus near 70% val accuracy on the held-out identity (README, "Training
  the expert");
* generator: the sync loss is on from the start (the expert is trained on
  exactly this data, so there is no reason to wait for the upstream eval-sync
  threshold) with a larger weight than upstream's 0.03, because a few hundred
  steps of L1 alone only learn to copy the reference mouth;
* generator widths: 0.125 of every level except the two shallowest, which
  keep 16 channels (`encoder_widths` 128, 128 at 0.125). With the plain 0.125
  the 96x96 level has 4 channels, too few to carry a face's colours: the
  mouth came out grey with a cyan cast (issue 18). Measured on one fixed
  batch (L1 only, 100 steps, lr 1e-3): 4 channels at 96x96 end at L1 0.149,
  8 at 0.075, 16 at 0.042, at 0.32 / 0.55 / 0.77 s a step;
* generator LPIPS weight 0.5: the sync loss alone drew striped, blue-cast
  mouths. Full demo, seed 0, 300 steps at lr 2e-3 (lip colour: mean Lab
  distance on the truth's lip pixels, `demo.score_mouths`):

    96x96 channels, LPIPS   LSE-D  offsets  lip colour  mouth LPIPS  time
    8,  0.1                 0.877  0 0 0    40.2        0.117        215 s
    16, 0.1                 0.869  0 0 0    43.1        0.090        314 s
    16, 0.5                 0.920  0 0 0    39.0        0.072        278 s

  (the truth: LSE-D 0.743; the initial weights: 1.16, lip colour 64).
* generator decoder upsampling: nearest x2 + conv (`decoder_upsample`
  "resize") instead of transposed convs, whose checkerboard 300 steps left
  in the open mouth (seed 2: a dark box with a dotted green and magenta
  edge, colour speckle 5.8 against the truth's 3.3). Seeds 0 / 1 / 2, the
  same data and experts, transposed -> resize: LSE-D 0.998 / 0.880 / 0.768
  -> 0.864 / 0.839 / 0.808, offsets 0 on all 9 videos either way; lip
  colour 46.8 / 35.5 / 37.1 -> 34.2 / 41.4 / 34.0; mouth LPIPS 0.076 /
  0.066 / 0.075 -> 0.064 / 0.069 / 0.066; speckle 3.7 / 2.6 / 5.8 -> 2.4 /
  2.5 / 2.9 (truths 3.5 / 3.6 / 3.3). A sync-input blur (sigma 1 or 0.5
  before the expert) was tried against seed 2's dots first and dropped:
  speckle 4.9 / 4.4 but LSE-D 0.906 / 0.899 and lip colour 39.0 / 45.1.

The demo sets `data_dir`, `syncnet_checkpoint` and `seed` itself.
"""

from __future__ import annotations

import pathlib

import ml_collections

from lipsync_jax.train import config_lib


def _sibling(name: str, arg: str) -> ml_collections.ConfigDict:
  """configs/<name>.py:<arg> (configs/ is not a package)."""
  return config_lib.load(pathlib.Path(__file__).resolve().with_name(f"{name}.py"), arg)

VARIANTS = ("syncnet", "generator", "syncnet_quick", "generator_quick")


def syncnet(quick: bool = False) -> ml_collections.ConfigDict:
  c = _sibling("syncnet", "tiny")
  c.model.width_multiplier = 0.25
  c.batch_size = 32
  # 1000 steps: with 800 the held-out accuracy was 92.8 / 90.2 / 88.3% on
  # seeds 0 / 1 / 2; seed 2 with 1000 steps reaches 91.2% (512 val pairs).
  c.num_steps = 200 if quick else 1000
  # Cosine decay to 0: with a constant 1e-3 the final val accuracy swings
  # with the last steps' noise (seed 1: 85.5% at step 666, 79.7% at 1000);
  # decayed, the same run ends at 93.8%.
  c.optimizer.schedule = "cosine"
  c.eval_every = c.num_steps // 2
  # 512 val pairs: the accuracy the demo reports is +-1.3% (1 sd), not +-2%.
  c.eval_batches = 8 if quick else 16
  c.checkpoint_every = c.num_steps
  c.keep_last = 1
  c.log_every = 10
  c.best_metric = "loss"
  return c


def generator(quick: bool = False) -> ml_collections.ConfigDict:
  c = _sibling("lpips_attnwav2lip", "tiny")
  # Width 0.125 with 16 channels at 96x96 and 48x48 (module docstring): fewer
  # channels there cannot carry the face's colours.
  c.model.width_multiplier = 0.125
  c.model.overrides.encoder_widths = (128, 128, 128, 256, 512)
  # Nearest x2 + conv in the decoder instead of transposed convs: those draw
  # a checkerboard, which 300 steps left in the open mouth (module docstring).
  c.model.overrides.decoder_upsample = "resize"
  c.batch_size = 4
  # Full: 300 steps at lr 2e-3 (seed 0: val sync loss 1.41 -> 0.53, best
  # offset 0 on all 3 held-out videos; 200 steps at 1e-3 left them at 10, 7
  # and 1). Quick: 160 steps at sync weight 0.1 (below).
  c.num_steps = 160 if quick else 300
  c.eval_every = c.num_steps
  c.eval_batches = 16 if quick else 8  # quick: 64 val windows (below)
  c.eval_at_start = True  # the baseline the demo's table compares against
  c.checkpoint_every = c.num_steps
  c.sample_every = c.num_steps
  c.keep_last = 1
  c.log_every = 10
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 20
  c.loss.lpips = 0.5
  # Quick: its 200-step expert is weak (val accuracy 66-68%), and a weak
  # expert's gradient is easy to satisfy with colour patterns: at sync weight
  # 0.2-0.3 the quick generator drew striped, dotted cyan mouths that the
  # scalar scores hardly saw (demo.score_mouths' colour speckle does). Seed 0,
  # one AVX-512 EPYC, same data and expert (val sync loss at init 1.234,
  # mouth-crop LPIPS 0.327, speckle 29.9, the truth's 3.9):
  #   sync  LPIPS  steps   val sync  mouth LPIPS  lip colour  speckle  look
  #   0.3   0.5    120     1.152     0.174        51.4        21.7     dotted cyan
  #   0.3   1.0    120     1.045     0.137        52.6        18.1     striped lips
  #   0.2   1.0    120     0.865     0.098        44.6        27.6     striped lips
  #   0.1   0.5    120     1.000     0.091        44.4         3.5     clean
  #   0.1   0.5    160     0.985     0.092        40.1         2.8     clean
  # With the resize decoder (its own init: val sync loss 1.271, mouth LPIPS
  # 0.352, lip colour 63.4, speckle 22.2):
  #   0.1   0.5    160     0.849     0.108        49.0         2.7     clean, paler
  # At 80 steps and 0.1 the val sync loss had risen on an AVX2-only CPU
  # (1.203 -> 1.224), so the quick run takes 160 steps and scores them on 64
  # val windows rather than 32 (the paired init/final difference is then
  # less exposed to which windows were drawn).
  c.sync_schedule.initial = 0.1
  c.sync_schedule.value = 0.1
  c.best_metric = "loss"
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}; expected one of {VARIANTS}")
  quick = arg.endswith("_quick")
  return syncnet(quick) if arg.startswith("syncnet") else generator(quick)
