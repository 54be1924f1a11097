"""Landmark sync expert (`lip_sync`): FaceMesh lip points + mel, trained on
minutes of real talking-face video.

    python train.py --config configs/lip_sync.py --workdir runs/lip_sync \\
        --config.videos=../shared/data/real/av

trains on the real clips of ../shared (the previous shipped weights, 600
steps). `:all` trains on all the shared clips the expert may see
(`SHARED_VIDEOS_ALL`, relative to the repository root, 2,000 steps):

    python train.py --config configs/lip_sync.py:all --workdir runs/lip_sync

This is how the scorer shipped in `lipsync_jax/assets/lip_sync_expert` was
trained (docs/real_faces.md, "The shipped weights"); add
`--config.export_to=lipsync_jax/assets/lip_sync_expert` to replace it.
On your own data, point `videos` at your folders (comma-separated) and set
`val_speakers` to the speakers to hold out (`speakers` lists
"clip=speaker" entries, clip paths relative to their folder; a
`speakers.json` {clip: speaker} in a folder does the same; otherwise every
clip is its own speaker, named by its path without the extension).

`:tiny` is a few-step version for tests.
"""

from __future__ import annotations

import ml_collections

VARIANTS = (None, "", "tiny", "all")

# The shared real clips (../shared/data/real/av): clips of one person.
SHARED_SPEAKERS = (
    "grid/id2_vcd_swwp2s.mpg=grid/pwij3p",
    "grid/pwij3p.mpg=grid/pwij3p",
    "hdtf/WDA_AlexandriaOcasioCortez_000.mp4=aoc",
    "hdtf/vexpress_AOC_gt.mp4=aoc",
    "retalking/face_3.mp4=aoc",
)
# Held out of training: 10 clips of 10 speakers from all four sources.
SHARED_VAL_SPEAKERS = (
    "grid/bbaf2n", "grid/lbbc2a", "grid/sbwe5n",
    "voxceleb2/00002", "voxceleb2/00086", "voxceleb2/00473", "voxceleb2/741400104",
    "hdtf/WDA_BobMenendez_000", "hdtf/RD_Radio34_000", "retalking/face_2",
)

# `:all`: the real clips, and the 2,065 31-frame clips of Arabic news speakers
# of ../shared/data/lrw_ar (docs/data.md). These have no speaker labels and
# the same anchors recur, so they are training data only, never held out.
# GRID speaker s1 (../shared/data/grid_s1) stays out: he and his recording
# are held-out grid/bbaf2n's. The lrw_ar sound lags its faces by about a
# frame against the real clips' (the expert trained on the real clips alone
# finds its best offset at 0 or +1 on them, at -1 or 0 on the held-out
# real clips), so the trainer realigns it by 1 frame (`audio_lag`).
SHARED_VIDEOS_ALL = ("../shared/data/real/av", "../shared/data/lrw_ar/video")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  if arg not in VARIANTS:
    raise ValueError(f"unknown config variant {arg!r}; expected 'tiny' or 'all'")
  c = ml_collections.ConfigDict()
  c.phase = "lip_sync"
  c.videos = ""                    # folder(s) of talking-face videos, comma-separated
  c.cache_dir = ""                 # lip tracks cache ("" = WORKDIR/lip_cache)
  c.speakers = SHARED_SPEAKERS     # "clip=speaker" entries
  c.val_speakers = SHARED_VAL_SPEAKERS
  c.audio_lag = ()                 # "folder=frames": that folder's audio lags its video
  c.export_to = ""                 # also write the model directory here
  c.min_frames = 25
  c.seed = 0
  c.num_steps = 600
  c.log_every = 50
  c.progress_bar = True
  c.clips_per_batch = 8            # C: clips per step ...
  c.segment = 32                   # L: ... and video windows per clip
  c.max_shift = 15                 # K: same-clip negatives at offsets +-1..K
  c.pair_weight = 0.5              # weight of the decision head's BCE
  c.augment = 1.5                  # lip geometry augmentation strength (0 = off)
  c.mel_gain = 0.2                 # +- uniform level and tilt of the (normalised) mel
  c.mel_shift = 4                  # +- mel bands of random pitch shift
  c.normalise = False              # per-clip lip and mel normalisation (clip_inputs)
  c.model = ml_collections.ConfigDict()
  c.model.embed_dim = 128
  c.model.width = 256
  c.model.band_pool = 1
  c.model.lip_bottleneck = 0
  c.model.window = 5               # frames per window (audio: 16 * window / 5 mel steps)
  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.optimizer.weight_decay = 1e-4
  c.optimizer.grad_clip_norm = 1.0
  # The pixel-to-lips regressor (0 steps: none), exported with the expert as
  # WORKDIR/expert_pixels for generator training.
  c.regressor = ml_collections.ConfigDict()
  c.regressor.num_steps = 1500
  c.regressor.batch_size = 32
  c.regressor.learning_rate = 2e-3
  c.regressor.loss_blur = 1.0      # blur sigma before the regressor in a generator's loss
  c.regressor.model = ml_collections.ConfigDict()
  c.regressor.model.width = 256
  if arg == "all":
    c.videos = ",".join(SHARED_VIDEOS_ALL)
    c.audio_lag = (SHARED_VIDEOS_ALL[1] + "=1",)
    c.num_steps = 2000             # 24 times the frames of the real clips alone
  if arg == "tiny":
    c.regressor.num_steps = 0
    c.regressor.model.width = 32
    c.num_steps = 20
    c.log_every = 5
    c.clips_per_batch = 4
    c.segment = 8
    c.model.embed_dim = 16
    c.model.width = 32
    c.optimizer.warmup_steps = 2
  return c
