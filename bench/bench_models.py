"""JAX vs PyTorch model benchmarks on this machine's CPU.

    python bench/bench_models.py            # full run (~10 min on an idle 2-core CPU)
    python bench/bench_models.py --quick    # smoke test, tiny iteration counts
    python bench/bench_models.py --only infer,l1

Every measurement (one bench, one framework) runs in its own subprocess, so
that its peak RSS (`ru_maxrss`) is attributable, and the JAX and PyTorch runs
of a bench alternate, so that load from other users of the machine hits both
alike. Timings are wall-clock medians after warm-up (JAX compile time is
reported separately). The benches:

  infer  Wav2Lip generator forward, 4-D batch N=32 at 96x96, eval mode
         (jitted in JAX, torch.inference_mode in PyTorch); frames/s.
  l1     Wav2Lip train step, B=8 x T=5: forward + backward + Adam, L1 only.
  gd     Wav2Lip-HQ step, B=8: G (L1 + 0.03 sync with the frozen expert in
         running-stat BN + 0.07 GAN) and D (BCE real/fake), both Adam(0.5, 0.999).
  lpips  LPIPS-AttnWav2Lip step, B=8: 0.97 L1 + 0.1 LPIPS-VGG16 + 0.03 sync, Adam.

PyTorch side: bench/torch_models.py (written from the spec, matches the
upstream golden outputs), standard eager loop. JAX side: lipsync_jax.models
and lipsync_jax.lpips; `gd` and `lpips` jit the trainer's own step
(lipsync_jax.train.steps.make_generator_train_step), `l1` a minimal L1-only
step written here (the trainer's step always evaluates the sync loss).

XLA CPU flags set here (documented in bench/README.md): none beyond the
defaults unless `--xla-flags` is given; the worker prints what it ran with.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO = BENCH_DIR.parent

BENCHES = ("infer", "l1", "gd", "lpips")
TITLES = {
    "infer": "Wav2Lip fwd, N=32 (frames/s)",
    "l1": "Wav2Lip train step L1, B=8xT=5",
    "gd": "Wav2Lip G+D step (L1+sync+GAN), B=8",
    "lpips": "LPIPS-AttnWav2Lip step (L1+LPIPS+sync), B=8",
}
TARGETS = {"infer": ">= 1.5x torch throughput", "l1": "<= 1.0x torch time",
           "gd": "<= 0.8x torch time", "lpips": "<= 0.8x torch time"}
# (warm-up, timed) iterations.
ITERS = {"full": {"infer": (1, 5), "l1": (1, 3), "gd": (1, 3), "lpips": (1, 3)},
         "quick": {"infer": (1, 2), "l1": (1, 1), "gd": (1, 1), "lpips": (1, 1)}}
B, T, N_INFER = 8, 5, 32
SYNC_W, GAN_W, LPIPS_W = 0.03, 0.07, 0.1  # configs/wav2lip.py, lpips_attnwav2lip.py


# -----------------------------------------------------------------------------
# Synthetic batches (host-side numpy, the trainer's batch contract).
# -----------------------------------------------------------------------------

def _batch(seed: int = 0) -> dict[str, Any]:
  import numpy as np
  rng = np.random.default_rng(seed)
  img = lambda: rng.integers(0, 256, (B, T, 96, 96, 3), dtype=np.uint8)
  mel = lambda *s: np.clip(rng.normal(0, 1.5, s), -4, 4).astype(np.float32)
  return {"target": img(), "reference": img(), "audio": mel(B, T, 80, 16, 1),
          "sync_audio": mel(B, 80, 16, 1)}


def _infer_inputs(seed: int = 0):
  import numpy as np
  rng = np.random.default_rng(seed)
  faces = rng.random((N_INFER, 96, 96, 6), dtype=np.float32)
  faces[:, 48:, :, :3] = 0
  audio = np.clip(rng.normal(0, 1.5, (N_INFER, 80, 16, 1)), -4, 4).astype(np.float32)
  return audio, faces


# -----------------------------------------------------------------------------
# JAX side.
# -----------------------------------------------------------------------------

def _jax_steps(bench: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
  """Returns (make_state, run_once) for a JAX measurement."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from lipsync_jax import losses
  from lipsync_jax import models

  key = jax.random.PRNGKey(0)
  batch = _batch()

  def faces_from(batch):
    target = batch["target"].astype(jnp.float32) / 255.
    reference = batch["reference"].astype(jnp.float32) / 255.
    masked = target.at[:, :, 48:].set(0.)
    return target, jnp.concatenate([masked, reference], -1)

  if bench == "infer":
    gen = models.create("wav2lip")
    audio, faces = _infer_inputs()
    variables = jax.jit(lambda k: gen.init(k, audio[:1], faces[:1]))(key)
    fwd = jax.jit(lambda v, a, f: gen.apply(v, a, f, train=False))
    audio_d, faces_d = jax.device_put(audio), jax.device_put(faces)
    return (lambda: variables,
            lambda v: jax.block_until_ready(fwd(v, audio_d, faces_d)))

  gen_arch = "lpips_attnwav2lip" if bench == "lpips" else "wav2lip"
  gen = models.create(gen_arch)
  a0, f0 = batch["audio"][:1, :1], np.zeros((1, 1, 96, 96, 6), np.float32)
  g_vars = jax.jit(lambda k: gen.init(k, a0, f0))(key)

  if bench == "l1":
    # Issue 2's bench: L1 only. The trainer's step always evaluates the expert
    # sync loss (its weight is traced state), so this one is written here.
    g_tx = optax.adam(1e-4, b1=0.9, b2=0.999)

    def step(state, batch):
      params, batch_stats, opt_state = state

      def loss_fn(p):
        target, faces = faces_from(batch)
        pred, mut = gen.apply({"params": p, "batch_stats": batch_stats},
                              batch["audio"], faces, train=True, mutable=["batch_stats"])
        return losses.l1(pred, target), mut["batch_stats"]

      (loss, new_bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
      updates, opt_state = g_tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), new_bs, opt_state), loss

    make_state = lambda: (g_vars["params"], g_vars["batch_stats"],
                          g_tx.init(g_vars["params"]))
  else:
    # gd / lpips: the trainer's own step (lipsync_jax.train.steps).
    import ml_collections
    from lipsync_jax.train import state as state_lib
    from lipsync_jax.train import steps as steps_lib
    expert = models.create("syncnet_color")
    e_vars = jax.jit(lambda k: expert.init(
        k, np.zeros((1, 80, 16, 1), np.float32), np.zeros((1, 48, 96, 15), np.float32)))(key)
    loss_cfg = ml_collections.ConfigDict(
        {"l1": 1.0, "l1_complement": True, "lpips": LPIPS_W if bench == "lpips" else 0.0,
         "gan": GAN_W if bench == "gd" else 0.0})
    frozen = {"expert": e_vars}
    kwargs: dict[str, Any] = {}
    d_params = d_tx = None
    if bench == "gd":
      disc = models.create("wav2lip_disc_qual")
      d_params = jax.jit(lambda k: disc.init(k, np.zeros((1, 1, 96, 96, 3), np.float32)))(
          key)["params"]
      d_tx = state_lib.make_optimizer(1e-4, 0.5, 0.999)
      kwargs["disc"] = disc
    else:
      from lipsync_jax import lpips
      frozen["lpips"] = jax.device_put(lpips.load_lpips_params("vgg16"))
      kwargs["lpips_apply"] = lambda p, x, y: lpips.lpips_distance(p, x, y, "vgg16")
    g_tx = state_lib.make_optimizer(1e-4, 0.5 if bench == "gd" else 0.9, 0.999)
    train_step = steps_lib.make_generator_train_step(gen, expert, loss_cfg,
                                                     expert_bn="running", **kwargs)
    rng = jax.random.PRNGKey(1)
    step = lambda state, batch: train_step(state, batch, rng)
    make_state = lambda: state_lib.create_state(
        g_vars["params"], g_vars["batch_stats"], g_tx, d_params=d_params, d_tx=d_tx,
        sync_weight=SYNC_W, frozen=frozen)

  step = jax.jit(step, donate_argnums=0)
  holder = {}

  def run_once(state):
    if "state" not in holder:
      holder["state"] = state
    holder["state"], out = step(holder["state"], batch)
    jax.block_until_ready(out)

  return make_state, run_once


# -----------------------------------------------------------------------------
# PyTorch side.
# -----------------------------------------------------------------------------

def _torch_steps(bench: str) -> tuple[Callable[[], Any], Callable[[Any], None]]:
  import numpy as np
  import torch
  import torch.nn.functional as F
  sys.path.insert(0, str(BENCH_DIR))
  import torch_models as tm

  torch.manual_seed(0)
  if bench == "infer":
    gen = tm.create("wav2lip").eval()
    audio, faces = _infer_inputs()
    audio_t = torch.from_numpy(np.ascontiguousarray(audio.transpose(0, 3, 1, 2)))
    faces_t = torch.from_numpy(np.ascontiguousarray(faces.transpose(0, 3, 1, 2)))

    def run_once(_):
      with torch.inference_mode():
        gen(audio_t, faces_t)
    return (lambda: None), run_once

  batch = _batch()
  gen = tm.create("lpips_attnwav2lip" if bench == "lpips" else "wav2lip").train()
  b1 = 0.5 if bench == "gd" else 0.9
  g_opt = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(b1, 0.999))
  expert = disc = d_opt = lp = None
  if bench in ("gd", "lpips"):
    expert = tm.create("syncnet_color").eval().requires_grad_(False)
  if bench == "gd":
    disc = tm.create("wav2lip_disc_qual").train()
    d_opt = torch.optim.Adam(disc.parameters(), lr=1e-4, betas=(0.5, 0.999))
  if bench == "lpips":
    lp = tm.LPIPSVGG(bgr=True).eval()

  def to_torch(b):
    # NHWC uint8 (B, T, 96, 96, 3) -> (B, 3, T, 96, 96) float in [0, 1].
    img = lambda x: torch.from_numpy(x).permute(0, 4, 1, 2, 3).float() / 255.
    target, reference = img(b["target"]), img(b["reference"])
    masked = target.clone()
    masked[:, :, :, 48:] = 0.
    faces = torch.cat([masked, reference], dim=1)
    audio = torch.from_numpy(b["audio"]).permute(0, 1, 4, 2, 3)  # (B, T, 1, 80, 16)
    sync_audio = torch.from_numpy(b["sync_audio"]).permute(0, 3, 1, 2)
    return target, faces, audio, sync_audio

  def sync_loss(pred, sync_audio):
    lower = pred[:, :, :, pred.size(3) // 2:]
    stacked = torch.cat([lower[:, :, t] for t in range(lower.size(2))], dim=1)
    a, v = expert(sync_audio, stacked)
    cos = F.cosine_similarity(a, v).clamp(0, 1)
    return F.binary_cross_entropy(cos, torch.ones_like(cos))

  def run_once(_):
    target, faces, audio, sync_audio = to_torch(batch)
    pred = gen(audio, faces)
    l1 = F.l1_loss(pred, target)
    if bench == "l1":
      loss = l1
    elif bench == "lpips":
      loss = ((1 - SYNC_W) * l1 + SYNC_W * sync_loss(pred, sync_audio)
              + LPIPS_W * lp(fold_t(pred), fold_t(target)).mean())
    else:
      fake = disc(pred)
      gan = F.binary_cross_entropy(fake, torch.ones_like(fake))
      loss = (SYNC_W * sync_loss(pred, sync_audio) + GAN_W * gan
              + (1 - SYNC_W - GAN_W) * l1)
    g_opt.zero_grad(set_to_none=True)
    loss.backward()
    g_opt.step()
    if bench == "gd":
      d_opt.zero_grad(set_to_none=True)
      real = disc(target)
      fake = disc(pred.detach())
      d_loss = (F.binary_cross_entropy(real, torch.ones_like(real))
                + F.binary_cross_entropy(fake, torch.zeros_like(fake)))
      d_loss.backward()
      d_opt.step()

  def fold_t(x):  # (B, 3, T, H, W) -> (B*T, 3, H, W)
    return x.transpose(1, 2).reshape(-1, *x.shape[1:2], *x.shape[3:])

  return (lambda: None), run_once


# -----------------------------------------------------------------------------
# Worker: one bench, one framework, in this process.
# -----------------------------------------------------------------------------

def _worker(bench: str, framework: str, warmup: int, iters: int) -> dict:
  threads = os.cpu_count() or 1
  result: dict[str, Any] = {"bench": bench, "framework": framework}
  if framework == "torch":
    import torch
    torch.set_num_threads(threads)
    result["threads"] = torch.get_num_threads()
    make_state, run_once = _torch_steps(bench)
  else:
    import jax
    result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    result["jax_devices"] = str(jax.devices())
    make_state, run_once = _jax_steps(bench)
  state = make_state()
  t0 = time.perf_counter()
  run_once(state)  # JAX: includes compilation
  result["first_s"] = time.perf_counter() - t0
  for _ in range(max(0, warmup - 1)):
    run_once(state)
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    run_once(state)
    times.append(time.perf_counter() - t0)
  result["times"] = times
  result["median_s"] = statistics.median(times)
  result["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  if framework == "jax":
    import jax
    stats = jax.devices()[0].memory_stats()
    if stats and "peak_bytes_in_use" in stats:
      result["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
  return result


def _run_worker(bench: str, framework: str, mode: str, xla_flags: str,
                timeout: float) -> dict:
  warmup, iters = ITERS[mode][bench]
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
  if framework == "jax":
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = xla_flags
  cmd = [sys.executable, __file__, "--worker", bench, framework,
         "--warmup", str(warmup), "--iters", str(iters)]
  try:
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
  except subprocess.TimeoutExpired:
    return {"bench": bench, "framework": framework, "error": f"timed out after {timeout:.0f} s"}
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode != 0 or not lines:
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"bench": bench, "framework": framework, "error": tail[:200]}
  return json.loads(lines[-1])


# -----------------------------------------------------------------------------
# Report.
# -----------------------------------------------------------------------------

def _table(results: dict[str, dict[str, dict]]) -> str:
  rows = ["| bench | JAX | PyTorch | JAX/torch time | JAX compile+1st (s) | "
          "peak RSS JAX / torch (MiB) | target | met |",
          "|---|---|---|---|---|---|---|---|"]
  for bench, by_fw in results.items():
    j, t = by_fw.get("jax", {}), by_fw.get("torch", {})
    err = j.get("error") or t.get("error")
    if err:
      rows.append(f"| {TITLES[bench]} | {j.get('error', 'ok')} | {t.get('error', 'ok')} "
                  "| n/a | | | | |")
      continue
    jm, tm_ = j["median_s"], t["median_s"]
    ratio = jm / tm_
    if bench == "infer":
      cell = lambda r: f"{N_INFER / r['median_s']:.1f} fr/s ({r['median_s'] * 1e3:.0f} ms)"
      met = (1 / ratio) >= 1.5
      ratio_txt = f"{ratio:.2f} (speed-up {1 / ratio:.2f}x)"
    else:
      cell = lambda r: f"{r['median_s']:.2f} s/step"
      met = ratio <= (1.0 if bench == "l1" else 0.8)
      ratio_txt = f"{ratio:.2f}"
    rows.append(f"| {TITLES[bench]} | {cell(j)} | {cell(t)} | {ratio_txt} | "
                f"{j['first_s']:.1f} | {j['maxrss_mb']:.0f} / {t['maxrss_mb']:.0f} | "
                f"{TARGETS[bench]} | {'yes' if met else 'NO'} |")
  return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--quick", action="store_true", help="tiny iteration counts (smoke test)")
  p.add_argument("--only", default=",".join(BENCHES),
                 help=f"comma-separated subset of {','.join(BENCHES)}")
  p.add_argument("--xla-flags", default=os.environ.get("BENCH_XLA_FLAGS", ""),
                 help="XLA_FLAGS for the JAX workers (default: none)")
  p.add_argument("--json", help="also write the raw results here")
  p.add_argument("--timeout", type=float, default=600, help="per-measurement timeout (s)")
  p.add_argument("--worker", nargs=2, metavar=("BENCH", "FRAMEWORK"), help=argparse.SUPPRESS)
  p.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
  p.add_argument("--iters", type=int, default=3, help=argparse.SUPPRESS)
  return p


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)

  if args.worker:
    bench, framework = args.worker
    print(json.dumps(_worker(bench, framework, args.warmup, args.iters)), flush=True)
    return 0

  benches = [b.strip() for b in args.only.split(",") if b.strip()]
  unknown = sorted(set(benches) - set(BENCHES))
  if unknown:
    print(f"error: unknown bench(es) {', '.join(unknown)}; expected {', '.join(BENCHES)}",
          file=sys.stderr)
    return 2
  mode = "quick" if args.quick else "full"
  print(f"# bench_models ({mode}): {os.cpu_count()} CPU threads, "
        f"XLA_FLAGS={args.xla_flags!r}, {time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
  results: dict[str, dict[str, dict]] = {}
  start = time.perf_counter()
  for i, bench in enumerate(benches):
    # Alternate which framework goes first, so that drift hits both alike.
    order = ("jax", "torch") if i % 2 == 0 else ("torch", "jax")
    results[bench] = {}
    for fw in order:
      r = _run_worker(bench, fw, mode, args.xla_flags, args.timeout)
      results[bench][fw] = r
      summary = r.get("error") or (f"median {r['median_s']:.3f} s over {len(r['times'])}, "
                                   f"first {r['first_s']:.1f} s, rss {r['maxrss_mb']:.0f} MiB")
      print(f"  {bench:6s} {fw:5s}: {summary}", flush=True)
  print(f"\n(total {time.perf_counter() - start:.0f} s)\n")
  print(_table(results))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
