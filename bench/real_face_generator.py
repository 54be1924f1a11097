"""LPIPS-AttnWav2Lip on real faces with the landmark expert's sync loss.

    python bench/real_face_generator.py [--expert builtin] [--workdir runs/real_face]
        [--face-size 96] [--runs sync-on,sync-off] [--steps N]

`--expert` is `builtin` (the landmark expert shipped with the package, the
default) or a `configs/lip_sync.py` workdir: its `expert_pixels/` is the
expert the generator trains against, and its model meta names the held-out
speakers. The script runs what a user would, and prints two tables:

1. `data_prep/preprocess.py` on the real clips, then the splits by speaker:
   train = the expert's training speakers, val = its held-out speakers (so
   the generator never sees the faces it is judged on either);
2. `train.py --config configs/lpips_attnwav2lip.py:real` twice: with the
   landmark expert's sync loss, and the same recipe with the sync loss off;
3. lip-syncs every held-out face to unrelated real speech (the LibriVox WAVs,
   in turn) with the initial weights, the sync-off and the sync-on
   generator, and scores the videos with the built-in scorer: the share of
   videos whose best offset is within +-1 of 0, LSE-style distance and
   confidence (on the landmark expert's own scale);
4. L1 / LPIPS on paired val (the trainer's eval at step 0 and at the end);
5. reconstruction: every held-out face lip-synced to its own audio, whose
   source frames are then the ground truth: PSNR / SSIM / LPIPS of the
   mouth (the lower half of a 256 px face crop, the same detector on both),
   its sharpness (variance of the Laplacian) and colour speckle, beside the
   source's own;
6. `mouth_grid.png`: mouth crops of two held-out faces, one row per model.

`--face-size 192` (or 256) prepares the crops at that size (`--img-size`)
and trains the generator at it (`model.overrides.face_size`); the expert
stays the 96 px landmark expert, fed through the sync loss's resize. Run it
once per size, with the same `--steps`, to compare sizes on real faces.

Each stage is skipped when its output exists (rerun to resume).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPEECH = ("sense_and_sensibility_01_austen_64kb-0870.wav",
          "sense_and_sensibility_01_austen_64kb-0880.wav",
          "sense_and_sensibility_01_austen_64kb-0890.wav")


RUNS = {"sync-on": "sync on", "sync-off": "sync off"}  # --runs name -> table row
RUN_DIRS = {"sync-on": "gen_sync", "sync-off": "gen_nosync"}
RECON_CROP = 256  # face crops the reconstruction scores are taken on
# The lips and the skin just around them in those crops (rows, columns): what
# every paste redraws, however narrow, so a paste that keeps more of the
# source's own pixels does not score better here by keeping them.
LIPS_BOX = (slice(144, 224), slice(64, 192))


def lips_box_text() -> str:
  """`LIPS_BOX` in words, for the tables that print its scores."""
  rows, cols = LIPS_BOX
  return (f"rows {rows.start}-{rows.stop - 1} and columns {cols.start}-{cols.stop - 1} of the "
          f"{RECON_CROP} px face crop: the lips and the skin around them")


def reconstruction(own_audio: dict[str, pathlib.Path], faces: list[pathlib.Path],
                   detector, second_half: bool = False,
                   ceiling_size: int | None = None) -> dict[str, dict[str, float]]:
  """Mouth PSNR / SSIM / LPIPS of each model's own-speech videos against their
  sources, plus sharpness and colour speckle (and the sources' own), on the
  lower half of the face crops and, as "lips_*", on `LIPS_BOX` alone.

  Each output is cropped along its source's face track (the source's boxes,
  found once), at RECON_CROP px, so both crops frame the same pixels; boxes
  found anew on an output move with its new mouth and would count as error.
  Returns per model the means over all frames of all videos, and "source" for
  the truth. With `second_half`, only the second half of each video's frames
  is scored (the half a model adapted on the first half never saw).
  With `ceiling_size` (a renderer's face size), "source_at_{size}px" scores
  the sources themselves area-resized to that size and upscaled back
  bicubically, as the paste upscales a rendered face: what a renderer that
  drew every face perfectly at that size would read.
  """
  import cv2
  from lipsync_jax.evaluation import metrics
  from lipsync_jax.vision import face_crops
  lpips = metrics.LPIPSMetric("alexnet")
  half = RECON_CROP // 2

  def at_size(crops: np.ndarray, size: int) -> np.ndarray:
    """Full RECON_CROP crops -> their lower halves after a round trip through size px."""
    return np.stack([cv2.resize(cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA),
                                (RECON_CROP, RECON_CROP), interpolation=cv2.INTER_CUBIC)
                     for c in crops])[:, half:]
  sources, tracks, ceiling = {}, {}, {}
  for face in faces:
    tracks[face.stem] = face_crops.face_track(str(face), detector)
    crops = face_crops.crops_along(str(face), tracks[face.stem], RECON_CROP)
    sources[face.stem] = crops[:, half:]
    if ceiling_size:   # from the crops already decoded
      ceiling[face.stem] = at_size(crops, ceiling_size)
    del crops
  def scored(frames):
    return frames[len(frames) // 2:] if second_half else frames
  box_rows, lips_cols = LIPS_BOX
  lips_rows = slice(box_rows.start - half, box_rows.stop - half)   # in the lower half
  out: dict[str, dict[str, float]] = {"source": {
      "sharpness": float(np.mean(np.concatenate(
          [metrics.laplacian_variance(scored(c)) for c in sources.values()]))),
      "chroma_noise": float(np.mean(np.concatenate(
          [metrics.chroma_noise(scored(c)) for c in sources.values()]))),
      "lips_sharpness": float(np.mean(np.concatenate(
          [metrics.laplacian_variance(scored(c)[:, lips_rows, lips_cols])
           for c in sources.values()])))}}
  made = {name: (lambda face, d=d: face_crops.crops_along(
      str(d / f"{face.stem}.mp4"), tracks[face.stem], RECON_CROP)[:, half:])
          for name, d in own_audio.items()}
  if ceiling_size:
    made[f"source_at_{ceiling_size}px"] = lambda face: ceiling[face.stem]
  for name, make in made.items():
    gen_all, truth_all = [], []
    for face in faces:
      gen = make(face)
      gen_all.append(scored(gen))
      truth_all.append(scored(sources[face.stem][:len(gen)]))   # as long as its audio
    gen, truth = np.concatenate(gen_all), np.concatenate(truth_all)
    lips_gen, lips_truth = gen[:, lips_rows, lips_cols], truth[:, lips_rows, lips_cols]
    out[name] = {**metrics.reconstruction_metrics(gen, truth, lpips),
                 "sharpness": float(np.mean(metrics.laplacian_variance(gen))),
                 "chroma_noise": float(np.mean(metrics.chroma_noise(gen))),
                 **{f"lips_{k}": v for k, v in
                    metrics.reconstruction_metrics(lips_gen, lips_truth, lpips).items()},
                 "lips_sharpness": float(np.mean(metrics.laplacian_variance(lips_gen))),
                 "frames": int(len(gen))}
  return out


def _run(cmd: list[str]) -> None:
  print("$ " + " ".join(cmd), flush=True)
  r = subprocess.run(cmd, cwd=REPO)
  if r.returncode:
    raise SystemExit(f"error: command failed ({r.returncode}): {' '.join(cmd)}")


def prepare(videos: pathlib.Path, data: pathlib.Path, val_speakers: set[str],
            speakers: dict[str, str], face_size: int = 96) -> dict[str, list[str]]:
  from lipsync_jax.data import format as fmt
  if not (data / "index.json").is_file():
    _run([sys.executable, "data_prep/preprocess.py", "--input", str(videos),
          "--output", str(data), "--img-size", str(face_size), "--no-progress"])
  index = fmt.load_index(data)
  splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
  for clip in index.split("all"):
    cid = clip.clip_id
    spk = next((s for c, s in speakers.items() if c.rsplit(".", 1)[0] == cid), cid)
    splits["val" if spk in val_speakers else "train"].append(cid)
  splits["test"] = list(splits["val"])
  fmt.write_splits(data, splits)
  return splits


def train(data: pathlib.Path, expert: pathlib.Path, out: pathlib.Path, sync: bool,
          steps: int | None, face_size: int = 96) -> dict:
  if not (out / "summary.json").is_file() or \
      json.loads((out / "summary.json").read_text()).get("status") != "completed":
    cmd = [sys.executable, "train.py", "--config", "configs/lpips_attnwav2lip.py:real",
           "--workdir", str(out), f"--config.data_dir={data}",
           f"--config.syncnet_checkpoint={expert}"]
    if steps:
      cmd.append(f"--config.num_steps={steps}")
    if face_size != 96:
      cmd.append(f"--config.model.overrides.face_size={face_size}")
    if not sync:
      cmd += ["--config.sync_schedule.initial=0", "--config.sync_schedule.value=0"]
    _run(cmd)
  return json.loads((out / "summary.json").read_text())


def initial_model(path: pathlib.Path, face_size: int = 96) -> pathlib.Path:
  """The generator's initial weights at `path`, as the trainer draws them
  (seed 0)."""
  import jax
  import jax.numpy as jnp
  from lipsync_jax import checkpoint, models
  from lipsync_jax.train import config_lib, train_lib
  if path.exists():
    return path
  config = config_lib.load(REPO / "configs" / "lpips_attnwav2lip.py", "real")
  if face_size != 96:
    config.model.overrides.face_size = face_size
  kwargs = train_lib.model_kwargs(config)
  module = models.create(config.model.arch, **kwargs)
  init_rng, _ = jax.random.split(jax.random.PRNGKey(int(config.seed)))
  variables = jax.jit(lambda r: module.init(
      r, jnp.zeros((1, 80, 16, 1)), jnp.zeros((1, face_size, face_size, 6)),
      train=False))(init_rng)
  checkpoint.save_model(str(path), config.model.arch, kwargs,
                        jax.device_get(dict(variables)), extra_meta={"step": 0})
  return path


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--expert", default="builtin",
                 help="'builtin' (the shipped landmark expert) or a configs/lip_sync.py "
                      "workdir")
  p.add_argument("--workdir", default="runs/real_face")
  p.add_argument("--shared", default=str(REPO.parent / "shared"))
  p.add_argument("--steps", type=int, default=None, help="override num_steps")
  p.add_argument("--face-size", type=int, default=96, choices=(96, 192, 256),
                 help="the generator's (and the prepared crops') face size")
  p.add_argument("--runs", default="sync-on,sync-off",
                 help="comma-separated generators to train: sync-on, sync-off")
  return p


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)
  wanted = [r.strip() for r in a.runs.split(",") if r.strip()]
  if not wanted or set(wanted) - set(RUNS):
    p.error(f"--runs takes a comma-separated subset of {', '.join(RUNS)}, got {a.runs!r}")
  from lipsync_jax import checkpoint, inference
  from lipsync_jax.evaluation import metrics
  from lipsync_jax.vision import face_detection
  from lipsync_jax.vision import face_crops
  from lipsync_jax.io import audio as audio_lib
  from lipsync_jax.train import lip_sync_lib

  t0 = time.time()
  work = pathlib.Path(a.workdir).absolute()
  # The expert behind its lip regressor (arch lip_sync_pixels), which the
  # generator trains against.
  expert = (pathlib.Path(metrics.builtin_pixel_expert_path()) if a.expert == "builtin"
            else pathlib.Path(a.expert).absolute() / "expert_pixels")
  if not expert.exists():
    raise SystemExit(f"error: no landmark expert at {expert} (train one with "
                     f"configs/lip_sync.py, or pass --expert builtin)")
  meta = checkpoint.load_model(expert).meta
  videos = pathlib.Path(a.shared) / "data" / "real" / "av"
  if not videos.is_dir():
    raise SystemExit(f"error: no real clips at {videos} (--shared: the shared data folder)")
  work.mkdir(parents=True, exist_ok=True)
  val_speakers = set(meta["training"]["val_speakers"])
  speakers = lip_sync_lib.parse_speakers(meta["training"].get("speakers", []))
  size = int(a.face_size)
  # One dataset, generator and initial-weights folder per face size, so that
  # runs at two sizes can share a workdir.
  sfx = "" if size == 96 else f"_{size}"
  data = work / f"data{sfx}"
  splits = prepare(videos, data, val_speakers, speakers, size)
  print(f"splits: {len(splits['train'])} train clips, {len(splits['val'])} held-out faces; "
        f"{size} px faces")

  runs = {RUNS[r]: train(data, expert, work / f"{RUN_DIRS[r]}{sfx}", r == "sync-on",
                         a.steps, size) for r in wanted}
  models = {"initial": initial_model(work / f"generator_init{sfx}", size)}
  models.update({RUNS[r]: work / f"{RUN_DIRS[r]}{sfx}" / "model" for r in RUNS if r in wanted})

  # Lip-sync every held-out face to unrelated speech.
  speech = [pathlib.Path(a.shared) / "data" / "real" / "audio" / "librivox_pocketsphinx" / s
            for s in SPEECH]
  faces = sorted(f for f in videos.rglob("*") if f.suffix in (".mp4", ".mpg") and
                 f.relative_to(videos).with_suffix("").as_posix() in splits["val"])
  out_videos = {}
  for name, ckpt in models.items():
    d = work / f"videos{sfx}" / name.replace(" ", "_")
    (d / "own_audio").mkdir(parents=True, exist_ok=True)
    syncer = inference.LipSyncer.from_checkpoint(ckpt, cache_dir=str(work / "cache"))
    for i, face in enumerate(faces):
      target = d / f"{face.stem}__{speech[i % len(speech)].stem[-4:]}.mp4"
      if not target.is_file():
        syncer.run(face, speech[i % len(speech)], target)
      # The face to its own speech: the source frames are the ground truth.
      if not (d / "own_audio" / f"{face.stem}.mp4").is_file():
        syncer.run(face, face, d / "own_audio" / f"{face.stem}.mp4")
    out_videos[name] = d

  # Score them with the built-in scorer (FaceMesh lips + mel).
  scorer = metrics.load_builtin_scorer()
  detector = face_detection.create_detector("default")
  table, crops_for_grid = {}, {}
  for name, d in out_videos.items():
    rows = []
    for k, path in enumerate(sorted(d.glob("*.mp4"))):
      crops, first, fps, _ = face_crops.video_face_crops(str(path), scorer.face_size, detector)
      r = metrics.sync_scores(scorer, crops, metrics.ClipAudio(wav=audio_lib.load_audio(path)),
                              fps, first_frame=first, padding="exclude")
      rows.append({"video": path.name, "offset": r.offset, "lse_d": r.lse_d, "lse_c": r.lse_c})
      if k < 2:
        crops_for_grid.setdefault(name, []).append(crops)
    table[name] = rows
  recon = reconstruction({name: d / "own_audio" for name, d in out_videos.items()}, faces,
                         detector)

  print(f"\nReal faces of unseen speakers lip-synced to LibriVox speech "
        f"({len(faces)} videos per model), scored by lip_sync:builtin:")
  print("| model | best offset within +-1 of 0 | LSE-D (lip_sync) | LSE-C (lip_sync) "
        "| val L1 | val LPIPS |")
  print("|---|---|---|---|---|---|")
  init_eval = next(iter(runs.values())).get("initial_eval", {})
  for name, rows in table.items():
    ok = np.mean([abs(r["offset"]) <= 1 for r in rows])
    ev = init_eval if name == "initial" else runs[name].get("final_eval", {})
    l1 = ev.get("l1", float("nan"))
    lp = ev.get("lpips", float("nan"))
    print(f"| {name} | {100 * ok:.0f}% | {np.mean([r['lse_d'] for r in rows]):.3f} | "
          f"{np.mean([r['lse_c'] for r in rows]):.3f} | {l1:.4f} | {lp:.4f} |")
  for name, rows in table.items():
    print(f"  {name}: offsets " + " ".join(f"{r['offset']:+d}" for r in rows))
  print(f"\nThe same faces lip-synced to their own speech, against their source frames "
        f"(mouth: lower half of a {RECON_CROP} px face crop; {size} px generators):")
  print("| model | mouth PSNR | SSIM | LPIPS | sharpness (Laplacian var.) | colour speckle |")
  print("|---|---|---|---|---|---|")
  for name, r in recon.items():
    if name == "source":
      print(f"| source frames | | | | {r['sharpness']:.0f} | {r['chroma_noise']:.2f} |")
    else:
      print(f"| {name} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['lpips']:.3f} | "
            f"{r['sharpness']:.0f} | {r['chroma_noise']:.2f} |")
  (work / f"results{sfx}.json").write_text(json.dumps({"face_size": size, "table": table,
                                                       "reconstruction": recon, "runs": {
      k: {kk: v.get(kk) for kk in ("initial_eval", "final_eval", "step", "status")}
      for k, v in runs.items()}}, indent=1, default=float))

  # Mouth grid: lower halves at 4 moments, two faces, one row per model.
  import cv2
  tiles = []
  for name, clips in crops_for_grid.items():
    row = []
    for crops in clips:
      for f in (0.2, 0.4, 0.6, 0.8):
        c = crops[int(f * (len(crops) - 1))]
        row.append(cv2.resize(c[c.shape[0] // 2:], (192, 96)))
    strip = np.concatenate(row, 1)
    label = np.full((96, 150, 3), 255, np.uint8)
    cv2.putText(label, name, (5, 55), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1)
    tiles.append(np.concatenate([label, strip], 1))
  cv2.imwrite(str(work / f"mouth_grid{sfx}.png"), np.concatenate(tiles, 0))
  print(f"\nwrote {work / f'results{sfx}.json'} and {work / f'mouth_grid{sfx}.png'}; "
        f"{time.time() - t0:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
