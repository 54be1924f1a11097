"""The two-stage model's command line: pack, fine-tune and calibrate.

The model directory itself (`load`, `pack`, the manifest and its lip gain)
is `lipsync_jax.two_stage_model`, re-exported here.

    python -m lipsync_jax.two_stage pack --lips runs/lips --renderer runs/renderer \
        --out models/two_stage

packs two training workdirs (or model dirs) into one;

    python -m lipsync_jax.two_stage calibrate --model models/two_stage --data DATA --write

measures the lip gain (`calibrate`) on the val and test clips of a prepared
dataset and writes it into the manifest (with `--lip-smoothing`, the gain
for `infer.py --lip-smoothing`: the manifest keeps one per mode); and

    python -m lipsync_jax.two_stage finetune --videos my_speaker/ --workdir runs/me

fine-tunes the shipped model on a few minutes of one speaker in one command:
data_prep (face crops, mel, splits cut in time when there are few clips),
lip tracks, both stages from the built-in weights (`init_from`), packing
into WORKDIR/model and calibrating its lip gains. Each stage is skipped when
its output is complete, so a rerun resumes. `infer.py --checkpoint DIR`
runs a two-stage model (`inference.two_stage.TwoStageSyncer`); with no
`--checkpoint`, `infer.py` runs the one shipped in
`lipsync_jax/assets/two_stage` (`--checkpoint builtin`).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from typing import Any, Sequence

import numpy as np

# The model directory itself (re-exported: `two_stage.load`, `two_stage.pack`, ...).
from lipsync_jax.two_stage_model import (FORMAT, MANIFEST, MAX_GAIN, TwoStageError,  # pylint: disable=unused-import
                                         TwoStageModel, builtin_path, crossing_gain,
                                         is_two_stage, load, pack, set_lip_gain)

GAIN_GRID = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0)


def _calibration_segments(data: pathlib.Path, max_clips: int, max_frames: int) -> list:
  """(clip, start, n, lips, valid) pieces of the val and test clips of a
  dataset: runs of frames with a face, cut into pieces of at most
  `max_frames` (at least 25), kept when FaceMesh saw lips on 90% of them."""
  from lipsync_jax.data import format as fmt, lip_store  # pylint: disable=import-outside-toplevel
  index = fmt.load_index(data)
  clips = []
  for split in ("val", "test"):
    try:
      clips += index.split(split)
    except fmt.DatasetFormatError:
      pass
  out = []
  for clip in clips:
    found = np.concatenate([np.asarray(clip.found, bool), [False]])
    edges = np.flatnonzero(np.diff(np.concatenate([[False], found]).astype(np.int8)))
    lips, valid = lip_store.load_clip_lips(data, clip)
    for a, b in zip(edges[::2], edges[1::2]):
      for s in range(a, b, max_frames):
        n = min(max_frames, b - s)
        if n >= 25 and valid[s:s + n].mean() >= 0.9:
          out.append((clip, s, n, lips[s:s + n], valid[s:s + n]))
        if len(out) == max_clips:
          return out
  return out


def calibrate(path: str | os.PathLike, data: str | os.PathLike, max_clips: int = 40,
              max_frames: int = 100, gains: Sequence[float] = GAIN_GRID,
              progress: bool = True, reference: str = "rest",
              lip_smoothing: bool = False) -> dict[str, Any]:
  """Measures the lip gain at which rendered mouths move as much as real ones.

  Stage 1 regresses to the mean of many speakers, so its lip motion is damped,
  and the renderer damps it again. On the val and test clips of `data` (a
  `data_prep` dataset with lip tracks), each face clip A is driven by the
  audio of another clip B, as in use: stage 1 -> motion x gain -> renderer
  (A's own crops, masked, and its reference as inference gives it, see
  `InferenceOptions.reference`) -> FaceMesh on the rendered crops. The
  ratio is the standard deviation of the output's inner-lip opening over
  that of A's own FaceMesh track. The gain returned
  is where the median ratio over the clips crosses 1 (linear interpolation
  over `gains`; their end when it never does). With `lip_smoothing` stage
  1's lips are smoothed as `infer.py --lip-smoothing` draws them; the
  manifest keeps a gain for each mode (`set_lip_gain`).

  Returns {"lip_gain", "ratios" {gain: median ratio}, "stage1_ratio" (stage
  1's own opening amplitude over the natural one, no renderer), "clips",
  "reference", "lip_smoothing" (False: `infer.py`'s default, the lips
  unsmoothed; smoothing them takes about 15% off their amplitude), "data"}.
  Raises TwoStageError when `data` has fewer than 4 usable clips.
  """
  from lipsync_jax.data import format as fmt  # pylint: disable=import-outside-toplevel
  from lipsync_jax.inference import two_stage as ts  # pylint: disable=import-outside-toplevel
  from lipsync_jax.models import audio_to_lips  # pylint: disable=import-outside-toplevel
  from lipsync_jax.vision import lip_landmarks  # pylint: disable=import-outside-toplevel
  import tqdm  # pylint: disable=import-outside-toplevel
  data = pathlib.Path(data)
  if not (data / "index.json").is_file():
    raise TwoStageError(f"{data} is not a data_prep dataset (no index.json)")
  segments = _calibration_segments(data, max_clips, max_frames)
  if len(segments) < 4:
    raise TwoStageError(f"{data}: {len(segments)} usable val/test clips with lip tracks "
                        "(need 4; run data_prep/lip_tracks.py)")
  gains = sorted(float(g) for g in gains)
  syncer = ts.TwoStageSyncer(load(path), lip_gain=1.0, reference=reference,
                             lip_smoothing=lip_smoothing)
  index = fmt.load_index(data)
  reader = fmt.ClipReader(index.data_dir, index.codec, index.img_size)
  gap = lip_landmarks.inner_gap
  ratios = {g: [] for g in gains}
  stage1 = []
  for i, (clip, s, n, lips, valid) in enumerate(
      tqdm.tqdm(segments, desc="calibrating the lip gain", unit="clip", disable=not progress)):
    other, s_b, n_b, _, _ = segments[(i + len(segments) // 2) % len(segments)]
    n = min(n, n_b)
    natural = float(np.std(gap(lips[:n])[valid[:n]]))
    if natural <= 0:
      continue
    neutral = audio_to_lips.neutral_lips(lips[:n], valid[:n])
    moved = syncer.lips_for(reader.full_mel(other), neutral, other.fps, first_frame=s_b) - neutral
    stage1.append(float(np.std(gap(neutral + moved))) / natural)
    crops = reader.frames(clip, s, n)
    key, slots = syncer.references(list(crops), lips[:n], valid[:n])
    for g in gains:
      rows = ts.renderer_rows(neutral + g * moved, key, slots)
      out = np.concatenate([syncer.generate_faces(rows[k:k + syncer.batch_size],
                                                  list(crops[k:k + syncer.batch_size]))
                            for k in range(0, n, syncer.batch_size)])
      pts, presence = lip_landmarks.crop_lips(syncer.face_mesh, out)
      ok = presence >= lip_landmarks.MIN_PRESENCE
      if ok.sum() >= 2:
        ratios[g].append(float(np.std(gap(pts)[ok])) / natural)
  med = {g: float(np.median(r)) for g, r in ratios.items() if r}
  if not med:
    raise TwoStageError(f"FaceMesh finds no lips on the faces {path} renders from {data}")
  return {"lip_gain": round(crossing_gain(med), 2), "ratios": {str(g): round(r, 3) for g, r in med.items()},
          "stage1_ratio": round(float(np.median(stage1)), 3), "clips": len(stage1),
          "reference": reference, "lip_smoothing": syncer.options.lip_smoothing,
          "data": str(data)}


# On GRID s1 (720 sentences) the renderer at 1,200 steps reached 34.3 dB face
# PSNR on unseen sentences against 32.1 at 600, and followed foreign speech
# better (docs/grid.md): 22 min on a 2-core CPU.
FINETUNE_STEPS = {"renderer": 1200, "lips": 800}
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
  out = pack(work / "lips", work / "renderer", work / "model",
             note=f"fine-tuned from {base} on {videos}",
             lip_gain=manifest.get("lip_gain_calibration") or (
                 {"lip_gain": manifest["lip_gain"]} if "lip_gain" in manifest else None))
  if "lip_gain_smoothed" in manifest:   # the base's, until measured below
    set_lip_gain(out, dict(manifest.get("lip_gain_smoothed_calibration") or {},
                           lip_gain=manifest["lip_gain_smoothed"], lip_smoothing=True))
  # The speaker's own stage 1 damps less: measure its gains on its own
  # clips, for the lips as drawn and smoothed (`--lip-smoothing`).
  try:
    for smoothing in (False, True):
      set_lip_gain(out, calibrate(out, data, progress=progress, lip_smoothing=smoothing))
  except TwoStageError as e:
    print(f"note: lip gain kept from {base} ({e})", file=sys.stderr)
  return out


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
  cb = sub.add_parser("calibrate", help="measure (and --write) the model's lip gain")
  cb.add_argument("--model", required=True, help="two-stage model directory (or builtin)")
  cb.add_argument("--data", required=True,
                  help="data_prep dataset with lip tracks (its val and test clips are used)")
  cb.add_argument("--clips", type=int, default=40, help="clips to measure on")
  cb.add_argument("--lip-smoothing", action="store_true",
                  help="measure the gain for stage 1's lips smoothed (infer.py's "
                       "--lip-smoothing); the manifest keeps one gain per mode")
  cb.add_argument("--write", action="store_true", help="write the gain into the manifest")
  cb.add_argument("--no-progress", action="store_true")
  return p


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.command == "pack":
      out = pack(args.lips, args.renderer, args.out, args.note)
    elif args.command == "calibrate":
      if args.clips < 4:
        raise TwoStageError(f"--clips must be >= 4, got {args.clips}")
      result = calibrate(args.model, args.data, args.clips, progress=not args.no_progress,
                         lip_smoothing=args.lip_smoothing)
      print(json.dumps(result, indent=1))
      if not args.write:
        return 0
      out = set_lip_gain(builtin_path() if args.model == "builtin" else args.model, result)
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
