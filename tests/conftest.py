"""Shared test setup.

Tests run with 8 simulated CPU devices so that the sharding tests see a real
mesh; everything else is unaffected (arrays live on device 0 by default).
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("LIPSYNC_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """`../shared` beside the checkout (or $LIPSYNC_SHARED); skips when absent."""
  if not SHARED.is_dir():
    pytest.skip(f"needs the shared data folder, not found at {SHARED} "
                "(set LIPSYNC_SHARED to point at it)")
  return SHARED


@pytest.fixture(scope="module")
def xla_compilation_cache(tmp_path_factory):
  """A persistent XLA cache for one test module: identical programs built
  again (1 and 8 devices share init; a resumed run rebuilds the straight
  run's step) compile once."""
  import jax  # pylint: disable=import-outside-toplevel
  old = (jax.config.jax_compilation_cache_dir,
         jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla")))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  yield
  jax.config.update("jax_compilation_cache_dir", old[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", old[1])
