"""FaceMesh lip tracks for a packed dataset (the two-stage model's targets).

  python data_prep/lip_tracks.py --data DATA_DIR [--overwrite]

Runs MediaPipe FaceMesh on the dataset's own face crops and stores each
clip's 40 lip points per frame in DATA_DIR/lips/, one file per clip, written
atomically: rerunning the command after an interruption measures only the
remaining clips. Train the two-stage model on the dataset afterwards
(configs/two_stage.py).
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lipsync_jax.data import format as fmt  # pylint: disable=g-import-not-at-top,wrong-import-position
from lipsync_jax.data import lip_store  # pylint: disable=g-import-not-at-top,wrong-import-position


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", required=True, help="dataset folder (data_prep/preprocess.py)")
  p.add_argument("--overwrite", action="store_true", help="measure measured clips again")
  p.add_argument("--no-progress", action="store_true")
  return p


def main(argv: list[str] | None = None) -> int:
  a = build_parser().parse_args(argv)
  try:
    n = len(fmt.load_index(a.data).clips)
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    with tqdm(total=n, desc="lip tracks", unit="clip", disable=a.no_progress) as bar:
      out = lip_store.track_dataset(a.data, overwrite=a.overwrite, progress=bar.update)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"measured {out['measured']} clip(s) ({out['frames']} frames with lips), "
        f"{out['skipped']} already measured; tracks in {pathlib.Path(a.data) / lip_store.LIPS_DIR}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
