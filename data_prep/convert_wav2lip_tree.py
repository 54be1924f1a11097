"""Converts an upstream Wav2Lip preprocessed tree into a packed dataset.

  python data_prep/convert_wav2lip_tree.py --root ROOT --filelists DIR \
      --output DATA_DIR [--img-size 96]

ROOT/<dir>/<clip>/<n>.jpg + audio.wav, DIR/{train,val,test}.txt. Missing jpg
numbers are frames without a face. See lipsync_jax/data/wav2lip_tree.py.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lipsync_jax.data import wav2lip_tree  # pylint: disable=g-import-not-at-top,wrong-import-position


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--root", required=True)
  p.add_argument("--filelists", required=True)
  p.add_argument("--output", required=True)
  p.add_argument("--img-size", type=int, default=96)
  p.add_argument("--codec", choices=("jpeg", "png", "raw"), default="jpeg")
  p.add_argument("--clips-per-shard", type=int, default=256)
  p.add_argument("--no-progress", action="store_true")
  return p


def main(argv: list[str] | None = None) -> int:
  a = build_parser().parse_args(argv)
  try:
    report = wav2lip_tree.convert(a.root, a.filelists, a.output, a.img_size,
                                  a.codec, a.clips_per_shard,
                                  progress=not a.no_progress)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for e in report["clips"]:
    if e["status"] != "ok":
      print(f"{e['clip_id']}: failed: {e['reason']}")
  print(f"{report['num_ok']} clip(s) converted, {report['num_failed']} failed;"
        f" report: {pathlib.Path(a.output) / wav2lip_tree.REPORT_NAME}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
