"""What machine a run is on: CPU model, vector extensions, cores, load.

Timings mean little without the machine beside them: the same demo takes
twice as long on a 2-core AVX2-only EPYC as on an AVX-512 one. `describe()`
is written into the demo's summary and printed by the bench scripts.
"""

from __future__ import annotations

import os
import platform
from typing import Any

# x86 vector extensions worth naming, widest last (as /proc/cpuinfo spells them).
_VECTOR_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                 "avx512_bf16", "amx_tile")


def _cpuinfo(text: str) -> tuple[str | None, set[str]]:
  """(model name, flags) of the first processor in /proc/cpuinfo `text`."""
  model, flags = None, set()
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key = key.strip()
    if key == "model name" and model is None:
      model = value.strip()
    elif key in ("flags", "Features") and not flags:
      flags = set(value.split())
  return model, flags


def describe(cpuinfo_path: str = "/proc/cpuinfo") -> dict[str, Any]:
  """The machine, as a JSON-able dict.

  Keys: cpu (model name), vector_extensions (those of `_VECTOR_FLAGS` the CPU
  has), avx512 (bool, or None where the flags cannot be read), cores (usable
  by this process), load_avg (1, 5, 15 min), platform.
  """
  model, flags = None, set()
  try:
    with open(cpuinfo_path, encoding="utf-8", errors="replace") as f:
      model, flags = _cpuinfo(f.read())
  except OSError:
    pass
  try:
    cores = len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    cores = os.cpu_count()
  try:
    load = [round(v, 2) for v in os.getloadavg()]
  except OSError:
    load = None
  return {"cpu": model or platform.processor() or platform.machine(),
          "vector_extensions": [f for f in _VECTOR_FLAGS if f in flags],
          "avx512": ("avx512f" in flags) if flags else None,
          "cores": cores,
          "load_avg": load,
          "platform": platform.platform(terse=True)}


def one_line(info: dict[str, Any]) -> str:
  """'AMD EPYC, 2 cores, AVX-512 (avx2 fma avx512f ...), load 0.4' for tables."""
  isa = {True: "AVX-512", False: "no AVX-512", None: "ISA unknown"}[info.get("avx512")]
  ext = " ".join(info.get("vector_extensions") or [])
  load = info.get("load_avg")
  return (f"{info.get('cpu')}, {info.get('cores')} cores, {isa}"
          + (f" ({ext})" if ext else "") + (f", load {load[0]}" if load else ""))
