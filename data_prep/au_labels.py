"""Per-frame AU labels for a packed dataset (the au_tcn variant's targets).

  python data_prep/au_labels.py --data DATA_DIR [--source facemesh|openface]
      [--csv-dir OPENFACE_CSVS] [--aus 10 14 20 25 26] [--overwrite]

"facemesh" (default) runs MediaPipe FaceMesh on the dataset's face crops and
derives geometric AU proxies (lipsync_jax/vision/au_proxies.py); "openface" reads
OpenFace 2.x CSVs named after each clip's source video. Labels go to
DATA_DIR/au_labels/, one file per clip, written atomically: rerunning the
command after an interruption labels only the remaining clips.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lipsync_jax.data import au_store  # pylint: disable=g-import-not-at-top,wrong-import-position
from lipsync_jax.data import format as fmt  # pylint: disable=g-import-not-at-top,wrong-import-position


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", required=True, help="dataset folder (data_prep/preprocess.py)")
  p.add_argument("--source", choices=("facemesh", "openface"), default="facemesh")
  p.add_argument("--csv-dir", help="OpenFace CSV folder (--source openface)")
  p.add_argument("--aus", type=int, nargs="+", default=None,
                 help="AU numbers (default 10 14 20 25 26)")
  p.add_argument("--overwrite", action="store_true", help="relabel labelled clips")
  p.add_argument("--no-progress", action="store_true")
  return p


def main(argv: list[str] | None = None) -> int:
  a = build_parser().parse_args(argv)
  try:
    n = len(fmt.load_index(a.data).clips)
    from tqdm import tqdm  # pylint: disable=g-import-not-at-top
    with tqdm(total=n, desc="AU labels", unit="clip", disable=a.no_progress) as bar:
      out = au_store.label_dataset(a.data, a.source, csv_dir=a.csv_dir, aus=a.aus,
                                   overwrite=a.overwrite, progress=bar.update)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"labelled {out['labelled']} clip(s), {out['skipped']} already labelled; "
        f"labels in {pathlib.Path(a.data) / au_store.AU_DIR}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
