"""Every generator on GRID speaker s1, at one budget, judged one way.

    python bench/bench_grid.py [--shared ../shared] [--workdir runs/bench_grid]
        [--data DATA] [--steps 500] [--batch-size 4] [--width 0.125] [--clips 20]
        [--extra shipped=builtin]

Stages, each resumed when rerun (a finished stage is read back, a killed
training run resumes from its last checkpoint):

1. data: `data_prep/preprocess.py` on ../shared/data/grid_s1/video (split by
   sentence 80/8/12 %: 720 / 59 / 124 sentences; words from `align/`), then
   FaceMesh lip tracks (`data_prep/lip_tracks.py`, for the two-stage model)
   and AU labels (`data_prep/au_labels.py`, for the AU networks). `--data`
   reuses a prepared folder.
2. AU networks: the AU classifier and the audio-to-AU module trained on the
   s1 training sentences; balanced accuracy per AU on the test sentences.
3. generators: `wav2lip`, `lpips_attnwav2lip`, `synctalkface`, `au_tcn` and
   the two-stage model (`lip_renderer` + `audio_to_lips`), each trained on
   the training sentences for `--steps` steps at batch `--batch-size`,
   width `--width` and lr `--lr`, with its own config's losses (the CPU
   variants: `:tiny` for the four seed models, `:renderer` / `:lips` for
   the two-stage pair). Every sync term is on from the first step against
   the shipped landmark expert's pixel regressor (`lip_sync_expert_pixels`):
   a fixed, trained expert, so upstream's wait for the eval sync loss to fall
   below 0.75 has no purpose here. The two-stage renderer has no sync term by
   design; its stage 1 (`--lips-steps` at batch 32) is timed on its own.
4. judging: the first `--clips` test sentences, each lip-synced from its
   own video with its own audio (`two_stage_real.grid`: face PSNR / SSIM on
   128 px crops, mouth LPIPS, LMD in px of a 96 px crop, and both sync
   judges' best lag within +-1 of 0), and the first 10 with LibriVox speech.
   `--extra NAME=MODEL` judges ready-made models beside them (e.g. the
   shipped two-stage model, trained on other speakers).
5. figures in WORKDIR: `mouths.jpg` (truth and every row, four sentences,
   three moments each), `memory_grid.png` plus the words that address each
   SyncTalkFace memory slot, `au_curves.png` (truth AUs of a test sentence
   against the audio-to-AU module's and the AU classifier's on au_tcn's
   frames).

Prints the Markdown tables and writes WORKDIR/bench_grid.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SEED_GENERATORS = ("wav2lip", "lpips_attnwav2lip", "synctalkface", "au_tcn")
ROWS = SEED_GENERATORS + ("two_stage",)
# Published GRID figures (their own crops, hardware and budgets; LMD with
# dlib's 68 points on 128 px aligned faces, ours with FaceMesh on 96 px crops).
PUBLISHED = (
    ("ATVGnet (Chen et al., CVPR 2019), as the GRID papers quote it", 32.15, 0.83, 1.29),
)


def _run(cmd: list[str]) -> None:
  print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
  r = subprocess.run(cmd, cwd=ROOT, check=False)
  if r.returncode:
    raise SystemExit(f"error: command failed ({r.returncode}): {' '.join(cmd)}")


def prepare(shared: pathlib.Path, data: pathlib.Path, progress: bool) -> None:
  """Stage 1: the dataset, its lip tracks and its AU labels (each resumable)."""
  quiet = [] if progress else ["--no-progress"]
  if not (data / "index.json").is_file():
    _run([sys.executable, "data_prep/preprocess.py", "--input",
          str(shared / "data/grid_s1/video"), "--output", str(data),
          "--split-ratios", "0.8", "0.08", "0.12"] + quiet)
  _run([sys.executable, "data_prep/lip_tracks.py", "--data", str(data)] + quiet)
  _run([sys.executable, "data_prep/au_labels.py", "--data", str(data)] + quiet)


def configure(c, a, data: pathlib.Path, steps: int, batch: int):
  """The bench's common budget on a config."""
  c.data_dir = str(data)
  c.num_steps = steps
  c.batch_size = batch
  c.seed = a.seed
  c.eval_every = max(1, steps // 4)
  c.checkpoint_every = max(1, steps // 4)
  c.sample_every = steps
  c.eval_batches = 8
  c.eval_at_start = True
  c.progress_bar = a.progress
  # (a cosine schedule needs its warm-up to end before the run does)
  c.optimizer.warmup_steps = min(int(c.optimizer.warmup_steps), steps // 2)
  return c


def generator_config(arch: str, a, data: pathlib.Path, wd: pathlib.Path):
  import bench_variants  # pylint: disable=import-outside-toplevel
  from lipsync_jax.evaluation import metrics  # pylint: disable=import-outside-toplevel
  if arch == "two_stage":
    c = bench_variants.load_config("two_stage", "renderer")
  else:
    c = bench_variants.load_config(arch, "tiny")
    c.syncnet_checkpoint = (metrics.builtin_pixel_expert_path() if a.expert == "builtin"
                            else str(pathlib.Path(a.expert) / "lip_sync_expert_pixels"))
    c.sync_schedule.initial = c.sync_schedule.value
  c = configure(c, a, data, a.steps, a.batch_size)
  c.model.width_multiplier = a.width
  c.disc.width_multiplier = a.width
  c.optimizer.learning_rate = a.lr
  if arch == "au_tcn":
    c.audio_to_au_checkpoint = str(wd / "audio_to_au")
    c.au_classifier_checkpoint = str(wd / "au_classifier")
    c.model.overrides.finetune_audio_to_au = False
    c.loss.a2au = 0.0
    c.loss.au = 0.1
    c.data.options.with_aus = False
  return c


def timed_step(config, path: pathlib.Path) -> float:
  """Median seconds of one train step at the bench's batch, timed alone
  (bench_variants.time_step), kept in `path`."""
  import bench_variants  # pylint: disable=import-outside-toplevel
  if not path.is_file():
    path.write_text(json.dumps({"step_s": bench_variants.time_step(config)}))
  return json.loads(path.read_text())["step_s"]


def train_generator(arch: str, a, data: pathlib.Path, wd: pathlib.Path) -> dict:
  """Stage 3 for one row; returns its summary and the model to judge."""
  import bench_variants  # pylint: disable=import-outside-toplevel
  c = generator_config(arch, a, data, wd)
  s = bench_variants.train(c, wd / arch)
  row = {"arch": arch, "step_s": timed_step(c, wd / arch / "timed_step.json"),
         "train_step_s": s["step_time_s"], "train_wall_s": s["wall_time_s"],
         # (a resumed run has no initial eval of its own)
         "val_l1": [(s.get("initial_eval") or {}).get("l1"), s["final_eval"]["l1"]],
         "params": bench_variants.n_params(wd / arch), "model": str(wd / arch / "model")}
  if arch == "two_stage":
    lips_c = configure(bench_variants.load_config("two_stage", "lips"), a, data,
                       a.lips_steps, 32)
    if a.expert != "builtin":
      lips_c.lips_expert = str(pathlib.Path(a.expert) / "lip_sync_expert")
    ls = bench_variants.train(lips_c, wd / "lips")
    row.update(lips_step_s=timed_step(lips_c, wd / "lips" / "timed_step.json"),
               lips_wall_s=ls["wall_time_s"],
               lips_params=bench_variants.n_params(wd / "lips"))
    packed = wd / "two_stage_model"
    if not packed.is_dir():   # pack writes the folder whole, or not at all
      _run([sys.executable, "-m", "lipsync_jax.two_stage", "pack", "--lips", str(wd / "lips"),
            "--renderer", str(wd / arch), "--out", str(packed)])
    row["model"] = str(packed)
  return row


# ---------------------------------------------------------------------------
# AU networks.


def au_test_scores(model_dir: pathlib.Path, data: pathlib.Path, batch: int = 16) -> dict:
  """Balanced accuracy per AU of an AU classifier or audio-to-AU model on
  the test split's 5-frame windows (label = the stored FaceMesh proxies)."""
  import jax  # pylint: disable=import-outside-toplevel
  from lipsync_jax import checkpoint, data as data_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.models import au_tcn  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import families  # pylint: disable=import-outside-toplevel
  loaded = checkpoint.load_model(str(model_dir))
  module = loaded.module
  is_cls = isinstance(module, au_tcn.AUClassifier)

  @jax.jit
  def logits_of(v, x):
    out = module.apply(v, x, train=False)
    return out[1] if isinstance(out, tuple) else out

  counts = None
  for b in data_lib.make_eval_loader(str(data), "test", "generator", batch, 0, with_aus=True):
    if is_cls:
      x = np.asarray(families.to_unit(b["target"]))   # BGR in [0, 1], as trained
      x = x[:, :, x.shape[2] // 2:]
    else:
      x = b["audio"]
    pred = np.asarray(logits_of(loaded.variables, x)) > 0          # (B,5,K)
    lab = b["aus"] > 0.5
    m = np.broadcast_to(b["au_valid"][..., None] > 0.5, lab.shape)
    c = np.stack([(pred & lab & m).sum((0, 1)), (lab & m).sum((0, 1)),
                  (~pred & ~lab & m).sum((0, 1)), (~lab & m).sum((0, 1))])
    counts = c if counts is None else counts + c
  tp, pos, tn, neg = counts.astype(np.float64)
  ba = 0.5 * (tp / np.maximum(pos, 1) + tn / np.maximum(neg, 1))
  aus = list(getattr(module, "aus", ()))
  return {"aus": aus, "balanced_accuracy": [float(x) for x in ba],
          "positive_rate": [float(p / max(p + n, 1)) for p, n in zip(pos, neg)],
          "mean": float(np.mean(ba))}


def train_au(a, data: pathlib.Path, wd: pathlib.Path) -> dict:
  """Stage 2: both AU networks on s1, scored per AU on the test sentences."""
  import bench_variants  # pylint: disable=import-outside-toplevel
  out = {}
  for name in ("au_classifier", "audio_to_au"):
    c = configure(bench_variants.load_config(name, "tiny"), a, data, a.au_steps, 16)
    if name == "audio_to_au":
      c.model.width_multiplier = a.width
    s = bench_variants.train(c, wd / name)
    out[name] = dict(au_test_scores(wd / name / "model", data), val=s["final_eval"],
                     train_wall_s=s["wall_time_s"])
  return out


# ---------------------------------------------------------------------------
# Judging and figures.


def judge(name: str, model: str, a, data: pathlib.Path, wd: pathlib.Path, judges) -> dict:
  import two_stage_real  # pylint: disable=import-outside-toplevel
  from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
  path = wd / f"judged_{name}.json"
  if path.is_file():
    return json.loads(path.read_text())
  syncer = inference.load_syncer(model, cache_dir=str(wd / "cache"))
  t0 = time.time()
  r = two_stage_real.grid(syncer, judges, pathlib.Path(a.shared), data, wd / f"videos_{name}",
                          a.clips)
  r["judge_wall_s"] = round(time.time() - t0, 1)
  path.write_text(json.dumps(r, indent=1, default=float))
  return r


def source_sync(a, data: pathlib.Path, judges) -> dict:
  """Both sync judges on the judged test sentences' own source videos: how
  often the real footage itself is found within +-1 frame of 0."""
  import two_stage_real  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import format as fmt  # pylint: disable=import-outside-toplevel
  clips = fmt.load_index(data).split("test")
  clips = clips[:a.clips] if a.clips else clips
  found = [judges.score(pathlib.Path(c.source), judges.source(pathlib.Path(c.source)))
           for c in clips]
  return {"scorer_within1_of_0": two_stage_real.share([r["offset"] for r in found],
                                                      [0] * len(found)),
          "judge_within1_of_0": two_stage_real.share([r["judge_lag"] for r in found],
                                                     [0] * len(found)),
          "videos": found}


def mouths_figure(names: list[str], data: pathlib.Path, wd: pathlib.Path, judges,
                  path: pathlib.Path, sentences: int = 4) -> None:
  """Rows: the truth, then each model on its own audio; columns: three
  moments of the first `sentences` judged test sentences (lower halves of
  96 px face crops, shown at 2x)."""
  import cv2  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import format as fmt  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_crops  # pylint: disable=import-outside-toplevel
  clips = fmt.load_index(data).split("test")[:sentences]
  rows = []
  for label in ["truth"] + names:
    tiles = []
    for clip in clips:
      src = pathlib.Path(clip.source)
      video = src if label == "truth" else wd / f"videos_{label}" / "grid" / f"{src.stem}.mp4"
      crops = face_crops.video_face_crops(str(video), 192, judges.detector)[0]
      for frac in (0.3, 0.5, 0.7):
        tiles.append(crops[int(frac * (len(crops) - 1))][96:])
    name = np.full((96, 190, 3), 255, np.uint8)
    cv2.putText(name, label, (4, 52), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    rows.append(np.concatenate([name] + tiles, 1))
  cv2.imwrite(str(path), np.concatenate(rows, 0), [cv2.IMWRITE_JPEG_QUALITY, 88])


def memory_words(run: pathlib.Path, data: pathlib.Path, top: int = 3) -> dict:
  """Which words of the test sentences address each SyncTalkFace memory
  slot: per frame the audio key address A_aud (softmax over slots), the
  slot it weights most, and for each slot the words of the frames it wins
  (most frequent first, `sil` included)."""
  import collections  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import format as fmt, grid  # pylint: disable=import-outside-toplevel
  from lipsync_jax.io import audio  # pylint: disable=import-outside-toplevel
  loaded = checkpoint.load_model(str(run / "model"))
  module = loaded.module
  address = jax.jit(lambda v, m: module.apply(
      v, m, method=lambda mod, x: mod.memory.address_audio(mod.embed_audio(x))))
  wins: dict[int, collections.Counter] = collections.defaultdict(collections.Counter)
  peaks = []
  for clip in fmt.load_index(data).split("test"):
    spans = clip.words
    if spans is None:   # a dataset prepared before words were stored
      spans, _ = grid.clip_words(pathlib.Path(clip.source), clip.num_frames, clip.fps)
    if spans is None:
      continue
    mel = audio.mel_from_file(clip.source)
    windows = audio.mel_windows(mel, clip.num_frames, clip.fps)[..., None]
    a = np.asarray(address(loaded.variables, windows))               # (T, slots)
    peaks.append(a.max(-1))
    for t, word in enumerate(grid.frame_words(spans, clip.num_frames)):
      wins[int(a[t].argmax())][word or "-"] += 1
  frames = sum(sum(c.values()) for c in wins.values())
  return {"slots": int(module.memory_slots), "frames": frames,
          "slots_used": len(wins),
          "mean_peak_address": float(np.mean(np.concatenate(peaks))) if peaks else None,
          "by_slot": {str(s): {"frames": sum(c.values()),
                               "words": [w for w, _ in c.most_common(top)]}
                      for s, c in sorted(wins.items())}}


def au_curves_figure(wd: pathlib.Path, data: pathlib.Path, judges, path: pathlib.Path) -> dict:
  """One test sentence: per AU, the truth's labels (FaceMesh proxies), the
  audio-to-AU module's probability (au_tcn's driving AUs), and the AU
  classifier's probability on the truth's and on au_tcn's frames."""
  import cv2  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import au_store, format as fmt  # pylint: disable=import-outside-toplevel
  from lipsync_jax.io import audio  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import face_crops  # pylint: disable=import-outside-toplevel
  clip = fmt.load_index(data).split("test")[0]
  labels = au_store.load_clip_labels(str(data), clip)
  a2au = checkpoint.load_model(str(wd / "audio_to_au" / "model"))
  cls = checkpoint.load_model(str(wd / "au_classifier" / "model"))
  mel = audio.mel_from_file(clip.source)
  windows = audio.mel_windows(mel, clip.num_frames, clip.fps)[None, ..., None]
  p_audio = np.asarray(jax.nn.sigmoid(a2au.module.apply(a2au.variables, windows)[1]))[0]

  def classify(video: pathlib.Path) -> np.ndarray:
    crops = face_crops.video_face_crops(str(video), 96, judges.detector)[0]
    lower = (crops[:, 48:].astype(np.float32) / 255.0)[None]   # BGR in [0, 1], as trained
    out = cls.module.apply(cls.variables, lower, train=False)
    return np.asarray(jax.nn.sigmoid(out[1] if isinstance(out, tuple) else out))[0]

  src = pathlib.Path(clip.source)
  p_truth = classify(src)
  p_gen = classify(wd / "videos_au_tcn" / "grid" / f"{src.stem}.mp4")
  aus = list(a2au.module.aus)
  h, w, pad = 90, 600, 30
  img = np.full((len(aus) * (h + pad) + pad, w + 80, 3), 255, np.uint8)
  colours = {"truth labels": (0, 0, 0), "audio-to-AU": (200, 80, 0),
             "classifier, truth frames": (0, 160, 0), "classifier, au_tcn frames": (0, 0, 220)}
  corr = {}
  for k, au in enumerate(aus):
    y0 = pad + k * (h + pad)
    cv2.putText(img, f"AU{au}", (4, y0 + h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    series = {"truth labels": labels.presence[:, k].astype(np.float32), "audio-to-AU": p_audio[:, k],
              "classifier, truth frames": p_truth[:, k], "classifier, au_tcn frames": p_gen[:, k]}
    for name, ys in series.items():
      xs = 80 + np.arange(len(ys)) * w / max(1, clip.num_frames - 1)
      pts = np.stack([xs, y0 + h - ys * h], -1).astype(np.int32)
      cv2.polylines(img, [pts], False, colours[name], 1, cv2.LINE_AA)
    truth = series["truth labels"]
    corr[f"AU{au}"] = {n: (float(np.corrcoef(truth[:len(v)], v[:len(truth)])[0, 1])
                           if truth.std() > 0 and np.std(v) > 0 else None)
                       for n, v in series.items() if n != "truth labels"}
  for i, (name, col) in enumerate(colours.items()):
    cv2.putText(img, name, (80 + i * 150, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.38, col, 1)
  cv2.imwrite(str(path), img)
  return {"clip": clip.clip_id, "correlation_with_truth": corr}


# ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shared", default=str(ROOT.parent / "shared"))
  p.add_argument("--workdir", default="runs/bench_grid")
  p.add_argument("--data", default="", help="a prepared GRID s1 dataset (default WORKDIR/data)")
  p.add_argument("--steps", type=int, default=500, help="generator steps, every row")
  p.add_argument("--batch-size", type=int, default=4)
  p.add_argument("--width", type=float, default=0.125)
  p.add_argument("--lr", type=float, default=1e-3)
  p.add_argument("--lips-steps", type=int, default=1000, help="two-stage stage-1 steps (batch 32)")
  p.add_argument("--au-steps", type=int, default=400)
  p.add_argument("--clips", type=int, default=20, help="test sentences judged (0: all)")
  p.add_argument("--extra", action="append", default=[],
                 help="NAME=MODEL: also judge a ready-made model (e.g. shipped=builtin)")
  p.add_argument("--expert", default="builtin",
                 help="the experts the generators train against: builtin (the shipped "
                 "ones) or a folder holding lip_sync_expert/ and lip_sync_expert_pixels/")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-progress", dest="progress", action="store_false")
  return p


def _table(rows: list[dict]) -> list[str]:
  out = ["| model | trained | s/step (timed alone) | wall (shared machine) | face PSNR | SSIM | mouth LPIPS | LMD | "
         "own audio: scorer / energy judge | LibriVox: scorer / energy judge |",
         "|---|---|---|---|---|---|---|---|---|---|"]
  for r in rows:
    j = r["judged"]
    cost = (f"{r['step_s']:.2f} | {r['train_wall_s'] / 60:.0f} min" if "step_s" in r
            else " | ")
    out.append(
        f"| {r['name']} | {r.get('trained', '')} | {cost} | {j['face_psnr']:.2f} | "
        f"{j['face_ssim']:.3f} | {j['mouth_lpips']:.3f} | {j['lmd_px96']:.2f} | "
        f"{j['own_scorer_within1_of_0']} / {j['own_judge_within1_of_0']} | "
        f"{j['foreign_scorer_within1_of_0']} / {j['foreign_judge_within1_of_0']} |")
  for name, psnr, ssim, lmd in PUBLISHED:
    out.append(f"| {name} | published | | | {psnr:.2f} | {ssim:.2f} | | {lmd:.2f} (dlib) | | |")
  return out


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)
  shared = pathlib.Path(a.shared)
  if not (shared / "data/grid_s1/video").is_dir():
    print(f"error: {shared}/data/grid_s1/video not found (pass --shared)", file=sys.stderr)
    return 2
  extras = []
  for e in a.extra:
    if "=" not in e:
      print(f"error: --extra takes NAME=MODEL, got {e!r}", file=sys.stderr)
      return 2
    extras.append(tuple(e.split("=", 1)))
  wd = pathlib.Path(a.workdir).absolute()
  wd.mkdir(parents=True, exist_ok=True)
  data = pathlib.Path(a.data).absolute() if a.data else wd / "data"
  t_all = time.time()
  prepare(shared, data, a.progress)
  au = train_au(a, data, wd)
  rows = [dict(train_generator(arch, a, data, wd), name=arch,
               trained=f"s1, {a.steps} steps") for arch in ROWS]
  rows += [{"name": n, "model": m, "trained": "ready-made"} for n, m in extras]
  import two_stage_real  # pylint: disable=import-outside-toplevel
  judges = two_stage_real.Judges()
  for r in rows:
    r["judged"] = judge(r["name"], r["model"], a, data, wd, judges)
  truth = source_sync(a, data, judges)
  mouths_figure([r["name"] for r in rows], data, wd, judges, wd / "mouths.jpg",
                min(4, rows[0]["judged"]["clips"]))
  import bench_variants  # pylint: disable=import-outside-toplevel
  memory = bench_variants.memory_grid(generator_config("synctalkface", a, data, wd),
                                      wd / "synctalkface", data)
  memory["words"] = memory_words(wd / "synctalkface", data)
  curves = au_curves_figure(wd, data, judges, wd / "au_curves.png")
  out = {"steps": a.steps, "batch_size": a.batch_size, "width": a.width, "lr": a.lr,
         "au": au, "rows": rows, "source_sync": truth, "memory": memory, "au_curves": curves,
         "seconds": round(time.time() - t_all, 1)}
  (wd / "bench_grid.json").write_text(json.dumps(out, indent=1, default=float))

  print(f"\nGRID s1: {a.steps} steps at batch {a.batch_size}, width {a.width}, lr {a.lr}; "
        f"judged on {rows[0]['judged']['clips']} unseen test sentences (own audio), "
        f"10 with LibriVox speech; sync = best lag within +-1 of 0\n")
  print("\n".join(_table(rows)))
  print(f"\nThe source videos themselves, own audio: scorer {truth['scorer_within1_of_0']}, "
        f"energy judge {truth['judge_within1_of_0']}")
  print("\nAU networks, balanced accuracy per AU on the test sentences:")
  print("| network | " + " | ".join(f"AU{x}" for x in au["au_classifier"]["aus"]) + " | mean |")
  print("|---|" + "---|" * (len(au["au_classifier"]["aus"]) + 1))
  for name in ("au_classifier", "audio_to_au"):
    s = au[name]
    print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in s["balanced_accuracy"]) +
          f" | {s['mean']:.3f} |")
  w = memory["words"]
  print(f"\nSyncTalkFace memory: slot spread {memory['initial']['slot_spread']:.4f} at init -> "
        f"{memory['trained']['slot_spread']:.4f} trained; {w['slots_used']} of {w['slots']} "
        f"slots win a test frame (mean peak address {w['mean_peak_address']:.3f})")
  for s, v in w["by_slot"].items():
    print(f"  slot {s}: {v['frames']} frames, words {', '.join(v['words'])}")
  print(f"\nfigures: {wd / 'mouths.jpg'}, {memory['png']}, {wd / 'au_curves.png'}; "
        f"total {out['seconds']:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
