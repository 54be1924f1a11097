"""Shared test setup.

Tests run with 8 simulated CPU devices so that the sharding tests see a real
mesh; everything else is unaffected (arrays live on device 0 by default).

One persistent XLA compilation cache serves the whole test session: every
xdist worker and every subprocess a test starts (train.py, infer.py, the
demo) inherit its folder through the environment, so a program that several
tests build (a tiny generator's train step, the demo's models) compiles once.
It is set before the workers start (this file is imported by pytest's main
process first), and removed at the end unless it was given from outside.
"""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="lipsync-test-xla-")
  os.environ["LIPSYNC_TEST_OWNS_XLA_CACHE"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.3")

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


def pytest_collection_modifyitems(items):
  """Tests marked `slow` (each minutes long on 2 cores) go first, in their
  file order, so that no long test is left to start at the end. Under `-n`,
  `--dist load --maxschedchunk 1` (pyproject.toml) keeps two tests queued on
  each worker and hands out the next one as a worker finishes one: the slow
  tests are shared between the workers, longest-first list scheduling.
  (`--dist worksteal`, and `load` with its default chunks, give each worker
  a contiguous block of the list, so one worker got every slow test: 2,945 s
  on an AVX2-only CPU against 2,931 s before the sort.)"""
  items.sort(key=lambda item: item.get_closest_marker("slow") is None)


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if os.environ.get("LIPSYNC_TEST_OWNS_XLA_CACHE") == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="module")
def xla_compilation_cache():
  """The session's persistent XLA cache (set up above, for every test); kept
  as a fixture so that the modules that rely on it say so."""
  import jax  # pylint: disable=import-outside-toplevel
  assert jax.config.jax_compilation_cache_dir, "no persistent XLA cache configured"
  yield
