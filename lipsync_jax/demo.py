"""The one-command end-to-end demo: synthesise, prepare, train, lip-sync, score.

    python -m lipsync_jax.demo --workdir runs/demo [--quick] [--seed 0] [--face-size 96]

Offline and on CPU, from installed packages only:

1. synthesize  talking-face clips (`lipsync_jax.data.synthetic`: eSpeak NG speech,
               the skimage astronaut in 4 identities, a mouth drawn from the
               phoneme timings) as mp4 files in DIR/raw/id<k>/. Identity 3 is
               held out of training: its clips form the val split.
               DIR/heldout/ holds a held-out face clip (identity 3), an unseen
               sentence (speech.wav) and the ground truth (identity 3 saying
               that sentence with the same head motion).
2. prepare     DIR/raw -> DIR/data with `data_prep` (real detector, packed
               ArrayRecord format); splits: train = identities 0-2, val =
               identity 3.
   estimate    time a few steps of each training stage with its own config and
               data, and print the whole run's estimated time on this machine,
               named (`estimate`; the summary puts it beside the actual time).
3. expert      train the SyncNet (configs/demo.py:syncnet) -> DIR/expert.
4. generator   train LPIPS-AttnWav2Lip against it (configs/demo.py:generator)
               -> DIR/generator.
5. lipsync     the held-out face to the held-out sentence with the inference
               pipeline, with the initial (untrained) and the trained weights.
6. evaluate    LSE-D / LSE-C (our expert as scorer) of before, after and the
               ground truth, with the evaluation code; then (stage "mouth")
               the lip colour on the truth's lip pixels (the mean-colour
               distance, target <= 15, with the input face's own lips as the
               reference) and the mouth-crop LPIPS against the truth, before
               and after.
7. report      DIR/demo.mp4 (input | output | ground truth, with the audio),
               DIR/report/ (loss curves, mouth-crop grid), DIR/demo_summary.json
               (with the machine and each training stage's seconds a step)
               and the printed table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

import numpy as np

from lipsync_jax import cache
from lipsync_jax import machine

# jax, flax and the training code are imported inside the stages, so that
# `--help` and argument errors are instant.

IDENTITIES = 4
FACE_SIZES = (96, 192, 256)  # --face-size: the generator's (and the data's) faces
HELDOUT_IDENTITY = 3
# The demo's lip-colour target: the trained mouth's mean colour on the
# truth's lip pixels within this Lab distance of the truth's (the input
# face's own lips, real lips shaped for other words, are the reference).
LIP_COLOUR_TARGET = 15.0
STAGES = ("synthesize", "prepare", "estimate", "expert", "generator", "lipsync", "evaluate",
          "mouth", "report")


class DemoError(ValueError):
  """A demo failure with a one-line message."""


@dataclasses.dataclass(frozen=True)
class DemoSpec:
  """Sizes of a demo run.

  Attributes:
    clips_per_identity: training clips per training identity (0-2).
    val_clips: clips of the held-out identity (the val split).
    num_phrases: phrases per sentence (a phrase is ~1.5 s of speech).
    heldout_pairs: held-out (face clip, sentence) pairs that are scored; the
      first one is the demo video.
    quick: use the `_quick` training configs.
  """
  clips_per_identity: int
  val_clips: int
  num_phrases: int
  heldout_pairs: int
  quick: bool


FULL = DemoSpec(clips_per_identity=20, val_clips=8, num_phrases=2, heldout_pairs=3,
                quick=False)
QUICK = DemoSpec(clips_per_identity=4, val_clips=3, num_phrases=2, heldout_pairs=1,
                 quick=True)


# -----------------------------------------------------------------------------
# Configs.
# -----------------------------------------------------------------------------

def _repo_root() -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parents[1]


def load_config(variant: str):
  """`configs/demo.py:<variant>` as an ml_collections ConfigDict."""
  from lipsync_jax.train import config_lib  # pylint: disable=import-outside-toplevel
  path = _repo_root() / "configs" / "demo.py"
  if not path.is_file():
    raise DemoError(f"demo config not found: {path} (run the demo from a source checkout)")
  return config_lib.load(path, variant)


# -----------------------------------------------------------------------------
# Stage 1: synthetic data.
# -----------------------------------------------------------------------------

def _clip_plan(spec: DemoSpec, seed: int) -> list[tuple[str, int, int]]:
  """(relative path, identity, clip seed) of every raw clip."""
  plan = []
  base = 1000 * (seed + 1)
  k = 0
  for ident in range(IDENTITIES):
    n = spec.val_clips if ident == HELDOUT_IDENTITY else spec.clips_per_identity
    for j in range(n):
      plan.append((f"id{ident}/clip{j:03d}.mp4", ident, base + k))
      k += 1
  return plan


def synthesize_data(workdir: pathlib.Path, spec: DemoSpec, seed: int,
                    progress: bool = True) -> dict[str, Any]:
  """Writes DIR/raw/id<k>/*.mp4 and DIR/heldout/pair<j>/{face.mp4, speech.wav,
  ground_truth.mp4}; returns a description of the held-out pairs."""
  import soundfile as sf  # pylint: disable=import-outside-toplevel
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import synthetic  # pylint: disable=import-outside-toplevel

  plan = _clip_plan(spec, seed)
  raw = workdir / "raw"
  used_texts = set()
  bar = tqdm(total=len(plan) + 2 * spec.heldout_pairs, desc="synthesize", unit="clip",
             disable=not progress, dynamic_ncols=True)
  with bar:
    for rel, ident, clip_seed in plan:
      path = raw / rel
      clip = synthetic.make_clip(clip_seed, identity=ident, num_phrases=spec.num_phrases)
      used_texts.add(clip.text)
      if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic.write_clip(path, clip)
      bar.update()
    pairs = []
    rng = np.random.default_rng(10_000 + seed)
    for j in range(spec.heldout_pairs):
      d = workdir / "heldout" / f"pair{j}"
      d.mkdir(parents=True, exist_ok=True)
      motion_seed = int(rng.integers(1 << 30))
      # The face clip says a longer sentence, so that it covers the audio.
      face_text = synthetic.random_sentence(rng, spec.num_phrases + 1)
      face_voice = synthetic.random_voice(rng)
      text = synthetic.random_sentence(rng, spec.num_phrases)
      while text in used_texts:
        text = synthetic.random_sentence(rng, spec.num_phrases)
      voice = synthetic.random_voice(rng)
      face = synthetic.render_clip(face_text, HELDOUT_IDENTITY, motion_seed=motion_seed,
                                   **face_voice)
      synthetic.write_clip(d / "face.mp4", face)
      bar.update()
      truth = synthetic.render_clip(text, HELDOUT_IDENTITY, motion_seed=motion_seed,
                                    lip_mask=True, **voice)
      synthetic.write_clip(d / "ground_truth.mp4", truth)
      np.savez_compressed(d / "lip_mask.npz", mask=truth.lip_mask)
      _write_wav(d / "speech.wav", truth.wav, synthetic.SAMPLE_RATE, sf)
      bar.update()
      pairs.append({"dir": str(d), "face_text": face_text, "text": text,
                    "voice": voice["voice"], "frames": int(len(truth.frames))})
  return {"clips": len(plan), "train_clips": sum(1 for p in plan if p[1] != HELDOUT_IDENTITY),
          "val_clips": spec.val_clips, "heldout": pairs}


def _write_wav(path: pathlib.Path, wav: np.ndarray, sr: int, sf) -> None:
  tmp = path.with_name(f".{path.name}.tmp.wav")
  sf.write(tmp, wav, sr, subtype="PCM_16")
  os.replace(tmp, path)


# -----------------------------------------------------------------------------
# Stage 2: data_prep.
# -----------------------------------------------------------------------------

def prepare_data(workdir: pathlib.Path, progress: bool = True,
                 face_size: int = 96) -> dict[str, Any]:
  """data_prep on DIR/raw (crops of `face_size`), then train/val splits by
  identity."""
  from lipsync_jax.data import format as fmt  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import preprocess_lib  # pylint: disable=import-outside-toplevel
  data_dir = workdir / "data"
  report = preprocess_lib.run(workdir / "raw", data_dir,
                              preprocess_lib.PrepConfig(img_size=int(face_size)),
                              workers=1, progress=progress)
  index = fmt.load_index(data_dir)
  held = f"id{HELDOUT_IDENTITY}/"
  train = [c.clip_id for c in index.clips if not c.clip_id.startswith(held)]
  val = [c.clip_id for c in index.clips if c.clip_id.startswith(held)]
  if not train or not val:
    raise DemoError(f"data_prep kept {len(train)} training and {len(val)} held-out clips; "
                    f"see {data_dir / 'report.json'}")
  fmt.write_splits(data_dir, {"train": train, "val": val, "test": val})
  failed = [e for e in report.get("clips", []) if e.get("status") != "ok"]
  return {"data_dir": str(data_dir), "train_clips": len(train), "val_clips": len(val),
          "failed": len(failed)}


# -----------------------------------------------------------------------------
# Stages 3-4: training.
# -----------------------------------------------------------------------------

def _generator_config(spec: DemoSpec, face_size: int = 96):
  config = load_config("generator" + ("_quick" if spec.quick else ""))
  if face_size != 96:
    config.model.overrides.face_size = int(face_size)
  return config


def _train_config(workdir: pathlib.Path, phase: str, spec: DemoSpec, seed: int,
                  progress: bool = True, face_size: int = 96):
  """The config `train` runs for `phase` ("syncnet" or "generator")."""
  import jax  # pylint: disable=import-outside-toplevel
  config = (_generator_config(spec, face_size) if phase == "generator"
            else load_config(phase + ("_quick" if spec.quick else "")))
  config.data_dir = str(workdir / "data")
  config.seed = int(seed)
  config.progress_bar = progress
  # The demo's batches are sized for one CPU; on a multi-device host round
  # them up so that every data-parallel device gets the same share.
  data_devices = jax.device_count() // int(config.mesh_model_axis)
  config.batch_size = -(-int(config.batch_size) // data_devices) * data_devices
  if phase == "generator":
    config.syncnet_checkpoint = str(workdir / "expert" / "model")
  return config


def train(workdir: pathlib.Path, phase: str, spec: DemoSpec, seed: int,
          progress: bool = True, face_size: int = 96) -> dict[str, Any]:
  """Runs `train_lib.train_and_evaluate` with the demo config of `phase`
  (the generator at `face_size`; the expert takes any size)."""
  from lipsync_jax.train import train_lib  # pylint: disable=import-outside-toplevel
  config = _train_config(workdir, phase, spec, seed, progress, face_size)
  out = workdir / ("expert" if phase == "syncnet" else "generator")
  summary = train_lib.train_and_evaluate(config, str(out))
  if summary["status"] != "completed":
    raise DemoError(f"{phase} training stopped at step {summary['step']} "
                    f"({summary['status']})")
  return summary


def initial_generator(workdir: pathlib.Path, spec: DemoSpec, seed: int,
                      face_size: int = 96) -> pathlib.Path:
  """Exports the generator's initial weights (the trainer's init for `seed`)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from lipsync_jax import models  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import train_lib  # pylint: disable=import-outside-toplevel
  config = _generator_config(spec, face_size)
  kwargs = train_lib.model_kwargs(config)
  module = models.create(config.model.arch, **kwargs)
  init_rng, _ = jax.random.split(jax.random.PRNGKey(int(seed)))
  size = int(face_size)
  variables = jax.jit(lambda r: module.init(
      r, jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, size, size, 6)), train=False))(init_rng)
  path = workdir / "generator_init"
  if not path.exists():
    checkpoint.save_model(str(path), config.model.arch, kwargs,
                          jax.device_get(dict(variables)), extra_meta={"step": 0})
  return path


# -----------------------------------------------------------------------------
# The time estimate, before training.
# -----------------------------------------------------------------------------

PROBE_STEPS = 3  # timed steps of each training stage, after the one that compiles
# The stages after training (lipsync, evaluate, mouth, report) are not
# probed: they take a fixed part (mostly compiling the inference generator
# and the scorers) and a part a held-out pair, fitted to two runs on the
# reference machine, a 2-core AMD EPYC with AVX-512: the full demo of
# 2026-12-03 (45.4 s for its 3 pairs, idle) and a quick demo of 2026-12-04
# (94.8 s for its 1 pair, cold compilation cache, beside other jobs that
# slowed its training steps 1.9-3.1x; about 38 s idle). They are scaled to
# this machine by the ratio of the expert's probed step to that machine's
# (0.355 s a step, the demo config).
_REF_AFTER_TRAINING_S = (34.0, 3.7)   # fixed, a pair
_REF_EXPERT_STEP_S = 0.355
# With JAX's persistent compilation cache on (the default), the training
# stages load the steps the probe compiled instead of compiling them again
# (measured: a 14-24 s expert step compile loads in 1-4 s).
_CACHED_LOAD_S = 2.0
# A checkpoint: orbax's save of the state beside the exported model.
_SAVE_S = 1.0


def _median(values: Sequence[float]) -> float:
  return float(np.median(np.asarray(values, np.float64)))


def probe_training(config, expert_out: pathlib.Path | None = None) -> dict[str, float]:
  """Times a few steps of one training stage with its own config, data and
  jitted step (what `train_lib.train_and_evaluate` builds).

  Returns seconds: `setup` (loaders, models, optimiser), `compile` (the first
  step beyond a compiled one), `step` (median of `PROBE_STEPS` compiled
  steps, data already loaded), `eval_compile`, `eval_batch` (one compiled val
  batch) and `export` (writing the model directory, a stand-in for a
  checkpoint). The probed model is written to `expert_out` if given: the
  initial expert, a stand-in that lets the generator be probed before the
  expert is trained (the same architecture, so the same compiled step).
  """
  import jax  # pylint: disable=import-outside-toplevel
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import train_lib  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  mesh = sharding_lib.make_mesh(int(config.mesh_devices) or None,
                                model_axis=int(config.mesh_model_axis))
  train_it = iter(train_lib.make_train_loader(config))
  val_it = iter(train_lib.make_val_loader(config))
  setup = train_lib.build(config, mesh)
  inputs = train_lib._model_inputs  # pylint: disable=protected-access
  batches = [sharding_lib.shard_batch(inputs(next(train_it)), mesh)
             for _ in range(1 + PROBE_STEPS)]
  val_batch = sharding_lib.shard_batch(inputs(next(val_it)), mesh)
  out = {"setup": time.perf_counter() - t0}
  state, key, times = setup.state, jax.random.PRNGKey(int(config.seed)), []
  for i, batch in enumerate(batches):
    t = time.perf_counter()
    state, metrics = setup.train_step(state, batch, jax.random.fold_in(key, i))
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t)
  out["step"] = _median(times[1:])
  out["compile"] = max(0.0, times[0] - out["step"])
  times = []
  for _ in range(2):
    t = time.perf_counter()
    jax.block_until_ready(setup.eval_step(state, val_batch))
    times.append(time.perf_counter() - t)
  out["eval_batch"] = times[1]
  out["eval_compile"] = max(0.0, times[0] - times[1])
  t = time.perf_counter()
  variables = {"params": jax.device_get(state.params)}
  if state.batch_stats:
    variables["batch_stats"] = jax.device_get(state.batch_stats)
  meta = {"step": 0, "phase": config.phase}
  if "scale" in state.head:
    meta.update(logit_scale=float(state.head["scale"]), logit_bias=float(state.head["bias"]))
  with tempfile.TemporaryDirectory() as tmp:
    path = expert_out if expert_out is not None else pathlib.Path(tmp) / "model"
    checkpoint.save_model(str(path), config.model.arch, train_lib.model_kwargs(config),
                          variables, extra_meta=meta)
  out["export"] = time.perf_counter() - t
  return {k: round(v, 3) for k, v in out.items()}


def _stage_estimate(config, probe: dict[str, float], cached: bool) -> dict[str, Any]:
  """Seconds one training stage will take: `probe` (`probe_training`)
  spread over the config's steps, evaluations and checkpoints."""
  steps = int(config.num_steps)
  evals = steps // int(config.eval_every) + (steps % int(config.eval_every) > 0)
  evals += bool(config.eval_at_start)
  # A checkpoint at every evaluation that improves and at the end, with the
  # exported model (and model_best): a save and two exports each.
  saves = steps // int(config.checkpoint_every) + max(0, evals - 1)
  compile_s = (2 * _CACHED_LOAD_S if cached
               else probe["compile"] + probe["eval_compile"])
  fixed = (probe["setup"] + compile_s + evals * int(config.eval_batches) * probe["eval_batch"]
           + saves * (_SAVE_S + 2 * probe["export"]))
  return {"steps": steps, "step_s": probe["step"], "fixed_s": round(fixed, 1),
          "total_s": round(fixed + steps * probe["step"], 1)}


def estimate(workdir: pathlib.Path, spec: DemoSpec, seed: int, face_size: int,
             elapsed_s: float) -> dict[str, Any]:
  """The whole run's time on this machine, before training: a few timed
  steps of the expert and the generator (`probe_training`), the stages
  after training scaled from the reference machine (`_REF_AFTER_TRAINING_S`),
  and `elapsed_s`, the stages already run."""
  import jax  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  cached = bool(jax.config.jax_compilation_cache_dir)
  probe_dir = workdir / "probe"
  shutil.rmtree(probe_dir, ignore_errors=True)
  probe_dir.mkdir()
  try:
    expert_cfg = _train_config(workdir, "syncnet", spec, seed, False, face_size)
    expert_probe = probe_training(expert_cfg, expert_out=probe_dir / "expert")
    gen_cfg = _train_config(workdir, "generator", spec, seed, False, face_size)
    gen_cfg.syncnet_checkpoint = str(probe_dir / "expert")
    gen_probe = probe_training(gen_cfg)
  finally:
    shutil.rmtree(probe_dir, ignore_errors=True)
  expert = _stage_estimate(expert_cfg, expert_probe, cached)
  generator = _stage_estimate(gen_cfg, gen_probe, cached)
  speed = expert_probe["step"] / _REF_EXPERT_STEP_S
  fixed, per_pair = _REF_AFTER_TRAINING_S
  after = round(speed * (fixed + per_pair * spec.heldout_pairs), 1)
  elapsed_s += time.perf_counter() - t0   # the probe itself
  return {"expert": {**expert, "probe": expert_probe},
          "generator": {**generator, "probe": gen_probe},
          "after_training_s": after, "before_training_s": round(elapsed_s, 1),
          "compilation_cache": cached,
          "total_s": round(elapsed_s + expert["total_s"] + generator["total_s"] + after, 1)}


def format_estimate(est: dict[str, Any], info: dict[str, Any]) -> str:
  """The line printed before training."""
  e, g = est["expert"], est["generator"]
  return (f"estimated {est['total_s'] / 60:.1f} min for the whole demo on "
          f"{machine.one_line(info)}: {est['before_training_s']:.0f} s so far, expert "
          f"{e['steps']} steps x {e['step_s']:.3f} s + {e['fixed_s']:.0f} s, generator "
          f"{g['steps']} steps x {g['step_s']:.3f} s + {g['fixed_s']:.0f} s, then "
          f"{est['after_training_s']:.0f} s (timed on {PROBE_STEPS} steps of each)")


# -----------------------------------------------------------------------------
# Stages 5-6: lip-sync and evaluation.
# -----------------------------------------------------------------------------

def lipsync(workdir: pathlib.Path, pairs: Sequence[dict[str, Any]],
            progress: bool = True) -> dict[str, Any]:
  """Runs the inference pipeline for every held-out pair, before and after."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
  models = {"before": workdir / "generator_init", "after": workdir / "generator" / "model"}
  cache = str(workdir / "cache")
  out: dict[str, Any] = {}
  bar = tqdm(total=len(models) * len(pairs), desc="lipsync", unit="video",
             disable=not progress, dynamic_ncols=True)
  with bar:
    for name, ckpt in models.items():
      syncer = inference.LipSyncer.from_checkpoint(ckpt, batch_size=16, cache_dir=cache)
      for pair in pairs:
        d = pathlib.Path(pair["dir"])
        target = d / f"{name}.mp4"
        report = syncer.run(d / "face.mp4", d / "speech.wav", target)
        out.setdefault(name, []).append(report.to_dict())
        bar.update()
  return out


def score_videos(workdir: pathlib.Path, pairs: Sequence[dict[str, Any]],
                 progress: bool = True) -> dict[str, Any]:
  """LSE-D / LSE-C of before, after and ground truth with the trained expert.

  Returns per-video scores, their means, and the face crops of the first
  pair (for the mouth grid)."""
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_detection  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_crops  # pylint: disable=import-outside-toplevel
  from lipsync_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  scorer = metrics.load_scorer(str(workdir / "expert" / "model"))
  detector = face_detection.create_detector("default")
  names = ("before", "after", "ground_truth")
  scores: dict[str, list[dict[str, float]]] = {n: [] for n in names}
  crops_first: dict[str, np.ndarray] = {}
  bar = tqdm(total=len(names) * len(pairs), desc="evaluate", unit="video",
             disable=not progress, dynamic_ncols=True)
  with bar:
    for j, pair in enumerate(pairs):
      d = pathlib.Path(pair["dir"])
      for n in names:
        path = d / f"{n}.mp4"
        crops, first, fps, _ = face_crops.video_face_crops(str(path), scorer.face_size,
                                                         detector, min_frames=10)
        result = metrics.sync_scores(scorer, crops, metrics.ClipAudio(
            wav=audio_lib.load_audio(path)), fps, first_frame=first)
        scores[n].append({"lse_d": result.lse_d, "lse_c": result.lse_c,
                          "offset": result.offset})
        if j == 0:
          crops_first[n] = crops
        bar.update()
  summary = {n: {"lse_d": float(np.mean([s["lse_d"] for s in v])),
                 "lse_c": float(np.mean([s["lse_c"] for s in v])),
                 "per_video": v} for n, v in scores.items()}
  return {"scorer": scorer.name, "scores": summary, "crops": crops_first}


def score_mouths(pairs: Sequence[dict[str, Any]], crops: dict[str, np.ndarray]
                 ) -> dict[str, Any]:
  """How the redrawn mouth looks next to the ground truth, before and after.

  lip colour: `metrics.masked_lab_distance` of the output frames on the ground
  truth's lip pixels (DIR/heldout/pair<j>/lip_mask.npz), averaged over the
  pairs, and of the input face as a reference ("input": real lips of the
  right colour, shaped for other words); mouth LPIPS: AlexNet LPIPS of the
  lower halves of the first pair's face crops against the ground truth's; in
  the mouth region at the video's resolution: PSNR / SSIM / LPIPS, sharpness
  (`metrics.laplacian_variance`) and colour speckle (`metrics.chroma_noise`,
  which catches striped mouths that the other scores miss).
  """
  from lipsync_jax.io import video as video_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  out: dict[str, Any] = {}
  lpips = metrics.LPIPSMetric("alexnet")
  truths = []  # each pair's ground truth and lip mask, decoded once for both models
  for pair in pairs:
    d = pathlib.Path(pair["dir"])
    truths.append((np.stack(list(video_lib.iter_frames(str(d / "ground_truth.mp4")))),
                   np.load(d / "lip_mask.npz")["mask"]))
  # The mouth region at the video's own resolution: the box around every
  # pair's lip pixels, with half its size again as margin on each side.
  ys, xs = np.nonzero(np.any([m.any(axis=0) for _, m in truths], axis=0))
  h, w = truths[0][1].shape[1:]
  my, mx = (ys.max() - ys.min()) // 2, (xs.max() - xs.min()) // 2
  region = (slice(max(0, ys.min() - my), min(h, ys.max() + my + 1)),
            slice(max(0, xs.min() - mx), min(w, xs.max() + mx + 1)))
  crop = lambda x: x[:, region[0], region[1]]
  out["mouth_region"] = [int(region[0].start), int(region[0].stop),
                         int(region[1].start), int(region[1].stop)]
  out["ground_truth"] = {
      "mouth_sharpness": float(np.mean(np.concatenate(
          [metrics.laplacian_variance(crop(t)) for t, _ in truths]))),
      "mouth_chroma_noise": float(np.mean(np.concatenate(
          [metrics.chroma_noise(crop(t)) for t, _ in truths])))}

  def against_truth(name: str):
    """Each pair's DIR/heldout/pair<j>/<name>.mp4 frames with its truth and
    lip mask, cut to their common length."""
    for pair, (truth, mask) in zip(pairs, truths):
      frames = np.stack(list(video_lib.iter_frames(str(pathlib.Path(pair["dir"]) /
                                                       f"{name}.mp4"))))
      n = min(len(frames), len(truth), len(mask))
      yield frames[:n], truth[:n], mask[:n]

  def lip_colour(colours: list[dict[str, Any]]) -> dict[str, float]:
    return {"lip_lab_distance": float(np.mean([c["lab_distance"] for c in colours])),
            "lip_mean_colour_lab_distance": float(np.mean(
                [c["mean_colour_lab_distance"] for c in colours]))}

  # A reference for the lip colour score: the input face's own lips (the
  # same identity and head motion, saying other words) have the truth's
  # colour but another shape, and the per-pixel distance counts the shape.
  out["input"] = lip_colour([metrics.masked_lab_distance(*x) for x in against_truth("face")])
  for name in ("before", "after"):
    colours, recon, sharp, speckle = [], [], [], []
    for frames, truth, mask in against_truth(name):
      colours.append(metrics.masked_lab_distance(frames, truth, mask))
      recon.append(metrics.reconstruction_metrics(crop(frames), crop(truth), lpips))
      sharp.append(metrics.laplacian_variance(crop(frames)))
      speckle.append(metrics.chroma_noise(crop(frames)))
    entry = {**lip_colour(colours),
             "lip_mean_bgr": colours[0]["mean_bgr"],
             "truth_lip_mean_bgr": colours[0]["target_mean_bgr"],
             # In the mouth region at the video's resolution (sharpness:
             # variance of the Laplacian; the truth's is out["ground_truth"]).
             **{f"mouth_region_{k}": float(np.mean([r[k] for r in recon]))
                for k in ("psnr", "ssim", "lpips")},
             "mouth_sharpness": float(np.mean(np.concatenate(sharp))),
             # Colour speckle (striped / dotted mouths; the truth's is
             # out["ground_truth"]).
             "mouth_chroma_noise": float(np.mean(np.concatenate(speckle)))}
    if name in crops and "ground_truth" in crops:
      n = min(len(crops[name]), len(crops["ground_truth"]))
      half = crops[name].shape[1] // 2
      entry["mouth_lpips"] = float(np.mean(lpips(crops[name][:n, half:],
                                                 crops["ground_truth"][:n, half:])))
    out[name] = entry
  return out


# -----------------------------------------------------------------------------
# Stage 7: outputs.
# -----------------------------------------------------------------------------

def _label(img: np.ndarray, text: str) -> np.ndarray:
  import cv2  # pylint: disable=import-outside-toplevel
  img = img.copy()
  cv2.putText(img, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
  cv2.putText(img, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
              cv2.LINE_AA)
  return img


def write_side_by_side(pair_dir: pathlib.Path, out: pathlib.Path) -> dict[str, Any]:
  """input | output (trained) | ground truth, with the held-out speech."""
  from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.io import video as video_lib  # pylint: disable=import-outside-toplevel
  streams = [("input", pair_dir / "face.mp4"), ("output", pair_dir / "after.mp4"),
             ("ground truth", pair_dir / "ground_truth.mp4")]
  info = video_lib.probe(str(streams[1][1]))
  wav = audio_lib.load_audio(str(pair_dir / "speech.wav"))
  iters = [video_lib.iter_frames(str(p)) for _, p in streams]
  h, w = info.height, info.width
  n = 0
  with video_lib.VideoWriter(str(out), info.fps, 3 * w, h,
                             audio=(wav, audio_lib.SAMPLE_RATE)) as writer:
    for frames in zip(*iters):
      row = [_label(f if f.shape[:2] == (h, w) else _resize(f, w, h), name)
             for f, (name, _) in zip(frames, streams)]
      writer.write(np.concatenate(row, axis=1))
      n += 1
  return {"path": str(out), "frames": n, "fps": info.fps, "width": 3 * w, "height": h}


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
  import cv2  # pylint: disable=import-outside-toplevel
  return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _read_jsonl(path: pathlib.Path) -> list[dict[str, Any]]:
  if not path.is_file():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _save_fig(fig, path: pathlib.Path) -> None:
  tmp = path.with_name(f".{path.name}.tmp.png")
  fig.savefig(tmp, dpi=100, bbox_inches="tight")
  os.replace(tmp, path)


def write_report(workdir: pathlib.Path, crops: dict[str, np.ndarray]) -> list[str]:
  """DIR/report/loss_curves.png and DIR/report/mouth_grid.png."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  report = workdir / "report"
  report.mkdir(exist_ok=True)
  written = []

  fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
  for ax, (name, sub, keys) in zip(axes, (
      ("expert (SyncNet)", "expert", ("loss", "accuracy")),
      ("generator (LPIPS-AttnWav2Lip)", "generator", ("loss", "l1", "sync", "lpips")))):
    train_rows = _read_jsonl(workdir / sub / "metrics.jsonl")
    eval_rows = _read_jsonl(workdir / sub / "eval.jsonl")
    for k in keys:
      pts = [(r["step"], r[k]) for r in train_rows if k in r]
      if pts:
        s, v = np.asarray(pts, np.float64).T
        width = max(1, min(25, len(v) // 10))
        smooth = np.convolve(v, np.ones(width) / width, mode="valid")
        ax.plot(s[width - 1:], smooth, label=f"train {k}")
      pts = [(r["step"], r[k]) for r in eval_rows if k in r]
      if pts:
        s, v = np.asarray(pts, np.float64).T
        ax.plot(s, v, "o--", label=f"val {k}")
    ax.set_title(name)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
  _save_fig(fig, report / "loss_curves.png")
  plt.close(fig)
  written.append(str(report / "loss_curves.png"))

  if crops:
    names = [n for n in ("before", "after", "ground_truth") if n in crops]
    n = min(len(crops[k]) for k in names)
    cols = np.linspace(0, n - 1, min(10, n)).astype(int)
    fig, axes = plt.subplots(len(names), len(cols), figsize=(1.2 * len(cols), 1.0 * len(names)),
                             squeeze=False)
    for i, name in enumerate(names):
      for j, t in enumerate(cols):
        mouth = crops[name][t][48:, :, ::-1]   # lower half, BGR -> RGB
        axes[i, j].imshow(mouth)
        axes[i, j].set_xticks([])
        axes[i, j].set_yticks([])
        if j == 0:
          axes[i, j].set_ylabel(name.replace("_", " "), fontsize=7)
        if i == 0:
          axes[i, j].set_title(f"frame {t}", fontsize=7)
    _save_fig(fig, report / "mouth_grid.png")
    plt.close(fig)
    written.append(str(report / "mouth_grid.png"))
  return written


def format_table(summary: dict[str, Any]) -> str:
  """The printed result table."""
  lines = []
  acc = summary.get("expert_val_accuracy")
  lines.append(f"expert val accuracy (held-out identity, chance 50%): "
               f"{100 * acc:.1f}%" if acc is not None else "expert val accuracy: n/a")
  gen = summary.get("generator") or {}
  if gen.get("initial_eval") and gen.get("final_eval"):
    a, b = gen["initial_eval"], gen["final_eval"]
    lines.append(f"generator val (held-out identity), init -> trained: sync loss "
                 f"{a['sync']:.4f} -> {b['sync']:.4f}, L1 {a['l1']:.4f} -> {b['l1']:.4f}")
  scores = summary.get("sync", {}).get("scores", {})
  if scores:
    lines.append(f"{'video':<26}{'LSE-D (lower=better)':>22}{'LSE-C (higher=better)':>23}")
    for name, label in (("before", "before training (init)"), ("after", "after training"),
                        ("ground_truth", "ground truth")):
      if name in scores:
        s = scores[name]
        lines.append(f"{label:<26}{s['lse_d']:>22.4f}{s['lse_c']:>23.4f}")
  mouth = summary.get("mouth") or {}
  if mouth.get("before") and mouth.get("after"):
    a, b = mouth["before"], mouth["after"]
    key = "lip_mean_colour_lab_distance"
    met = "met" if b[key] <= LIP_COLOUR_TARGET else "not met"
    ref = (f"; the input face's own lips (the truth's colour, other words): "
           f"{mouth['input'][key]:.1f}" if mouth.get("input") else "")
    lines.append(f"lip colour vs ground truth (mean-colour Lab distance on the truth's lip "
                 f"pixels, target <= {LIP_COLOUR_TARGET:g}), init -> trained: "
                 f"{a[key]:.1f} -> {b[key]:.1f} ({met}){ref}")
    ref = (f" (input's own lips {mouth['input']['lip_lab_distance']:.1f})"
           if mouth.get("input") else "")
    lines.append(f"mouth vs ground truth, init -> trained: mouth-crop LPIPS "
                 f"{a.get('mouth_lpips', float('nan')):.3f} -> "
                 f"{b.get('mouth_lpips', float('nan')):.3f}, per-pixel lip distance "
                 f"{a['lip_lab_distance']:.1f} -> {b['lip_lab_distance']:.1f}{ref}")
    if "mouth_sharpness" in b:
      truth = (mouth.get("ground_truth") or {}).get("mouth_sharpness", float("nan"))
      lines.append(f"mouth region at {summary.get('face_size', 96)} px faces, init -> trained: "
                   f"PSNR {a['mouth_region_psnr']:.2f} -> {b['mouth_region_psnr']:.2f} dB, "
                   f"SSIM {a['mouth_region_ssim']:.3f} -> {b['mouth_region_ssim']:.3f}, "
                   f"LPIPS {a['mouth_region_lpips']:.3f} -> {b['mouth_region_lpips']:.3f}, "
                   f"sharpness (Laplacian variance) {a['mouth_sharpness']:.0f} -> "
                   f"{b['mouth_sharpness']:.0f} (ground truth {truth:.0f})")
    if "mouth_chroma_noise" in b:
      truth = (mouth.get("ground_truth") or {}).get("mouth_chroma_noise", float("nan"))
      lines.append(f"mouth colour speckle (chroma high-pass), init -> trained: "
                   f"{a['mouth_chroma_noise']:.1f} -> {b['mouth_chroma_noise']:.1f} "
                   f"(ground truth {truth:.1f}; striped or dotted mouths score several "
                   f"times the truth)")
  est = summary.get("estimate") or {}
  lines.append("time per stage" + (" (estimated before training)" if est else "") + ":")
  for stage, secs in summary.get("timings_s", {}).items():
    info = (summary.get(stage) or {}) if stage in ("expert", "generator") else {}
    guess = (est.get(stage) or {}).get("total_s") if stage in ("expert", "generator") else (
        est.get("total_s") if stage == "total" else None)
    extra = []
    if guess:
      extra.append(f"estimated {guess:.0f} s, {100 * (guess - secs) / max(secs, 1e-9):+.0f}%")
    if info.get("step_time_s"):
      extra.append(f"{info.get('step')} steps, {info['step_time_s']:.3f} s a step")
    lines.append(f"  {stage:<12}{secs:8.1f} s" + (f"  ({'; '.join(extra)})" if extra else ""))
  if summary.get("machine"):
    lines.append(f"machine: {machine.one_line(summary['machine'])}")
  return "\n".join(lines)


# -----------------------------------------------------------------------------
# Driver.
# -----------------------------------------------------------------------------

def _check_workdir(workdir: pathlib.Path, force: bool) -> None:
  if workdir.exists() and not workdir.is_dir():
    raise DemoError(f"--workdir {workdir} exists and is not a directory")
  if workdir.is_dir() and any(workdir.iterdir()):
    if not force:
      raise DemoError(f"--workdir {workdir} is not empty; pass --force to replace it")
    if not (workdir / "raw").is_dir() and not (workdir / "demo_summary.json").is_file():
      raise DemoError(f"--workdir {workdir} does not look like a demo directory; "
                      f"refusing to delete it")
    shutil.rmtree(workdir)
  workdir.mkdir(parents=True, exist_ok=True)


def _write_json(path: pathlib.Path, data: Any) -> None:
  with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.",
                                   suffix=".tmp", delete=False) as f:
    json.dump(data, f, indent=2)
    tmp = f.name
  os.replace(tmp, path)


def run_demo(workdir: str | os.PathLike, quick: bool = False, seed: int = 0,
             force: bool = False, progress: bool = True, face_size: int = 96,
             log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)
             ) -> dict[str, Any]:
  """Runs every stage; returns (and writes to DIR/demo_summary.json) the summary."""
  spec = QUICK if quick else FULL
  if face_size not in FACE_SIZES:
    raise DemoError(f"--face-size must be one of {FACE_SIZES}, got {face_size}")
  workdir = pathlib.Path(workdir).resolve()
  _check_workdir(workdir, force)
  timings: dict[str, float] = {}
  summary: dict[str, Any] = {"workdir": str(workdir), "quick": quick, "seed": seed,
                             "face_size": face_size,
                             "spec": dataclasses.asdict(spec),
                             "machine": machine.describe(), "timings_s": timings}
  t_all = time.perf_counter()

  def stage(name: str, fn, *args, **kwargs):
    log(f"== {name}")
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    timings[name] = round(time.perf_counter() - t0, 1)
    return result

  data = stage("synthesize", synthesize_data, workdir, spec, seed, progress)
  summary["data"] = data
  summary["prepare"] = stage("prepare", prepare_data, workdir, progress, face_size)
  est = stage("estimate", lambda: estimate(workdir, spec, seed, face_size,
                                           time.perf_counter() - t_all))
  summary["estimate"] = est
  est["machine"] = machine.describe()   # the load now, beside the step times
  log(format_estimate(est, est["machine"]))
  expert = stage("expert", train, workdir, "syncnet", spec, seed, progress)
  summary["expert"] = _brief(expert)
  summary["expert_val_accuracy"] = (expert.get("final_eval") or {}).get("accuracy")
  generator = stage("generator", train, workdir, "generator", spec, seed, progress, face_size)
  summary["generator"] = _brief(generator)

  def _lipsync():
    initial_generator(workdir, spec, seed, face_size)
    return lipsync(workdir, data["heldout"], progress)
  summary["lipsync"] = stage("lipsync", _lipsync)
  sync = stage("evaluate", score_videos, workdir, data["heldout"], progress)
  crops = sync.pop("crops")
  summary["sync"] = sync
  summary["mouth"] = stage("mouth", score_mouths, data["heldout"], crops)

  def _outputs():
    video = write_side_by_side(pathlib.Path(data["heldout"][0]["dir"]), workdir / "demo.mp4")
    return {"video": video, "report": write_report(workdir, crops)}
  summary["outputs"] = stage("report", _outputs)
  timings["total"] = round(time.perf_counter() - t_all, 1)
  _write_json(workdir / "demo_summary.json", summary)
  return summary


def _brief(train_summary: dict[str, Any]) -> dict[str, Any]:
  keys = ("status", "step", "wall_time_s", "steps_per_s", "step_time_s", "final_train",
          "initial_eval", "final_eval")
  return {k: train_summary.get(k) for k in keys}


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(
      description="End-to-end demo: synthetic data -> data_prep -> SyncNet -> "
      "LPIPS-AttnWav2Lip -> lip-sync -> LSE scores, offline on CPU.")
  p.add_argument("--workdir", required=True, help="output folder (created)")
  p.add_argument("--quick", action="store_true", help="reduced version (CI)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--force", action="store_true", help="replace an existing demo workdir")
  p.add_argument("--no-progress", action="store_true")
  p.add_argument("--face-size", type=int, default=96,
                 help=f"face crops and generator size, one of {FACE_SIZES} (default 96)")
  cache.add_no_cache_argument(p)
  return p


def main(argv: Sequence[str] | None = None) -> int:
  a = build_parser().parse_args(argv)
  if not a.no_cache:
    cache.enable_compilation_cache()
  try:
    summary = run_demo(a.workdir, quick=a.quick, seed=a.seed, force=a.force,
                       progress=not a.no_progress, face_size=a.face_size)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    return 2
  print(format_table(summary))
  print(f"video: {summary['outputs']['video']['path']}")
  print(f"report: {pathlib.Path(summary['workdir']) / 'report'}")
  print(f"summary: {pathlib.Path(summary['workdir']) / 'demo_summary.json'}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
