"""Evaluate a generator or finished videos: LSE-D/LSE-C, PSNR, SSIM, LPIPS.

    python -m lipsync_jax.evaluate --checkpoint CKPT --data DATA_DIR --split test \\
        [--mode paired|unpaired] [--syncnet CKPT] --out REPORT_DIR
    python -m lipsync_jax.evaluate --videos DIR [--syncnet CKPT] --out REPORT_DIR

Dataset modes read the packed dataset (`lipsync_jax.data`): per clip the
longest run of frames with a face (at least --min-frames, default 25) and the
stored mel.
  * paired: each clip with its own audio. The generator sees, for frame i, the
    masked face crop of frame i and a reference crop (`--reference same`: the
    same frame, which is what `infer.py` does on a video; `shifted`: the frame
    half the run away, so the mouth cannot be copied) and mel window i. PSNR,
    SSIM and LPIPS compare the generated 96x96 crops (uint8, as written to a
    video) with the ground-truth crops; sync scores are reported for the
    generated crops (lse_*) and, for reference, for the ground truth (gt_lse_*).
  * unpaired: clip k's faces with the audio of clip (k + 1) mod n (a fixed,
    deterministic pairing, as in the Wav2Lip benchmark), over as many frames
    as both cover. Sync scores only.
`--videos DIR` scores finished videos (every *.mp4/*.mov/*.mkv/*.avi/*.mpg in
DIR) with their own audio, sync only: faces are found with
`face_detection` (same padding/smoothing as `infer.py`) and cropped. Beside
the scorer, every video is also measured by the energy judge
(`energy_judge`, no learned sync weights: the inner-lip opening's change
against the audio energy's change, best lag over +-8 frames, + = audio lags
video as `offset`), on the lips FaceMesh found for the scorer when the scorer
reads lips (the built-in one), so FaceMesh runs once; `--no-judge` turns it
off. `--reference-videos DIR` also measures the source clips in DIR (matched
by file stem) and reports how many clips keep their source's judge lag.

The scorer is `--syncnet` (any checkpoint form `checkpoint.load_model`
accepts, incl. an upstream `lipsync_expert.pth`, syncnet_python's
`syncnet_v2.model`, or a `lip_sync` landmark expert); without it, the expert
recorded in the generator checkpoint's metadata (`syncnet_checkpoint`), and
otherwise (always for `--videos`) the landmark sync expert shipped inside the
package (`metrics.load_builtin_scorer`: FaceMesh lip points + mel, trained on
real clips; its distances are on its own scale, not SyncNet's). Every report
names it.

Clips that cannot be scored are listed in the report with the reason. Errors
in the arguments or inputs print `error: ...` and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import pathlib
import sys
import time
from typing import Any, Callable, Sequence

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from lipsync_jax import cache
from lipsync_jax.evaluation import energy_judge
from lipsync_jax.evaluation import metrics
from lipsync_jax import models
from lipsync_jax.evaluation import report as report_lib
from lipsync_jax.vision.face_crops import (SCORING_FPS, VIDEO_EXTENSIONS, longest_run,
                                           video_face_crops)

MODES = ("paired", "unpaired")
FACE_SIZE = 96
GRID_FRACTIONS = (0.1, 0.37, 0.63, 0.9)
GRID_CLIPS = 4


class EvaluationError(ValueError):
  """Bad arguments or inputs for an evaluation; the message is one line."""


@dataclasses.dataclass
class ClipEval:
  """Scores of one clip."""
  name: str
  num_frames: int
  first_frame: int
  sync: metrics.SyncResult
  gt_sync: metrics.SyncResult | None = None
  recon: dict[str, float] = dataclasses.field(default_factory=dict)
  audio_from: str | None = None
  notes: list[str] = dataclasses.field(default_factory=list)
  judge: energy_judge.LagResult | None = None
  judge_error: str | None = None          # the judge ran and could not measure
  judge_reference_lag: int | None = None  # the source clip's judge lag (--reference-videos)

  def to_json(self) -> dict[str, Any]:
    d = {"name": self.name, "num_frames": self.num_frames,
         "first_frame": self.first_frame, **self.sync.to_json(), **self.recon}
    if self.gt_sync is not None:
      d.update(gt_lse_d=self.gt_sync.lse_d, gt_lse_c=self.gt_sync.lse_c,
               gt_offset=self.gt_sync.offset)
    if self.audio_from is not None:
      d["audio_from"] = self.audio_from
    if self.judge is not None:
      d.update(self.judge.to_json())
    elif self.judge_error is not None:
      d.update(judge_lag=None, judge_r=None, judge_error=self.judge_error)
    if self.judge_reference_lag is not None:
      d["judge_reference_lag"] = self.judge_reference_lag
    if self.notes:
      d["notes"] = self.notes
    return d





def _resize_all(frames: np.ndarray, size: int) -> np.ndarray:
  if frames.shape[1:3] == (size, size):
    return frames
  return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
                   for f in frames])


@functools.lru_cache(maxsize=None)
def _generate_fn(module: Any) -> Callable:
  """jit: (variables, mel (N,80,16,1), target, reference uint8) -> uint8 (N,96,96,3)."""

  def gen(v, mel, target, reference):
    target = target.astype(jnp.float32) / 255.0
    masked = target.at[:, FACE_SIZE // 2:].set(0.0)
    faces = jnp.concatenate([masked, reference.astype(jnp.float32) / 255.0], axis=-1)
    out = models.generate_frames(module, v, mel, faces)
    return jnp.clip(jnp.round(out * 255.0), 0, 255).astype(jnp.uint8)

  return jax.jit(gen)


class Generator:
  """Jitted generator on fixed-size batches: uint8 crops in, uint8 crops out."""

  def __init__(self, module: Any, variables: Any, batch_size: int = 32):
    unit = models.frames_per_call(module)  # au_tcn: windows of consecutive frames
    self.batch_size = -(-batch_size // unit) * unit
    self.module = module
    self.variables = jax.device_put(
        {k: v for k, v in variables.items() if k in ("params", "batch_stats")})

  def __call__(self, mel: np.ndarray, target: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """mel (N, 80, 16), target/reference (N, 96, 96, 3) uint8 -> (N, 96, 96, 3) uint8."""
    fn = functools.partial(_generate_fn(self.module), self.variables)
    return metrics.batched_apply(
        fn, [np.asarray(mel, np.float32)[..., None], target, reference], self.batch_size)


# -----------------------------------------------------------------------------
# Dataset evaluation.
# -----------------------------------------------------------------------------

def _grid_rows(name: str, rows: Sequence[tuple[str, np.ndarray]]) -> list[tuple[str, np.ndarray]]:
  """Lower-half crops at fixed fractions of the clip: [(label, (C, h, w, 3))]."""
  out = []
  for label, frames in rows:
    n = frames.shape[0]
    idx = [min(n - 1, int(f * n)) for f in GRID_FRACTIONS]
    crops = _resize_all(frames[idx], FACE_SIZE)[:, FACE_SIZE // 2:]
    out.append((f"{name}\n{label}", crops))
  return out


def evaluate_dataset(data_dir: str, split: str, mode: str, generator: Generator,
                     scorer: metrics.SyncScorer,
                     lpips_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None,
                     min_frames: int = 25, reference: str = "same",
                     max_clips: int | None = None,
                     progress: Callable[[str], None] | None = None,
                     sync_padding: str = "zeros",
                     landmarks: metrics.MouthLandmarks | None = None
                     ) -> tuple[list[ClipEval], list[dict], list]:
  """Scores a dataset split. Returns (clips, unscorable, grid rows)."""
  from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax import data as data_lib  # pylint: disable=import-outside-toplevel
  from lipsync_jax.data import format as fmt  # pylint: disable=import-outside-toplevel
  if mode not in MODES:
    raise EvaluationError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
  if isinstance(scorer, metrics.OriginalSyncNetScorer):
    raise EvaluationError("the original SyncNet scorer needs waveforms, and a dataset "
                          "stores only mel: score finished videos with --videos instead")
  index = data_lib.load_index(data_dir)
  clips = index.split(split)
  if max_clips is not None:
    clips = clips[:max_clips]
  if not clips:
    raise EvaluationError(f"split {split!r} of {data_dir} has no clips")
  reader = fmt.ClipReader(index.data_dir, index.codec, index.img_size)

  results: list[ClipEval] = []
  unscorable: list[dict] = []
  grid: list = []
  for k, clip in enumerate(clips):
    name = clip.clip_id
    if progress:
      progress(f"[{k + 1}/{len(clips)}] {name}")
    try:
      start, stop = longest_run(clip.found)
      if stop == start:
        raise metrics.MetricError("no face in any frame")
      where = (f" in its time span {clip.span[0]}..{clip.span[1] - 1}"
               if clip.span else "")
      if stop - start < min_frames:
        raise metrics.MetricError(
            f"too short: longest run of frames with a face{where} is {stop - start} "
            f"(< --min-frames {min_frames})")
      notes = []
      if abs(clip.fps - SCORING_FPS) > 1e-3:
        notes.append(f"clip is {clip.fps:.2f} fps; SyncNets are trained at {SCORING_FPS:g}")
      if stop - start < clip.num_frames:
        notes.append(f"scored frames {start}..{stop - 1} of {clip.num_frames} "
                     f"(longest run with a face{where})")
      mel = reader.full_mel(clip)
      audio_from = None
      if mode == "paired":
        n, first = stop - start, start
        mel_win = audio_lib.mel_windows(mel, stop, clip.fps)[start:stop]
        audio = metrics.ClipAudio(mel=mel)
      else:
        partner = clips[(k + 1) % len(clips)]
        audio_from = partner.clip_id
        if partner is clip:
          notes.append("only one clip in the split: scored with its own audio")
        pmel = reader.full_mel(partner)
        n_audio = int(pmel.shape[1] * clip.fps / audio_lib.MEL_STEPS_PER_SECOND)
        n, first = min(stop - start, n_audio), 0
        if n < min_frames:
          raise metrics.MetricError(f"too short: the paired audio ({audio_from}) covers "
                                    f"{n_audio} frames (< --min-frames {min_frames})")
        mel_win = audio_lib.mel_windows(pmel, n, clip.fps)
        audio = metrics.ClipAudio(mel=pmel)
      frames = _resize_all(reader.frames(clip, start, n), FACE_SIZE)
      ref = frames if reference == "same" else np.roll(frames, n // 2, axis=0)
      generated = generator(mel_win, frames, ref)
      s = scorer.face_size
      sync = metrics.sync_scores(scorer, _resize_all(generated, s), audio, clip.fps,
                                 first_frame=first, padding=sync_padding)
      ce = ClipEval(name, n, start, sync, audio_from=audio_from, notes=notes)
      if mode == "paired":
        ce.gt_sync = metrics.sync_scores(scorer, _resize_all(frames, s), audio, clip.fps,
                                         first_frame=first, padding=sync_padding)
        ce.recon = metrics.reconstruction_metrics(generated, frames, lpips_fn,
                                                  generator.batch_size)
        if landmarks is not None:
          ce.recon["lmd"] = metrics.landmark_distance(landmarks, generated, frames)
        rows = [("ground truth", frames), ("generated", generated)]
      else:
        rows = [("input", frames), ("generated", generated)]
      if len(grid) < 2 * GRID_CLIPS:
        grid.extend(_grid_rows(name, rows))
      results.append(ce)
    except (metrics.MetricError, fmt.DatasetFormatError, audio_lib.AudioError) as e:
      unscorable.append({"name": name, "reason": str(e).splitlines()[0]})
  return results, unscorable, grid


# -----------------------------------------------------------------------------
# Finished videos.
# -----------------------------------------------------------------------------

def list_videos(videos_dir: str, option: str = "--videos") -> list[pathlib.Path]:
  d = pathlib.Path(videos_dir)
  if not d.is_dir():
    raise EvaluationError(f"{option}: not a directory: {videos_dir}")
  files = sorted(p for p in d.iterdir()
                 if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
  if not files:
    raise EvaluationError(f"{option}: no video files ({', '.join(VIDEO_EXTENSIONS)}) "
                          f"in {videos_dir}")
  return files


LipsFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def _judge(lips_fn: LipsFn, crops: np.ndarray, wav: np.ndarray, first: int, fps: float,
           lips: tuple[np.ndarray, np.ndarray] | None = None
           ) -> tuple[energy_judge.LagResult | None, str | None]:
  """(the energy judge's result, None), or (None, the one-line reason it
  could not measure); `lips`: `lips_fn(crops)` when already measured."""
  try:
    return energy_judge.lip_energy_lag(*(lips or lips_fn(crops)), wav, first, fps), None
  except (energy_judge.JudgeError, metrics.MetricError) as e:
    return None, f"energy judge: {str(e).splitlines()[0]}"


def _judge_video(path: pathlib.Path, face_size: int, detector: Any, lips_fn: LipsFn,
                 min_frames: int) -> tuple[energy_judge.LagResult | None, str | None]:
  """`_judge` on a video of its own (a --reference-videos source clip),
  cropped as the scored videos are."""
  from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
  try:
    crops, first, fps, _ = video_face_crops(str(path), face_size, detector,
                                            min_frames=min_frames)
    wav = audio_lib.load_audio(path)
  except ValueError as e:  # FaceCropError, VideoError, AudioError
    return None, f"energy judge: {str(e).splitlines()[0]}"
  return _judge(lips_fn, crops, wav, first, fps)


def evaluate_videos(videos_dir: str, scorer: metrics.SyncScorer, detector: Any,
                    min_frames: int = 25,
                    progress: Callable[[str], None] | None = None,
                    sync_padding: str = "zeros", judge: bool = True,
                    reference_dir: str | None = None
                    ) -> tuple[list[ClipEval], list[dict], list]:
  """Scores every video in a folder with its own audio (sync only).

  judge: also the energy judge (`energy_judge.lip_energy_lag`) on the lips
  of the scored crops (the scorer's own FaceMesh lips when it reads lips).
  reference_dir: the source clips; each scored video's judge lag is compared
  with that of the file of the same stem there.
  """
  from lipsync_jax.io import audio as audio_lib  # pylint: disable=import-outside-toplevel
  files = list_videos(videos_dir)
  references = ({p.stem: p for p in list_videos(reference_dir, "--reference-videos")}
                if judge and reference_dir else {})
  reads_lips = isinstance(scorer, metrics.LipSyncScorer)
  lips_fn = scorer.lips if reads_lips else metrics.FaceMeshLips()
  results, unscorable, grid = [], [], []
  for k, path in enumerate(files):
    if progress:
      progress(f"[{k + 1}/{len(files)}] {path.name}")
    try:
      crops, first, fps, notes = video_face_crops(str(path), scorer.face_size, detector,
                                                  min_frames=min_frames)
      wav = audio_lib.load_audio(path)
      # The built-in scorer's FaceMesh lips serve the judge too.
      lips = scorer.lips(crops) if judge and reads_lips else None
      sync = metrics.sync_scores(scorer, crops, metrics.ClipAudio(wav=wav), fps,
                                 first_frame=first, padding=sync_padding,
                                 video_windows=None if lips is None else
                                 scorer.lip_video_windows(*lips))
      ce = ClipEval(path.name, crops.shape[0], first, sync, notes=notes)
      if judge:
        ce.judge, ce.judge_error = _judge(lips_fn, crops, wav, first, fps, lips)
        if ce.judge_error:
          ce.notes.append(ce.judge_error)
      if judge and reference_dir:
        ref = references.get(path.stem)
        if ref is None:
          ce.notes.append(f"energy judge: no reference clip {path.stem}.* in {reference_dir}")
        else:
          res, err = _judge_video(ref, scorer.face_size, detector, lips_fn, min_frames)
          if res is not None:
            ce.judge_reference_lag = res.best_lag
          else:
            ce.notes.append(f"reference {ref.name}: {err}")
      results.append(ce)
      if len(grid) < GRID_CLIPS:
        grid.extend(_grid_rows(path.name, [("video", crops)]))
    except ValueError as e:  # MetricError, VideoError, AudioError, ...
      unscorable.append({"name": path.name, "reason": str(e).splitlines()[0]})
  return results, unscorable, grid


# -----------------------------------------------------------------------------
# Report.
# -----------------------------------------------------------------------------

def build_report(results: Sequence[ClipEval], unscorable: Sequence[dict], scorer: str,
                 mode: str, meta: dict[str, Any], metric_names: Sequence[str]) -> dict:
  clips = [r.to_json() for r in results]
  aggregate = {m: metrics.mean_ci95([c.get(m) for c in clips]) for m in metric_names}
  offsets = [c["offset"] for c in clips]
  aggregate["offset_hist"] = {str(o): offsets.count(o) for o in sorted(set(offsets))}
  definitions = {
      "lse_d": "min over offsets of the mean embedding distance (lower is better)",
      "lse_c": "median minus min of the mean distances (higher is better)",
      "offset": "best offset in frames; + = audio lags the video "
                "(syncnet_python prints the opposite sign)",
      "psnr/ssim/lpips": "per-frame on 96x96 face crops, averaged per clip",
      "ci95": "Student-t 95% confidence interval of the mean over clips"}
  judged = [c for c in clips if "judge_lag" in c]
  if judged:
    lags = [c["judge_lag"] for c in judged]
    aggregate["judge_lag_within1"] = energy_judge.share_within(lags, 0)
    aggregate["judge_short_clips"] = {
        "n": sum(c["judge_lag"] is not None
                 and c["num_frames"] < energy_judge.SHORT_CLIP_FRAMES for c in judged),
        "of": sum(c["judge_lag"] is not None for c in judged),
        "frames": energy_judge.SHORT_CLIP_FRAMES}
    if any("judge_reference_lag" in c for c in judged):
      aggregate["judge_lag_within1_of_reference"] = energy_judge.share_within(
          lags, [c.get("judge_reference_lag") for c in judged])
    definitions.update(energy_judge.DEFINITIONS)
  return {"scorer": scorer, "mode": mode, "meta": dict(meta), "metrics": list(metric_names),
          "aggregate": aggregate, "clips": clips, "unscorable": list(unscorable),
          "definitions": definitions}


def make_grid(rows: list, title: str) -> dict | None:
  if not rows:
    return None
  cols = [f"{int(f * 100)}%" for f in GRID_FRACTIONS]
  return {"row_labels": [r[0] for r in rows], "col_labels": cols,
          "images": np.stack([r[1] for r in rows]), "title": title}


# -----------------------------------------------------------------------------
# CLI.
# -----------------------------------------------------------------------------

def _find_recorded_expert(meta: dict[str, Any]) -> str | None:
  """The `syncnet_checkpoint` a trainer recorded in a generator's metadata."""
  stack = [meta]
  while stack:
    d = stack.pop()
    for k, v in d.items():
      if k == "syncnet_checkpoint" and isinstance(v, str) and v and v != "random":
        return v
      if isinstance(v, dict):
        stack.append(v)
  return None


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(
      prog="python -m lipsync_jax.evaluate",
      description="LSE-D/LSE-C, PSNR, SSIM and LPIPS for a generator on a dataset split, "
                  "or LSE for finished videos; writes JSON, Markdown and PNG plots.")
  p.add_argument("--checkpoint", help="generator: model dir, training workdir or .pth")
  p.add_argument("--data", help="packed dataset directory")
  p.add_argument("--split", default="test", help="train, val, test or all (default test)")
  p.add_argument("--mode", choices=MODES, default="paired")
  p.add_argument("--videos", help="score the finished videos in this folder instead")
  p.add_argument("--syncnet", help="SyncNet scorer checkpoint (syncnet_color in any form "
                 "load_model accepts, syncnet_python's syncnet_v2.model, or a lip_sync "
                 "model); default: the expert recorded in the generator checkpoint, else "
                 "'builtin', the landmark sync expert shipped with lipsync-jax")
  p.add_argument("--out", required=True, help="report directory")
  p.add_argument("--reference", choices=("same", "shifted"), default="same",
                 help="generator reference frame in paired mode (default: same, as infer.py)")
  p.add_argument("--sync-padding", choices=metrics.PADDINGS, default=None,
                 help="windows shifted off the clip meet zero vectors (zeros, as "
                 "syncnet_python) or are left out of the average (exclude); default: "
                 "exclude for the landmark expert, whose unit embeddings sit at distance "
                 "1 from a zero vector, else zeros")
  p.add_argument("--min-frames", type=int, default=25,
                 help="clips with fewer consecutive face frames are not scored")
  p.add_argument("--max-clips", type=int, default=None)
  p.add_argument("--lpips-net", choices=("alexnet", "vgg16"), default="alexnet")
  p.add_argument("--no-lpips", action="store_true")
  p.add_argument("--lmd", action="store_true",
                 help="paired mode: also the mouth landmark distance (MediaPipe FaceMesh)")
  p.add_argument("--batch-size", type=int, default=32)
  p.add_argument("--detector", default="default", help="face detector for --videos")
  p.add_argument("--no-judge", action="store_true",
                 help="--videos: leave out the energy judge (lip opening vs audio energy, "
                 "no learned weights) that is reported beside the scorer")
  p.add_argument("--reference-videos", metavar="DIR",
                 help="--videos: the source clips (same file stems); reports the share of "
                 "videos whose judge lag is within 1 frame of their source clip's")
  p.add_argument("--quiet", action="store_true")
  cache.add_no_cache_argument(p)
  return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  return build_parser().parse_args(argv)


def run(args: argparse.Namespace) -> dict:
  """Runs an evaluation from parsed arguments; returns the report dict."""
  from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
  from lipsync_jax.models import ALL_GENERATORS  # pylint: disable=import-outside-toplevel
  log = (lambda s: None) if args.quiet else (lambda s: print(s, file=sys.stderr))
  if args.min_frames < metrics.WINDOW_FRAMES:
    raise EvaluationError(f"--min-frames must be >= {metrics.WINDOW_FRAMES}")
  if args.batch_size < 1:
    raise EvaluationError("--batch-size must be >= 1")
  t0 = time.time()
  if args.videos:
    if args.checkpoint or args.data:
      raise EvaluationError("--videos scores finished videos: do not pass --checkpoint/--data")
    if args.reference_videos:
      if args.no_judge:
        raise EvaluationError("--reference-videos compares judge lags: drop --no-judge")
      list_videos(args.reference_videos, "--reference-videos")  # fail fast on a bad folder
    # Without --syncnet, the landmark sync expert shipped in the package.
    scorer = metrics.load_scorer(args.syncnet or metrics.BUILTIN_SCORER, args.batch_size)
    args.sync_padding = args.sync_padding or metrics.default_padding(scorer)
    from lipsync_jax.vision import face_detection  # pylint: disable=import-outside-toplevel
    detector = face_detection.create_detector(args.detector)
    results, unscorable, rows = evaluate_videos(args.videos, scorer, detector,
                                                args.min_frames, log, args.sync_padding,
                                                not args.no_judge, args.reference_videos)
    mode = "videos"
    meta = {"videos": os.path.abspath(args.videos), "detector": getattr(detector, "name", "?")}
    if not args.no_judge:
      meta["judge"] = energy_judge.DESCRIPTION
    if args.reference_videos:
      meta["reference_videos"] = os.path.abspath(args.reference_videos)
    names = ["lse_d", "lse_c"]
    grid_title = "mouth crops of the scored videos"
  else:
    if not args.checkpoint or not args.data:
      raise EvaluationError("need --checkpoint and --data (or --videos DIR)")
    if args.reference_videos:
      raise EvaluationError("--reference-videos goes with --videos")
    from lipsync_jax import data as data_lib  # pylint: disable=import-outside-toplevel
    data_lib.load_index(args.data).split(args.split)  # fail fast on a bad dataset/split
    gen = checkpoint.load_model(args.checkpoint, expected_arch=ALL_GENERATORS)
    # --syncnet, else the expert the generator was trained against, else the
    # built-in landmark expert.
    syncnet = args.syncnet or _find_recorded_expert(gen.meta) or metrics.BUILTIN_SCORER
    scorer = metrics.load_scorer(syncnet, args.batch_size)
    args.sync_padding = args.sync_padding or metrics.default_padding(scorer)
    lpips_fn = None
    if args.mode == "paired" and not args.no_lpips:
      lpips_fn = metrics.LPIPSMetric(args.lpips_net, args.batch_size)
    landmarks = metrics.MouthLandmarks() if args.lmd and args.mode == "paired" else None
    generator = Generator(gen.module, gen.variables, args.batch_size)
    results, unscorable, rows = evaluate_dataset(
        args.data, args.split, args.mode, generator, scorer, lpips_fn,
        args.min_frames, args.reference, args.max_clips, log, args.sync_padding, landmarks)
    mode = args.mode
    meta = {"checkpoint": os.path.abspath(args.checkpoint), "arch": gen.arch,
            "data": os.path.abspath(args.data), "split": args.split,
            "reference": args.reference}
    if args.mode == "paired":
      names = ["lse_d", "lse_c", "psnr", "ssim"]
      if lpips_fn is not None:
        names.append("lpips")
        meta["lpips"] = args.lpips_net
      if landmarks is not None:
        names.append("lmd")
      names += ["gt_lse_d", "gt_lse_c"]
      grid_title = "mouth crops: ground truth / generated"
    else:
      names = ["lse_d", "lse_c"]
      grid_title = "mouth crops: input / generated (another clip's audio)"
  meta["sync_padding"] = args.sync_padding
  meta["vshift"] = metrics.VSHIFT
  meta["seconds"] = round(time.time() - t0, 1)
  if "lmd" in names:
    meta["lmd"] = "MediaPipe FaceMesh lip points, 96x96 crop pixels"
  rep = build_report(results, unscorable, scorer.name, mode, meta, names)
  paths = report_lib.write_report(args.out, rep, make_grid(rows, grid_title),
                                  vshift=metrics.VSHIFT)
  log(f"scored {len(results)} clip(s), {len(unscorable)} not scorable; "
      f"scorer {scorer.name}; wrote {', '.join(p.name for p in paths)} to {args.out}")
  return rep


def main(argv: Sequence[str] | None = None) -> int:
  args = parse_args(argv)
  if not args.no_cache:
    cache.enable_compilation_cache()
  try:
    run(args)
  except (ValueError, FileNotFoundError, ImportError) as e:
    print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
