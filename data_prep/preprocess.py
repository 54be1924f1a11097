"""Raw talking-face videos -> a packed, sharded training dataset.

  python data_prep/preprocess.py --input RAW_DIR --output DATA_DIR \
      [--workers N] [--img-size 96] [--pads 0 10 0 0] \
      [--split-by clip|speaker|time] [--detector NAME]

Rerunning the same command resumes: finished clips are skipped. Every input
gets a status (ok, or failed with a reason) in DATA_DIR/report.json and in the
printed table. See lipsync_jax/data/preprocess_lib.py.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lipsync_jax.data import preprocess_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--input", required=True, help="folder of raw videos")
  p.add_argument("--output", required=True, help="dataset folder")
  p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
  p.add_argument("--img-size", type=int, default=96)
  p.add_argument("--pads", type=int, nargs=4, default=(0, 10, 0, 0),
                 metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"))
  p.add_argument("--split-by", choices=("clip", "speaker", "time"),
                 default="clip",
                 help="clip or speaker: unseen clips / speakers in val and "
                 "test (when that leaves a split empty, too few clips: val "
                 "and test are cut in time from the ends of the longest "
                 "clips instead); time: every clip in every split, cut in "
                 "time (same speakers, unseen moments; for small datasets)")
  p.add_argument("--split-ratios", type=float, nargs=3,
                 default=(0.9, 0.05, 0.05), metavar=("TRAIN", "VAL", "TEST"))
  p.add_argument("--detector", default="default",
                 help="default (BlazeFace, else Haar), blazeface, "
                 "blazeface_full, haar")
  p.add_argument("--codec", choices=("jpeg", "png", "raw"), default="jpeg")
  p.add_argument("--min-frames", type=int, default=15)
  p.add_argument("--clips-per-shard", type=int, default=256)
  p.add_argument("--retry-failed", action="store_true",
                 help="reprocess clips that failed in an earlier run")
  p.add_argument("--no-progress", action="store_true")
  return p


def main(argv: list[str] | None = None) -> int:
  a = build_parser().parse_args(argv)
  cfg = preprocess_lib.PrepConfig(
      img_size=a.img_size, pads=tuple(a.pads), detector=a.detector,
      codec=a.codec, min_frames=a.min_frames, split_by=a.split_by,
      split_ratios=tuple(a.split_ratios), clips_per_shard=a.clips_per_shard)
  try:
    report = preprocess_lib.run(a.input, a.output, cfg, workers=a.workers,
                                retry_failed=a.retry_failed,
                                progress=not a.no_progress)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(preprocess_lib.format_report(report))
  print(f"report: {pathlib.Path(a.output) / preprocess_lib.REPORT_NAME}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
