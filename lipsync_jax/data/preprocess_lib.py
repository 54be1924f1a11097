"""Raw talking-face videos -> a packed dataset (data_prep/preprocess.py).

Per clip (``process_clip``, in a worker process with its own detector):

1. probe: unreadable/corrupt file, no video or no audio stream -> failed.
2. frames at 25 fps (``video.iter_frames(fps=25)``: any rate, VFR included,
   is resampled by timestamp); audio at 16 kHz mono -> mel.
3. audio/video length: trimmed to the shorter when they differ by at most
   ``max_av_diff`` seconds (noted), failed beyond that.
4. too short (< ``min_frames`` frames) -> failed. Word timings, where the
   video sits in a GRID layout (``data/grid.py``), go into its index entry;
   a missing or mismatched `.align` file is noted and the clip goes on.
5. faces: batched detection, one track (largest and temporally consistent,
   noted when several faces are seen), smoothing, padding, crop + resize.
   Frames without a face are recorded (found=False, empty record); no face,
   a face in < ``min_face_fraction`` of the frames, or no 5-frame window with
   a face in every frame -> failed.
6. the clip is written to ``DATA_DIR/work/parts/<key>.array_record`` and its
   status to ``DATA_DIR/work/status/<key>.json`` (both atomically, status
   last). A rerun skips clips with a status file (resume).

``pack`` then moves finished parts into ``DATA_DIR/shards/`` (atomic shard
files, then ``index.json``, then deletes the parts), writes the split lists
and ``report.json`` (one entry per input file: ok/failed, reason, notes).
When hashing leaves a split empty (too few clips), val and test are carved
in time from the ends of the longest clips instead
(``format.assign_splits_or_carve``); ``index.json`` and ``report.json``
record how under "split".
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import os
import pathlib
import sys
import time
from typing import Any, Iterable, Sequence

import numpy as np

from lipsync_jax.data import format as fmt
from lipsync_jax.data import grid
from lipsync_jax.data import sources

FPS = 25.0
VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".avi", ".mpg", ".mpeg", ".webm",
                    ".flv", ".m4v", ".wmv", ".ts", ".mts", ".3gp", ".ogv")
WORK_DIR = "work"
REPORT_NAME = "report.json"


@dataclasses.dataclass
class PrepConfig:
  """Preprocessing options (the CLI flags)."""

  img_size: int = 96
  pads: tuple[int, int, int, int] = (0, 10, 0, 0)  # top, bottom, left, right
  detector: str = "default"
  codec: str = "jpeg"
  jpeg_quality: int = 95
  smooth_window: int = 5
  detect_batch: int = 32
  min_frames: int = 15            # upstream skips clips with <= 15 frames
  min_face_fraction: float = 0.5
  max_av_diff: float = 1.0        # seconds; trimmed below, failed above
  split_by: str = "clip"
  split_ratios: tuple[float, float, float] = (0.9, 0.05, 0.05)
  clips_per_shard: int = 256


def find_videos(root: str | os.PathLike[str]) -> list[pathlib.Path]:
  """Every file under root with a video extension, sorted."""
  root = pathlib.Path(root)
  return sorted(p for p in root.rglob("*")
                if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def clip_id_for(path: pathlib.Path, root: pathlib.Path) -> str:
  """Relative path without extension, '/'-joined (e.g. 'grid/bbaf2n')."""
  rel = path.relative_to(root)
  return "/".join(rel.with_suffix("").parts)


def speaker_for(clip_id: str) -> str:
  """The parent folder (LRS/VoxCeleb-style 'speaker/clip'), else the clip."""
  return clip_id.rsplit("/", 1)[0] if "/" in clip_id else clip_id


def _key(clip_id: str) -> str:
  safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in clip_id)[-60:]
  return f"{safe}-{hashlib.sha1(clip_id.encode()).hexdigest()[:10]}"


class ClipFailure(Exception):
  """A clip cannot be used; the message is the report's reason."""


def _write_json_atomic(path: pathlib.Path, data: Any) -> None:
  fmt.atomic_write_text(path, json.dumps(data, indent=1))


# ----------------------------------------------------------------------------
# One clip.


def box_jitter(boxes: np.ndarray, found: np.ndarray) -> float:
  """Mean frame-to-frame box-centre motion over mean box size (side length).

  Only pairs of consecutive frames that both have a detection count.
  """
  boxes = np.asarray(boxes, np.float64)
  pair = found[1:] & found[:-1]
  if not pair.any():
    return 0.0
  ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
  motion = np.linalg.norm(np.diff(ctr, axis=0), axis=1)[pair]
  side = ((boxes[:, 2] - boxes[:, 0]) + (boxes[:, 3] - boxes[:, 1]))[found] / 2
  return float(motion.mean() / max(side.mean(), 1e-9))


def _detect_all(path: pathlib.Path, cfg: PrepConfig, detector: Any
                ) -> tuple[int, list[list[Any]], tuple[int, int]]:
  """Pass 1: streams frames at 25 fps through the detector."""
  from lipsync_jax.io import video  # pylint: disable=g-import-not-at-top
  per_frame: list[list[Any]] = []
  batch: list[np.ndarray] = []
  shape = (0, 0)
  for img in video.iter_frames(path, fps=FPS):
    shape = img.shape[:2]
    batch.append(img)
    if len(batch) == cfg.detect_batch:
      per_frame.extend(detector.detect(batch))
      batch = []
  if batch:
    per_frame.extend(detector.detect(batch))
  return len(per_frame), per_frame, shape


def process_clip(path: pathlib.Path, root: pathlib.Path, out_dir: pathlib.Path,
                 cfg: PrepConfig, detector: Any) -> dict[str, Any]:
  """Processes one video; never raises. Returns its status entry."""
  clip_id = clip_id_for(path, root)
  t0 = time.time()
  entry: dict[str, Any] = {"clip_id": clip_id, "source": str(path),
                           "status": "failed", "reason": "", "notes": [],
                           "frames": 0, "face_frames": 0}
  try:
    entry.update(_process(path, clip_id, out_dir, cfg, detector,
                          entry["notes"]))
    entry["status"] = "ok"
  except ClipFailure as e:
    entry["reason"] = str(e)
  except Exception as e:  # pylint: disable=broad-except
    entry["reason"] = f"internal error: {type(e).__name__}: {e}".splitlines()[0]
    logging.exception("clip %s", clip_id)
  entry["seconds"] = round(time.time() - t0, 3)
  work = out_dir / WORK_DIR
  _write_json_atomic(work / "status" / f"{_key(clip_id)}.json", entry)
  return entry


def _process(path: pathlib.Path, clip_id: str, out_dir: pathlib.Path,
             cfg: PrepConfig, detector: Any,
             notes: list[str]) -> dict[str, Any]:
  from lipsync_jax.io import audio  # pylint: disable=g-import-not-at-top
  from lipsync_jax.vision import face_detection as fd  # pylint: disable=g-import-not-at-top
  from lipsync_jax.io import video  # pylint: disable=g-import-not-at-top

  try:
    info = video.probe(path)
  except video.VideoError as e:
    raise ClipFailure(f"corrupt or unreadable file: {e}") from None
  if not info.has_video:
    raise ClipFailure("no video stream")
  if not info.has_audio:
    raise ClipFailure("no audio stream")
  if info.height > info.width:
    notes.append(f"vertical video {info.width}x{info.height}: letterboxed for "
                 "detection")
  if info.is_vfr:
    notes.append(f"variable frame rate (avg {info.fps:.2f} fps): resampled to "
                 f"{FPS:g} fps by timestamp")
  elif abs(info.fps - FPS) > 0.01:
    notes.append(f"resampled from {info.fps:.2f} to {FPS:g} fps")

  try:
    n, per_frame, shape = _detect_all(path, cfg, detector)
  except video.VideoError as e:
    raise ClipFailure(f"corrupt video: {e}") from None
  if n == 0:
    raise ClipFailure("no decodable video frames")
  try:
    wav = audio.load_audio(path)
  except audio.AudioError as e:
    raise ClipFailure(f"audio unusable: {e}") from None
  v_sec, a_sec = n / FPS, len(wav) / audio.SAMPLE_RATE
  if abs(v_sec - a_sec) > cfg.max_av_diff:
    raise ClipFailure(f"audio ({a_sec:.2f} s) and video ({v_sec:.2f} s) "
                      f"lengths differ by more than {cfg.max_av_diff:g} s")
  if a_sec < v_sec - 1.0 / FPS:
    keep = int(a_sec * FPS)
    notes.append(f"audio {v_sec - a_sec:.2f} s shorter than video: trimmed "
                 f"video to {keep} frames")
    n, per_frame = keep, per_frame[:keep]
  elif a_sec > v_sec + 1.0 / FPS:
    notes.append(f"audio {a_sec - v_sec:.2f} s longer than video: trimmed "
                 "audio")
  wav = wav[:int(round(n / FPS * audio.SAMPLE_RATE))]
  if n < cfg.min_frames:
    raise ClipFailure(f"too short: {n} frame(s) at {FPS:g} fps, need >= "
                      f"{cfg.min_frames}")
  mel = audio.melspectrogram(wav)
  words, words_note = grid.clip_words(path, n, FPS)
  if words_note:
    notes.append(words_note)

  boxes, found, track_notes = fd.select_track(per_frame)
  notes.extend(track_notes)
  k = int(found.sum())
  if k == 0:
    raise ClipFailure("no face detected")
  if k < cfg.min_face_fraction * n:
    raise ClipFailure(f"face in too few frames: {k} of {n}")
  if k < n:
    notes.append(f"no face in {n - k} of {n} frames (recorded; no window "
                 "spans them)")
  jitter_raw = box_jitter(boxes, found)
  smoothed = fd.smooth_boxes(boxes, cfg.smooth_window)
  jitter = box_jitter(smoothed, found)
  boxes = fd.pad_and_clip(smoothed, cfg.pads, shape)
  meta = fmt.ClipMeta(
      clip_id=clip_id, speaker_id=speaker_for(clip_id), source=str(path),
      fps=FPS, num_frames=n, found=found, boxes=boxes.astype(np.float32),
      detector=getattr(detector, "name", "custom"), mel_cols=mel.shape[1],
      notes=list(notes), words=words)
  if not len(sources.clip_windows(meta).gen):
    raise ClipFailure("no 5-frame window with a face in every frame")

  def crops() -> Iterable[np.ndarray | None]:
    for t, img in enumerate(video.iter_frames(path, fps=FPS)):
      if t >= n:
        break
      yield fd.crop_faces(img, boxes[t], cfg.img_size) if found[t] else None

  part = out_dir / WORK_DIR / "parts" / f"{_key(clip_id)}.array_record"
  meta.file = str(part.relative_to(out_dir))
  with fmt.ShardWriter(part) as w:
    w.write_clip(meta, mel, crops(), cfg.codec, cfg.jpeg_quality)
  return {"frames": n, "face_frames": k, "part": meta.file,
          "jitter_raw": round(jitter_raw, 5), "jitter": round(jitter, 5),
          "notes": list(notes), "speaker_id": meta.speaker_id,
          "words": None if words is None else len(words)}


# ----------------------------------------------------------------------------
# Packing.


def _read_json(path: pathlib.Path) -> Any:
  return json.loads(path.read_text())


def pack(out_dir: pathlib.Path, cfg: PrepConfig,
         inputs: Sequence[str] | None = None) -> dict[str, Any]:
  """Moves finished parts into shards; writes index, splits and report."""
  from array_record.python import array_record_module as arm  # pylint: disable=g-import-not-at-top
  work = out_dir / WORK_DIR
  index_path = out_dir / fmt.INDEX_NAME
  clips: list[fmt.ClipMeta] = []
  if index_path.is_file():
    clips = fmt.load_index(out_dir).clips
  known = {c.clip_id for c in clips}
  # Shards written by a run killed before its index update are orphans.
  referenced = {c.file for c in clips}
  shard_dir = out_dir / fmt.SHARDS_DIR
  if shard_dir.is_dir():
    for p in shard_dir.iterdir():
      if str(p.relative_to(out_dir)) not in referenced:
        p.unlink()
  statuses = {}
  for p in sorted((work / "status").glob("*.json")):
    s = _read_json(p)
    statuses[s["clip_id"]] = s
  todo = [s for s in statuses.values()
          if s["status"] == "ok" and s["clip_id"] not in known
          and (out_dir / s["part"]).is_file()]
  todo.sort(key=lambda s: s["clip_id"])
  existing = len({c.file for c in clips})
  packed_parts = []
  for g in range(0, len(todo), cfg.clips_per_shard):
    group = todo[g:g + cfg.clips_per_shard]
    name = (f"{fmt.SHARDS_DIR}/shard-{existing + g // cfg.clips_per_shard:05d}"
            ".array_record")
    new = []
    with fmt.ShardWriter(out_dir / name) as w:
      for s in group:
        r = arm.ArrayRecordReader(str(out_dir / s["part"]))
        try:
          recs = r.read_all()
        finally:
          r.close()
        meta = fmt.ClipMeta.from_json(json.loads(recs[0]))
        meta.file, meta.offset = name, w.num_records
        for rec in recs:
          w.write(rec)
        new.append(meta)
    clips.extend(new)
    packed_parts.extend(out_dir / s["part"] for s in group)
  img_size = cfg.img_size
  codec = cfg.codec
  if index_path.is_file():
    old = fmt.load_index(out_dir)
    img_size, codec = old.img_size, old.codec
  splits, used, note = fmt.assign_splits_or_carve(clips, cfg.split_by,
                                                  cfg.split_ratios)
  split_info = {
      "by": cfg.split_by, "used": used,
      "ratios": [float(r) for r in cfg.split_ratios], "note": note,
      "frames": {s: fmt.split_frames(clips, splits[s]) for s in fmt.SPLITS},
      "entries": {s: len(splits[s]) for s in fmt.SPLITS},
  }
  fmt.write_index(out_dir, clips, img_size=img_size, codec=codec, fps=FPS,
                  extra={"split": split_info})
  for p in packed_parts:
    p.unlink()
  fmt.write_splits(out_dir, splits)
  # Report: every input of this run (and earlier ones) with its status.
  entries = []
  for cid in sorted(statuses):
    entries.append(statuses[cid])
  if inputs is not None:
    seen = {s["source"] for s in entries}
    for src in inputs:
      if src not in seen:
        entries.append({"clip_id": src, "source": src, "status": "missing",
                        "reason": "not processed (interrupted?)", "notes": []})
  report = {
      "num_inputs": len(entries),
      "num_ok": sum(e["status"] == "ok" for e in entries),
      "num_failed": sum(e["status"] != "ok" for e in entries),
      "num_clips_in_dataset": len(clips),
      # Clips with word timings (GRID .align files), and those in a GRID
      # layout whose timings are missing or do not fit (reason in notes).
      "num_with_words": sum(c.words is not None for c in clips),
      "num_words_unusable": sum(any(n.startswith(grid.NO_WORDS) for n in e["notes"])
                                for e in entries),
      "split": split_info,
      "config": dataclasses.asdict(cfg),
      "clips": entries,
  }
  _write_json_atomic(out_dir / REPORT_NAME, report)
  return report


def format_report(report: dict[str, Any], max_rows: int = 200) -> str:
  """A plain-text table of the report."""
  rows = [("clip", "status", "frames", "faces", "reason / notes")]
  for e in report["clips"][:max_rows]:
    text = e.get("reason") or "; ".join(e.get("notes", []))
    rows.append((e["clip_id"], e["status"], str(e.get("frames", "")),
                 str(e.get("face_frames", "")), text))
  widths = [min(40, max(len(r[i]) for r in rows)) for i in range(4)]
  lines = []
  for r in rows:
    cells = [r[i][:widths[i]].ljust(widths[i]) for i in range(4)]
    lines.append("  ".join(cells + [r[4]]))
  if len(report["clips"]) > max_rows:
    lines.append(f"... {len(report['clips']) - max_rows} more in report.json")
  lines.append(f"{report['num_ok']} ok, {report['num_failed']} failed, "
               f"{report['num_clips_in_dataset']} clips in the dataset")
  split = report.get("split")
  if split:
    how = ("carved in time" if split["used"] == "carved"
           else f"by {split['used']}")
    lines.append(f"splits ({how}): " + ", ".join(
        f"{s} {split['frames'][s]} frames from {split['entries'][s]} clip(s)"
        for s in fmt.SPLITS))
    if split["note"]:
      lines.append(f"note: {split['note']}")
  if report.get("num_with_words") or report.get("num_words_unusable"):
    lines.append(f"word timings: {report['num_with_words']} clip(s) with, "
                 f"{report['num_words_unusable']} without:")
    for e in report["clips"]:
      lines.extend(f"  {e['clip_id']}: {n[len(grid.NO_WORDS):]}"
                   for n in e.get("notes", []) if n.startswith(grid.NO_WORDS))
  return "\n".join(lines)


# ----------------------------------------------------------------------------
# Driver.

_WORKER: dict[str, Any] = {}


def _init_worker(cfg: PrepConfig) -> None:
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  logging.getLogger().setLevel(logging.WARNING)
  from lipsync_jax.vision import face_detection as fd  # pylint: disable=g-import-not-at-top
  _WORKER["detector"] = fd.create_detector(cfg.detector)
  _WORKER["cfg"] = cfg


def _work(args: tuple[str, str, str]) -> dict[str, Any]:
  path, root, out = args
  return process_clip(pathlib.Path(path), pathlib.Path(root),
                      pathlib.Path(out), _WORKER["cfg"], _WORKER["detector"])


def run(input_dir: str | os.PathLike[str], output_dir: str | os.PathLike[str],
        cfg: PrepConfig, workers: int = 1, retry_failed: bool = False,
        progress: bool = True) -> dict[str, Any]:
  """Processes every video under input_dir (resuming), then packs."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from lipsync_jax.vision import face_detection as fd  # pylint: disable=g-import-not-at-top
  root = pathlib.Path(input_dir).resolve()
  out = pathlib.Path(output_dir).resolve()
  if not root.is_dir():
    raise FileNotFoundError(f"input folder not found: {input_dir}")
  fd.create_detector(cfg.detector)  # fail early on a bad detector name
  if out.exists() and (out / fmt.INDEX_NAME).is_file():
    old = fmt.load_index(out)
    if (old.img_size, old.codec) != (cfg.img_size, cfg.codec):
      raise fmt.DatasetFormatError(
          f"{out} holds a dataset with img_size {old.img_size} and codec "
          f"{old.codec}; use another --output")
  videos = find_videos(root)
  for tmp in (out / WORK_DIR / "parts").glob(".*.tmp"):
    tmp.unlink()  # left by a killed run
  status_dir = out / WORK_DIR / "status"
  done = set()
  if status_dir.is_dir():
    for p in status_dir.glob("*.json"):
      s = _read_json(p)
      if s["status"] == "ok" or not retry_failed:
        done.add(s["source"])
  todo = [v for v in videos if str(v) not in done]
  print(f"{len(videos)} video(s) under {root}: {len(videos) - len(todo)} "
        f"already done, {len(todo)} to process", file=sys.stderr)
  args = [(str(v), str(root), str(out)) for v in todo]
  bar = tqdm(total=len(args), unit="clip", disable=not progress,
             dynamic_ncols=True,
             bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<"
             "{remaining}, {rate_noinv_fmt}{postfix}]")
  try:
    if workers <= 1:
      _init_worker(cfg)
      for a in args:
        e = _work(a)
        bar.set_postfix_str(f"{e['clip_id'][-30:]}: {e['status']}")
        bar.update()
    else:
      ctx = multiprocessing.get_context("spawn")
      with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg,)) as pool:
        for e in pool.imap_unordered(_work, args):
          bar.set_postfix_str(f"{e['clip_id'][-30:]}: {e['status']}")
          bar.update()
  finally:
    bar.close()
  return pack(out, cfg, inputs=[str(v) for v in videos])
