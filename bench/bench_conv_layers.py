"""Per-layer convolution timings of the Wav2Lip generator, JAX against PyTorch.

    python bench/bench_conv_layers.py [--batch 8] [--frames 5] [--arch wav2lip]

Traces the generator once (`jax.eval_shape`) to collect the shape of every
`layers.conv2d` call of a train-mode forward at B x T frames, then times, for
each distinct shape, the forward, the input gradient and the kernel gradient
in JAX (`layers.conv2d`, i.e. the kernel gradient method the models use) and
in PyTorch (`F.conv2d`, `torch.nn.grad.conv2d_input` / `conv2d_weight`), and
prints a table (seconds, times the layer count) with the totals. This is where
the train-step gap of `bench_models.py` comes from (bench/README.md).
Needs the `[torch]` extra.
"""

from __future__ import annotations

import argparse
import collections
import os
import pathlib
import statistics
import sys
import time
from typing import Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def _median_time(fn: Callable[[], object], iters: int = 3) -> float:
  fn()
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def conv_shapes(arch: str, batch: int, frames: int) -> collections.Counter:
  """{(x shape, kernel shape, strides, padding): count} of a train forward."""
  import jax
  import jax.numpy as jnp
  from lipsync_jax import models
  from lipsync_jax.models import layers
  seen = collections.Counter()
  original = layers.conv2d

  def recording(x, kernel, strides=1, padding=0, method="auto"):
    seen[(tuple(x.shape), tuple(kernel.shape), layers._pair(strides),  # pylint: disable=protected-access
          layers._explicit_padding(padding))] += 1  # pylint: disable=protected-access
    return original(x, kernel, strides, padding, method)

  gen = models.create(arch)
  audio = jnp.zeros((batch, frames, 80, 16, 1))
  faces = jnp.zeros((batch, frames, 96, 96, 6))
  variables = jax.eval_shape(lambda: gen.init(jax.random.PRNGKey(0), audio[:1, :1],
                                              faces[:1, :1]))
  layers.conv2d = recording
  try:
    jax.eval_shape(lambda v: gen.apply(v, audio, faces, train=True,
                                       mutable=["batch_stats"]), variables)
  finally:
    layers.conv2d = original
  return seen


def time_layer(x_shape, k_shape, strides, padding) -> tuple[list[float], list[float]]:
  """([fwd, dx, dk] JAX, [fwd, dx, dk] PyTorch) seconds for one layer."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import torch
  import torch.nn.functional as F
  from lipsync_jax.models import layers
  rng = np.random.default_rng(0)
  x_np = rng.random(x_shape, np.float32)
  k_np = (rng.random(k_shape, np.float32) - 0.5) * 0.1
  x, k = jnp.asarray(x_np), jnp.asarray(k_np)
  conv = lambda x_, k_: layers.conv2d(x_, k_, strides, padding)
  fwd = jax.jit(conv)
  dy = jnp.ones_like(fwd(x, k))
  dx = jax.jit(lambda x_, k_, g: jax.vjp(lambda a: conv(a, k_), x_)[1](g)[0])
  dk = jax.jit(lambda x_, k_, g: jax.vjp(lambda b: conv(x_, b), k_)[1](g)[0])
  jax_t = [_median_time(lambda: fwd(x, k).block_until_ready()),
           _median_time(lambda: dx(x, k, dy).block_until_ready()),
           _median_time(lambda: dk(x, k, dy).block_until_ready())]
  (top, bottom), (left, right) = padding
  xt = F.pad(torch.from_numpy(x_np.transpose(0, 3, 1, 2).copy()), (left, right, top, bottom))
  kt = torch.from_numpy(k_np.transpose(3, 2, 0, 1).copy())
  dyt = torch.ones_like(F.conv2d(xt, kt, stride=strides))
  torch_t = [_median_time(lambda: F.conv2d(xt, kt, stride=strides)),
             _median_time(lambda: torch.nn.grad.conv2d_input(xt.shape, kt, dyt, stride=strides)),
             _median_time(lambda: torch.nn.grad.conv2d_weight(xt, kt.shape, dyt, stride=strides))]
  return jax_t, torch_t


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--arch", default="wav2lip")
  p.add_argument("--batch", type=int, default=8)
  p.add_argument("--frames", type=int, default=5)
  p.add_argument("--top", type=int, default=0, help="only the N heaviest shapes (0: all)")
  return p


def main(argv: list[str] | None = None) -> int:
  a = build_parser().parse_args(argv)
  try:
    import torch
  except ImportError:
    print("error: needs PyTorch (pip install -e '.[torch]')", file=sys.stderr)
    return 2
  torch.set_num_threads(os.cpu_count() or 1)
  shapes = conv_shapes(a.arch, a.batch, a.frames)
  work = lambda s: s[0][0] * s[0][1] * s[0][2] * s[1][0] * s[1][1] * s[1][2] * s[1][3]
  order = sorted(shapes, key=work, reverse=True)
  if a.top:
    order = order[:a.top]
  print(f"# {a.arch} train forward at B={a.batch} x T={a.frames}: {len(shapes)} conv shapes, "
        f"{sum(shapes.values())} layers; {os.cpu_count()} CPU threads\n")
  print("| input (N,H,W,Cin) | kernel | stride | count | JAX fwd / dx / dk (s) "
        "| torch fwd / dx / dk (s) | JAX/torch |")
  print("|---|---|---|---|---|---|---|")
  tot_j, tot_t = [0.0] * 3, [0.0] * 3
  for s in order:
    n = shapes[s]
    jt, tt = time_layer(*s)
    jt, tt = [v * n for v in jt], [v * n for v in tt]
    tot_j = [u + v for u, v in zip(tot_j, jt)]
    tot_t = [u + v for u, v in zip(tot_t, tt)]
    fmt = lambda v: " / ".join(f"{x:.3f}" for x in v)
    print(f"| {s[0]} | {s[1][:2]} {s[1][2]}->{s[1][3]} | {s[2]} | {n} | {fmt(jt)} | {fmt(tt)} "
          f"| {sum(jt) / max(sum(tt), 1e-9):.2f} |", flush=True)
  print(f"| **total** | | | | {' / '.join(f'{x:.2f}' for x in tot_j)} "
        f"| {' / '.join(f'{x:.2f}' for x in tot_t)} | {sum(tot_j) / max(sum(tot_t), 1e-9):.2f} |")
  return 0


if __name__ == "__main__":
  sys.exit(main())
