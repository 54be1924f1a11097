"""The cache root and JAX's persistent compilation cache under it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from lipsync_jax import cache
from lipsync_jax import inference

REPO = pathlib.Path(__file__).resolve().parents[1]

_PROGRAM = """
import sys
import jax, jax.numpy as jnp
from lipsync_jax import cache
folder = cache.enable_compilation_cache(min_compile_time_s=0)
print(folder)
print(float(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((64, 64))).sum()))
"""


def _run(env) -> list[str]:
  proc = subprocess.run([sys.executable, "-c", _PROGRAM], env=env, capture_output=True,
                        text=True, timeout=3600, cwd=REPO)  # catches hangs only
  assert proc.returncode == 0, proc.stderr[-2000:]
  return proc.stdout.split()


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
  monkeypatch.setenv("LIPSYNC_CACHE_DIR", str(tmp_path / "c"))
  assert cache.cache_root() == tmp_path / "c"
  assert inference.default_cache_dir() == tmp_path / "c" / "boxes"
  monkeypatch.delenv("LIPSYNC_CACHE_DIR")
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  assert cache.cache_root() == tmp_path / "xdg" / "lipsync_jax"


def test_compilation_cache_lives_under_the_root_and_is_reused(tmp_path):
  env = {k: v for k, v in os.environ.items()
         if k not in ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS")}
  env["LIPSYNC_CACHE_DIR"] = str(tmp_path / "root")
  folder, value = _run(env)
  assert folder == str(tmp_path / "root" / "xla")
  entries = sorted(p.name for p in pathlib.Path(folder).iterdir())
  assert entries, "nothing was written to the compilation cache"
  # A second process finds the program there: same answer, no new entry.
  assert _run(env) == [folder, value]
  assert sorted(p.name for p in pathlib.Path(folder).iterdir()) == entries
  # A folder already given to JAX is kept.
  env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "given")
  assert _run(env)[0] == str(tmp_path / "given")
