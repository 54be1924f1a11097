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


# Test files that take minutes on 2 cores, longest first (seconds measured in
# a fresh-clone CI on a 2-core AVX-512 EPYC, 2026-12-03, both workers busy).
LONGEST_FILES_FIRST = (
    "test_demo.py",              # the quick demo, ~700
    "test_train_sharding.py",    # five models, 1 device vs a mesh, ~590
    "test_train_variants.py",    # SyncTalkFace, AU-TCN train + resume, ~550
    "test_two_stage.py",         # both stages train + resume, the built-in model, ~300
    "test_train_hq.py",          # ~180
    "test_train_multihost.py",   # ~170
)


def pytest_collection_modifyitems(items):
  """Orders the session so that the long files start first.

  Under `-n`, `--dist loadfile --no-loadscope-reorder` (pyproject.toml) gives
  each worker one whole file at a time, in this order, and the next file when
  it is done: a file's module fixtures (prepared datasets, trained experts)
  are built once, and no long file is left to start at the end. Measured on
  a 2-core AVX-512 EPYC: `--dist load --maxschedchunk 1`, which deals single
  tests, spread every module over both workers and built their fixtures
  twice: 1,670 s of tests. (`--dist worksteal` splits the list into two
  contiguous halves, so one worker got every long test.)"""
  rank = {name: i for i, name in enumerate(LONGEST_FILES_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


def pytest_unconfigure(config):  # pylint: disable=unused-argument
  if os.environ.get("LIPSYNC_TEST_OWNS_XLA_CACHE") == str(os.getpid()):
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


def _killed_after_checkpoint(workdir: pathlib.Path, copy: pathlib.Path, step: int) -> pathlib.Path:
  """`copy`: the finished training run `workdir` as a run killed right after
  its checkpoint `step` would have left it: the later checkpoints and the
  exported models are gone, metrics.jsonl still holds the later steps' lines
  (a resume must drop them). Lets one uninterrupted run serve as both the
  reference and the interrupted run of an exact-resume test."""
  shutil.copytree(workdir, copy)
  ckpts = copy / "checkpoints"
  steps = sorted(int(d.name) for d in ckpts.iterdir() if d.name.isdigit())
  assert step in steps, f"no checkpoint {step} in {workdir} (has {steps})"
  for later in (s for s in steps if s > step):
    shutil.rmtree(ckpts / str(later))
  for name in ("model", "model_best", "summary.json"):
    target = copy / name
    if target.is_dir():
      shutil.rmtree(target)
    elif target.exists():
      target.unlink()
  return copy


@pytest.fixture
def killed_after_checkpoint():
  """`killed_after_checkpoint(workdir, copy, step)`: see `_killed_after_checkpoint`."""
  return _killed_after_checkpoint


@pytest.fixture(scope="module")
def xla_compilation_cache():
  """The session's persistent XLA cache (set up above, for every test); kept
  as a fixture so that the modules that rely on it say so."""
  import jax  # pylint: disable=import-outside-toplevel
  assert jax.config.jax_compilation_cache_dir, "no persistent XLA cache configured"
  yield
