"""The shipped two-stage model's training corpus, as a folder of links.

  python data_prep/shared_corpus.py --shared ../shared --out data/shared_corpus
  python data_prep/preprocess.py --input data/shared_corpus --output data/multi
  python data_prep/lip_tracks.py --data data/multi

Links every clip the shipped model trained on into one folder, under fixed
names: the 2,065 Arabic news clips of ../shared/data/lrw_ar/video and the
real clips of ../shared/data/real/av except the landmark expert's 10
held-out speakers (configs/lip_sync.py SHARED_VAL_SPEAKERS, which also keeps
GRID speaker s1 out: he is held-out grid/bbaf2n). `preprocess.py` splits
clips by a hash of their path in this folder, so these names fix which
clips are val and test: the clips `two_stage calibrate` measures the lip
gain on, which neither stage may have trained on. Rerunning is a no-op; a
link that points elsewhere is an error.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "configs"))

from lip_sync import SHARED_VAL_SPEAKERS  # pylint: disable=g-import-not-at-top,wrong-import-position,import-error

sys.path.insert(0, str(REPO))
from lipsync_jax.data import preprocess_lib  # pylint: disable=g-import-not-at-top,wrong-import-position


class CorpusError(Exception):
  """The shared data is missing or the output folder holds other links."""


def corpus_links(shared: str | os.PathLike) -> dict[str, pathlib.Path]:
  """{name in the corpus folder: the clip in `shared`} for every training clip.

  The folder is flat: an lrw_ar clip keeps its file name, a real clip is
  "real_<folder>_<file>"; `preprocess.py` makes their clip ids (and splits)
  from these names without the suffix. They are the names of the dataset
  the shipped lip gain was measured on (`two_stage.json`).
  """
  shared = pathlib.Path(shared)
  lrw = shared / "data" / "lrw_ar" / "video"
  real = shared / "data" / "real" / "av"
  for folder in (lrw, real):
    if not folder.is_dir():
      raise CorpusError(f"{folder} not found: pass --shared, the folder with data/lrw_ar "
                        "and data/real (../shared/README.md)")
  # preprocess.py's own video finder and clip ids, so the corpus holds what
  # it would read, and a held-out speaker is named as configs/lip_sync.py does.
  links = {"_".join(p.relative_to(lrw).parts): p for p in preprocess_lib.find_videos(lrw)}
  for p in preprocess_lib.find_videos(real):
    if preprocess_lib.clip_id_for(p, real) not in SHARED_VAL_SPEAKERS:
      links[f"real_{'_'.join(p.relative_to(real).parts)}"] = p
  return links


def make_corpus(shared: str | os.PathLike, out: str | os.PathLike) -> tuple[int, int]:
  """Links `corpus_links(shared)` under `out`: -> (made, already there)."""
  out = pathlib.Path(out)
  links = corpus_links(shared)
  made = 0
  for name, target in links.items():
    dst = out / name
    target = target.resolve()
    if dst.is_symlink() or dst.exists():
      if not dst.is_symlink() or pathlib.Path(os.readlink(dst)) != target:
        raise CorpusError(f"{dst} exists and is not a link to {target}: pass an empty --out")
      continue
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(target)
    made += 1
  return made, len(links) - made


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--shared", default=str(REPO.parent / "shared"),
                 help="the shared folder (data/lrw_ar, data/real)")
  p.add_argument("--out", required=True, help="the corpus folder of links to make")
  return p


def main(argv: list[str] | None = None) -> int:
  a = build_parser().parse_args(argv)
  try:
    made, there = make_corpus(a.shared, a.out)
  except (CorpusError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"{made + there} clips in {a.out} ({made} linked, {there} already there)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
