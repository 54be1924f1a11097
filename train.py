"""Train the SyncNet expert, the landmark sync expert or a generator.

    python train.py --config configs/syncnet.py --workdir runs/expert \
        --config.data_dir=data/prep
    python train.py --config configs/lip_sync.py --workdir runs/lip_sync \
        --config.videos=../shared/data/real/av
    python train.py --config configs/lpips_attnwav2lip.py:tiny --workdir runs/t \
        --config.data_dir=data/prep --config.syncnet_checkpoint=runs/expert

Rerunning the same command resumes from the workdir's latest checkpoint.
Compiled programs are cached on disk (`lipsync_jax.cache`; `--nocache`: off).
SIGTERM saves a checkpoint and exits 0. Errors print `error: ...` and exit 2
(bad config or inputs) or 1 (a NaN/Inf loss).
"""

from __future__ import annotations

import logging
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

def define_flags(flag_values: flags.FlagValues = flags.FLAGS):
  """The command line's flags on `flag_values` (tests/test_docs.py parses the
  documented commands with a fresh `flags.FlagValues()`); returns their holders."""
  config = config_flags.DEFINE_config_file(
      "config", None, "training config file, e.g. configs/syncnet.py or "
      "configs/syncnet.py:tiny", lock_config=True, flag_values=flag_values)
  workdir = flags.DEFINE_string("workdir", None, "run directory (checkpoints, logs)",
                                flag_values=flag_values)
  use_cache = flags.DEFINE_bool(
      "cache", True, "JAX's persistent compilation cache under $LIPSYNC_CACHE_DIR (default "
      "~/.cache/lipsync_jax/xla): a rerun or resume skips XLA compilation; --nocache: off",
      flag_values=flag_values)
  flags.mark_flags_as_required(["config", "workdir"], flag_values=flag_values)
  return config, workdir, use_cache


_CONFIG, _WORKDIR, _CACHE = define_flags()


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.getLogger("absl").setLevel(logging.WARNING)
  from lipsync_jax.train import train_lib  # after flag parsing: imports jax
  if _CACHE.value:
    from lipsync_jax import cache
    cache.enable_compilation_cache()
  config = _CONFIG.value
  if config.get("phase") == "lip_sync":  # videos in, no packed dataset
    from lipsync_jax.train import lip_sync_lib
    train_fn = lip_sync_lib.train_and_evaluate
  else:
    train_fn = train_lib.train_and_evaluate
  try:
    summary = train_fn(config, _WORKDIR.value)
  except train_lib.TrainingDiverged as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"{summary['status']} at step {summary['step']}; summary in "
        f"{_WORKDIR.value}/summary.json")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a one-line error for a `--config.FIELD=...`
  override of a field the config does not have (ml_collections raises a bare
  AttributeError / KeyError there, which would print a traceback)."""
  try:
    return app.parse_flags_with_usage(argv)
  except (AttributeError, KeyError) as e:
    field = str(e).strip("\"'")
    print(f"error: a --config override names a field the config does not have: {field!r}",
          file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
