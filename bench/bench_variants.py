"""Side-by-side bench of the three generators on the real clips.

  python bench/bench_variants.py [--shared ../shared] [--workdir /tmp/bench_variants]
      [--steps 300] [--batch-size 4] [--width 0.0625] [--expert-steps 400]

Same data, same tiny budget for `lpips_attnwav2lip`, `synctalkface` and
`au_tcn` (steps, batch, width, learning rate; each its tiny config's
losses, i.e. no discriminator): the clips of shared/data/real/av/ are preprocessed (split by clip,
70/15/15), labelled with FaceMesh AU proxies, an expert (syncnet_color) is
trained on the train split, then the AU classifier and the audio-to-AU
module (au_tcn's stages), then each generator for --steps steps with its
config's recipe at --width. Each is then scored on the test split with
`python -m lipsync_jax.evaluate --mode paired --lmd` (LSE-D/LSE-C with the
bench's own expert, PSNR, SSIM, LPIPS-AlexNet, LMD-FM), and its train step
is timed alone (median of 10 steps after 2 warm-up steps, batch
--batch-size). The table says that each variant trains and what it costs;
it is no claim about the papers' numbers (27 clips, minutes of CPU).

Everything lands in --workdir; rerunning resumes (trained runs are reused).
Prints a Markdown table and writes WORKDIR/bench_variants.json.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GENERATORS = ("lpips_attnwav2lip", "synctalkface", "au_tcn")


def load_config(name: str, arg: str | None = None):
  from lipsync_jax.train import config_lib  # pylint: disable=import-outside-toplevel
  return config_lib.load(ROOT / "configs" / f"{name}.py", arg)


def _run(cmd: list[str]) -> None:
  print("+", " ".join(cmd), file=sys.stderr, flush=True)
  subprocess.run(cmd, check=True)


def prepare(shared: pathlib.Path, data: pathlib.Path) -> None:
  if not (data / "index.json").is_file():
    _run([sys.executable, str(ROOT / "data_prep/preprocess.py"), "--input",
          str(shared / "data/real/av"), "--output", str(data), "--split-by", "clip",
          "--split-ratios", "0.7", "0.15", "0.15", "--no-progress"])
  _run([sys.executable, str(ROOT / "data_prep/au_labels.py"), "--data", str(data),
        "--no-progress"])


def train(config, workdir: pathlib.Path) -> dict:
  from lipsync_jax.train import train_lib  # pylint: disable=import-outside-toplevel
  summary = workdir / "summary.json"
  if summary.is_file():
    s = json.loads(summary.read_text())
    if s.get("status") == "completed" and s.get("step") == int(config.num_steps):
      return s
  t0 = time.time()
  s = train_lib.train_and_evaluate(config, str(workdir))
  print(f"trained {config.model.arch} in {time.time() - t0:.0f} s", file=sys.stderr)
  return s


def time_step(config, n: int = 10) -> float:
  """Median seconds per train step on one fixed batch (after 2 warm-ups)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import train_lib  # pylint: disable=import-outside-toplevel
  mesh = sharding_lib.make_mesh()
  setup = train_lib.build(config, mesh)
  batch = train_lib._model_inputs(next(iter(train_lib.make_train_loader(config))))  # pylint: disable=protected-access
  gbatch = sharding_lib.shard_batch(batch, mesh)
  key = jax.random.PRNGKey(0)
  times = []
  for i in range(n + 2):
    t0 = time.perf_counter()
    setup.state, m = setup.train_step(setup.state, gbatch, key)
    jax.block_until_ready(m)
    if i >= 2:
      times.append(time.perf_counter() - t0)
  return float(np.median(times))


def n_params(workdir: pathlib.Path) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  loaded = checkpoint.load_model(str(workdir / "model"))
  return int(sum(x.size for x in jax.tree_util.tree_leaves(loaded.variables["params"])))


def memory_grid(c, workdir: pathlib.Path, data: pathlib.Path) -> dict:
  """The memory-slot grid of the trained SyncTalkFace, and the slot spread
  of the same model at its initial weights (same identity frame)."""
  import jax  # pylint: disable=import-outside-toplevel
  from lipsync_jax.evaluation import memory_grid as mg  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import sharding as sharding_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import train_lib  # pylint: disable=import-outside-toplevel
  out = workdir / "memory_grid.png"
  trained = mg.run(mg.parse_args(["--checkpoint", str(workdir), "--data", str(data),
                                  "--out", str(out), "--split", "test"]))
  setup = train_lib.build(c, sharding_lib.make_mesh(1))
  init_vars = jax.device_get({"params": setup.state.params,
                              "batch_stats": setup.state.batch_stats})
  face, mel, _ = mg._identity(str(data), "test", 0, 0.5, 96)  # pylint: disable=protected-access
  mouths = mg.slot_mouths(setup.model, init_vars, face, mel)
  initial = mg.spread(mouths[:, 48:])
  return {"png": str(out), "trained": trained, "initial": initial}


def evaluate(model: pathlib.Path, data: pathlib.Path, expert: pathlib.Path,
             out: pathlib.Path) -> dict:
  rep_path = out / "report.json"
  if not rep_path.is_file():
    from lipsync_jax.evaluation import evaluate as ev  # pylint: disable=import-outside-toplevel
    ev.run(ev.parse_args(["--checkpoint", str(model), "--data", str(data), "--split", "test",
                          "--mode", "paired", "--lmd", "--syncnet", str(expert),
                          "--out", str(out), "--batch-size", "20", "--quiet"]))
  return json.loads(rep_path.read_text())


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shared", default=str(ROOT.parent / "shared"))
  p.add_argument("--workdir", default="/tmp/bench_variants")
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--batch-size", type=int, default=4)
  p.add_argument("--width", type=float, default=0.0625)
  p.add_argument("--lr", type=float, default=1e-3,
                 help="generator learning rate, the same for the three (their configs' "
                 "1e-4 is for full-size runs)")
  p.add_argument("--expert-steps", type=int, default=400)
  p.add_argument("--au-steps", type=int, default=300)
  p.add_argument("--seed", type=int, default=0)
  return p


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)
  shared = pathlib.Path(a.shared)
  if not (shared / "data/real/av").is_dir():
    print(f"error: {shared}/data/real/av not found (pass --shared)", file=sys.stderr)
    return 2
  wd = pathlib.Path(a.workdir)
  wd.mkdir(parents=True, exist_ok=True)
  data = wd / "data"
  prepare(shared, data)
  t_all = time.time()

  def common(c, steps, batch):
    c.data_dir = str(data)
    c.num_steps = steps
    c.batch_size = batch
    c.seed = a.seed
    c.eval_every = max(1, steps // 4)
    c.checkpoint_every = steps
    c.sample_every = steps
    c.eval_batches = 8
    c.eval_at_start = True
    c.progress_bar = False
    return c

  expert_cfg = common(load_config("syncnet", "tiny"), a.expert_steps, 16)
  expert_cfg.model.width_multiplier = 0.125
  expert_cfg.optimizer.warmup_steps = 0
  expert = train(expert_cfg, wd / "expert")

  cls_cfg = common(load_config("au_classifier", "tiny"), a.au_steps, 16)
  cls = train(cls_cfg, wd / "au_classifier")
  a2au_cfg = common(load_config("audio_to_au", "tiny"), a.au_steps, 16)
  a2au_cfg.model.width_multiplier = a.width
  a2au = train(a2au_cfg, wd / "audio_to_au")

  rows = []
  for arch in GENERATORS:
    c = common(load_config(arch, "tiny"), a.steps, a.batch_size)
    c.model.width_multiplier = a.width
    c.disc.width_multiplier = a.width
    c.optimizer.learning_rate = a.lr
    c.syncnet_checkpoint = str(wd / "expert")
    if arch == "au_tcn":
      c.audio_to_au_checkpoint = str(wd / "audio_to_au")
      c.au_classifier_checkpoint = str(wd / "au_classifier")
      c.model.overrides.finetune_audio_to_au = False
      c.loss.a2au = 0.0
      c.loss.au = 0.1
      c.data.options.with_aus = False
    t0 = time.time()
    s = train(c, wd / arch)
    wall = time.time() - t0
    rep = evaluate(wd / arch / "model", data, wd / "expert", wd / f"eval_{arch}")
    agg = rep["aggregate"]
    step_s = time_step(c)
    grid = memory_grid(c, wd / arch, data) if arch == "synctalkface" else None
    rows.append({
        "arch": arch, "params": n_params(wd / arch), "step_s": step_s,
        "train_wall_s": round(wall, 1),
        "val_l1": [s["initial_eval"]["l1"], s["final_eval"]["l1"]],
        "val_sync": [s["initial_eval"]["sync"], s["final_eval"]["sync"]],
        "train_loss_last": s["final_train"]["loss"],
        **{k: agg[k]["mean"] for k in ("lse_d", "lse_c", "psnr", "ssim", "lpips", "lmd",
                                        "gt_lse_d", "gt_lse_c") if k in agg},
        "clips": len(rep.get("clips", [])),
        "memory_grid": grid,
    })

  out = {"steps": a.steps, "batch_size": a.batch_size, "width": a.width, "lr": a.lr,
         "expert": {"steps": a.expert_steps, "final_eval": expert["final_eval"]},
         "au_classifier": cls["final_eval"], "audio_to_au": a2au["final_eval"],
         "rows": rows, "seconds": round(time.time() - t_all, 1)}
  (wd / "bench_variants.json").write_text(json.dumps(out, indent=2))
  print(f"\n{a.steps} steps, batch {a.batch_size}, width {a.width}, lr {a.lr}, seed {a.seed}; "
        f"expert val acc {expert['final_eval']['accuracy']:.3f}; test split "
        f"(paired, {rows[0]['clips']} clips), scorer = the bench's expert\n")
  print("| generator | params | step (s) | val L1 init->final | val sync init->final | "
        "LSE-D | LSE-C | PSNR | SSIM | LPIPS | LMD-FM |")
  print("|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    f = lambda k: f"{r[k]:.3f}" if k in r else "-"
    print(f"| {r['arch']} | {r['params']:,} | {r['step_s']:.3f} | "
          f"{r['val_l1'][0]:.4f} -> {r['val_l1'][1]:.4f} | "
          f"{r['val_sync'][0]:.3f} -> {r['val_sync'][1]:.3f} | {f('lse_d')} | {f('lse_c')} | "
          f"{r.get('psnr', float('nan')):.2f} | {f('ssim')} | {f('lpips')} | {f('lmd')} |")
  print(f"\nGT: LSE-D {rows[0].get('gt_lse_d', float('nan')):.3f}, LSE-C "
        f"{rows[0].get('gt_lse_c', float('nan')):.3f}; AU classifier val balanced acc "
        f"{cls['final_eval']['balanced_accuracy']:.3f}, audio-to-AU "
        f"{a2au['final_eval']['balanced_accuracy']:.3f}; total {out['seconds']:.0f} s")
  for r in rows:
    if r["memory_grid"]:
      g = r["memory_grid"]
      print(f"memory grid ({g['trained']['slots']} slots): {g['png']}; slot spread "
            f"{g['initial']['slot_spread']:.4f} at init -> {g['trained']['slot_spread']:.4f} "
            f"trained (pairwise L1 {g['initial']['pairwise_l1']:.4f} -> "
            f"{g['trained']['pairwise_l1']:.4f})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
