"""On-disk caches: one root folder for the face-box tracks and compiled programs.

Root: `$LIPSYNC_CACHE_DIR`, else `$XDG_CACHE_HOME/lipsync_jax`, else
`~/.cache/lipsync_jax`:

  boxes/   face-box tracks of input videos, by content hash (`infer.py`)
  xla/     JAX's persistent compilation cache: the compiled generator, expert
           and train steps, so the second `infer.py` / `evaluate` / `train.py`
           / demo run with the same model and shapes skips XLA compilation

`infer.py`, `python -m lipsync_jax.evaluate` and `python -m lipsync_jax.demo`
take `--no-cache`, `train.py` takes `--nocache`, to leave the compilation
cache off. A cache folder already given to JAX (`JAX_COMPILATION_CACHE_DIR`
or `jax.config`) is kept.
"""

from __future__ import annotations

import os
import pathlib

# Programs that compile faster than this are not worth a disk entry.
MIN_COMPILE_TIME_S = 1.0


def cache_root() -> pathlib.Path:
  """The cache root folder (not created)."""
  root = os.environ.get("LIPSYNC_CACHE_DIR")
  if root:
    return pathlib.Path(root)
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(xdg) / "lipsync_jax"


def add_no_cache_argument(parser) -> None:
  """The `--no-cache` flag of the commands whose only cache is the compiled
  programs (`infer.py` has its own: it also covers the box tracks)."""
  parser.add_argument("--no-cache", action="store_true",
                      help="leave JAX's persistent compilation cache off (default: on, "
                           "under $LIPSYNC_CACHE_DIR or ~/.cache/lipsync_jax)")


def enable_compilation_cache(root: str | os.PathLike | None = None,
                             min_compile_time_s: float = MIN_COMPILE_TIME_S) -> str | None:
  """Turns on JAX's persistent compilation cache in `root/xla` (default
  `cache_root()`), unless JAX already has a cache folder. Returns the folder
  in use, or None when it cannot be created (then nothing is cached)."""
  import jax  # pylint: disable=import-outside-toplevel
  current = jax.config.jax_compilation_cache_dir
  if current:
    return current
  folder = pathlib.Path(root) if root is not None else cache_root()
  folder = folder / "xla"
  try:
    folder.mkdir(parents=True, exist_ok=True)
  except OSError:
    return None
  jax.config.update("jax_compilation_cache_dir", str(folder))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_s))
  return str(folder)
