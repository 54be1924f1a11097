"""The two-stage model on disk: an audio-to-lips model and a lip renderer.

A two-stage model directory holds the two stages as ordinary model
directories (`model_dir.save_model`) and a manifest::

  DIR/two_stage.json   {"format": 1, "lips": "lips", "renderer": "renderer", ...}
  DIR/lips/            arch audio_to_lips
  DIR/renderer/        arch lip_renderer

    python -m lipsync_jax.two_stage pack --lips runs/lips --renderer runs/renderer \
        --out models/two_stage

packs two training workdirs (or model dirs) into one, and

    python -m lipsync_jax.two_stage finetune --videos my_speaker/ --workdir runs/me

fine-tunes the shipped model on a few minutes of one speaker in one command:
data_prep (face crops, mel, splits cut in time when there are few clips),
lip tracks, both stages from the built-in weights (`init_from`), then packs
WORKDIR/model. Each stage is skipped when its output is complete, so a rerun
resumes. `infer.py --checkpoint DIR` runs a two-stage model
(`inference.two_stage.TwoStageSyncer`); with no `--checkpoint`, `infer.py`
runs the one shipped in `lipsync_jax/assets/two_stage` (`--checkpoint
builtin`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
from typing import Any, Sequence

MANIFEST = "two_stage.json"
FORMAT = 1


class TwoStageError(ValueError):
  """A two-stage model directory that is missing or malformed (one line)."""


def builtin_path() -> pathlib.Path:
  """The two-stage model shipped inside the package (research use)."""
  return pathlib.Path(__file__).resolve().parent / "assets" / "two_stage"


def is_two_stage(path: str | os.PathLike) -> bool:
  return (pathlib.Path(path) / MANIFEST).is_file()


@dataclasses.dataclass
class TwoStageModel:
  """Both stages, loaded: modules, variables and the manifest."""
  lips_module: Any
  lips_variables: Any
  renderer_module: Any
  renderer_variables: Any
  manifest: dict[str, Any]

  @property
  def face_size(self) -> int:
    from lipsync_jax import models  # pylint: disable=import-outside-toplevel
    return int(models.face_size_of(self.renderer_module) or 96)

  @property
  def context(self) -> int:
    return int(self.lips_module.context)


def load(path: str | os.PathLike) -> TwoStageModel:
  """Loads a two-stage model directory ("builtin": the shipped one)."""
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  root = builtin_path() if str(path) == "builtin" else pathlib.Path(path)
  if not is_two_stage(root):
    raise TwoStageError(f"not a two-stage model directory (no {MANIFEST}): {root}")
  try:
    manifest = json.loads((root / MANIFEST).read_text())
  except json.JSONDecodeError as e:
    raise TwoStageError(f"{root / MANIFEST}: not valid JSON ({e})") from None
  if manifest.get("format") != FORMAT:
    raise TwoStageError(f"{root / MANIFEST}: unknown format {manifest.get('format')!r}")
  lips = checkpoint.load_model(root / manifest.get("lips", "lips"),
                               expected_arch="audio_to_lips")
  renderer = checkpoint.load_model(root / manifest.get("renderer", "renderer"),
                                   expected_arch="lip_renderer")
  return TwoStageModel(lips.module, dict(lips.variables), renderer.module,
                       dict(renderer.variables), manifest)


def pack(lips: str | os.PathLike, renderer: str | os.PathLike, out: str | os.PathLike,
         note: str = "") -> pathlib.Path:
  """Writes a two-stage model directory from two workdirs or model dirs.

  The stages are loaded (so a wrong or broken one fails here, not at
  inference), saved again under `out` through a temporary folder that is
  renamed only when complete.
  """
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  out = pathlib.Path(out)
  parts = {"lips": checkpoint.load_model(lips, expected_arch="audio_to_lips"),
           "renderer": checkpoint.load_model(renderer, expected_arch="lip_renderer")}
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
  try:
    for name, loaded in parts.items():
      meta = {k: v for k, v in loaded.meta.items()
              if k not in ("format", "arch", "config", "lipsync_jax_version", "created")}
      checkpoint.save_model(tmp / name, loaded.arch, dict(loaded.config),
                            dict(loaded.variables), extra_meta=meta)
    manifest = {"format": FORMAT, "lips": "lips", "renderer": "renderer",
                "sources": {"lips": str(lips), "renderer": str(renderer)}}
    if note:
      manifest["note"] = note
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    if out.exists():
      shutil.rmtree(out)
    os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return out


FINETUNE_STEPS = {"renderer": 600, "lips": 800}
CONFIG_FILE = pathlib.Path(__file__).resolve().parents[1] / "configs" / "two_stage.py"


def finetune(videos: str | os.PathLike, workdir: str | os.PathLike, base: str = "builtin",
             renderer_steps: int = FINETUNE_STEPS["renderer"],
             lips_steps: int = FINETUNE_STEPS["lips"], progress: bool = True) -> pathlib.Path:
  """Fine-tunes a two-stage model (`base`) on a folder of one speaker's
  videos; returns the packed model directory WORKDIR/model.

  Raises TwoStageError (one line) for a folder with no usable clip.
  """
  from lipsync_jax.data import lip_store, preprocess_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.train import config_lib, train_lib  # pylint: disable=import-outside-toplevel
  work = pathlib.Path(workdir)
  root = builtin_path() if str(base) == "builtin" else pathlib.Path(base)
  load(root)  # a broken base fails before any work
  if not CONFIG_FILE.is_file():
    raise TwoStageError(f"{CONFIG_FILE} not found: fine-tune from a checkout of lipsync-jax")
  videos = pathlib.Path(videos)
  if not videos.is_dir() or not preprocess_lib.find_videos(videos):
    raise TwoStageError(f"no video files in {videos}: give a folder of talking-face clips "
                        "of one speaker")
  data = work / "data"
  if not (data / "index.json").is_file() or not (data / "splits" / "train.txt").is_file():
    preprocess_lib.run(videos, data, preprocess_lib.PrepConfig(), progress=progress)
  # data_prep writes its report beside the index, also on a resumed run.
  report = json.loads((data / preprocess_lib.REPORT_NAME).read_text())
  if not report["num_clips_in_dataset"]:
    reasons = "; ".join(f"{e['clip_id']}: {e.get('reason', e['status'])}"
                        for e in report["clips"][:3])
    raise TwoStageError(f"no usable clip in {videos} ({reasons})")
  lip_store.track_dataset(data)
  manifest = json.loads((root / MANIFEST).read_text())
  for stage, steps in (("renderer", renderer_steps), ("lips", lips_steps)):
    c = config_lib.load(CONFIG_FILE, stage)
    c.data_dir = str(data)
    c.num_steps = int(steps)
    c.eval_every = c.checkpoint_every = max(1, int(steps) // 2)
    c.sample_every = int(steps)
    c.optimizer.warmup_steps = min(int(c.optimizer.warmup_steps), max(1, int(steps) // 10))
    c.optimizer.learning_rate = float(c.optimizer.learning_rate) * 0.3
    c.init_from = str(root / manifest.get(stage, stage))
    c.progress_bar = progress
    summary = work / stage / "summary.json"
    if not (summary.is_file() and json.loads(summary.read_text()).get("status") == "completed"):
      train_lib.train_and_evaluate(c, str(work / stage))
  return pack(work / "lips", work / "renderer", work / "model",
              note=f"fine-tuned from {base} on {videos}")


def build_parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m lipsync_jax.two_stage",
                              description="Pack the two stages into one model directory.")
  sub = p.add_subparsers(dest="command", required=True)
  pk = sub.add_parser("pack", help="audio-to-lips + renderer -> one model directory")
  pk.add_argument("--lips", required=True, help="audio_to_lips workdir or model dir")
  pk.add_argument("--renderer", required=True, help="lip_renderer workdir or model dir")
  pk.add_argument("--out", required=True, help="the two-stage model directory to write")
  pk.add_argument("--note", default="", help="a note kept in the manifest (e.g. licence)")
  ft = sub.add_parser("finetune", help="fine-tune on a folder of one speaker's videos")
  ft.add_argument("--videos", required=True, help="folder of talking-face clips")
  ft.add_argument("--workdir", required=True, help="run folder (data, stages, model/)")
  ft.add_argument("--base", default="builtin", help="two-stage model to start from")
  ft.add_argument("--renderer-steps", type=int, default=FINETUNE_STEPS["renderer"])
  ft.add_argument("--lips-steps", type=int, default=FINETUNE_STEPS["lips"])
  ft.add_argument("--no-progress", action="store_true")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.command == "pack":
      out = pack(args.lips, args.renderer, args.out, args.note)
    else:
      out = finetune(args.videos, args.workdir, args.base, args.renderer_steps,
                     args.lips_steps, progress=not args.no_progress)
  except (ValueError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  print(f"wrote {out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
