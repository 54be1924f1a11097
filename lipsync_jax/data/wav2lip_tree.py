"""Converts an upstream Wav2Lip preprocessed tree into a packed dataset.

Input (upstream ``preprocess.py`` output, spec §6.2)::

  ROOT/<dir>/<clip>/{0,1,2,...}.jpg   face crops at native size; a missing
                                      number is a frame without a face
  ROOT/<dir>/<clip>/audio.wav
  FILELISTS/{train,val,test}.txt      one '<dir>/<clip>' per line

Frames are resized to ``img_size`` with ``cv2.resize``'s default (bilinear),
as upstream does at load time; the frame rate is upstream's assumed 25 fps.
Splits come from the filelists (a clip listed nowhere is not converted; a
listed clip that is missing or unusable is reported).
"""

from __future__ import annotations

import json
import os
import pathlib
import re
from typing import Any

import cv2
import numpy as np

from lipsync_jax.data import format as fmt

FPS = 25.0
REPORT_NAME = "report.json"


def read_filelists(filelists: pathlib.Path) -> dict[str, list[str]]:
  """{split: [clip ids]} from filelists/{train,val,test}.txt (first token)."""
  out: dict[str, list[str]] = {}
  for split in fmt.SPLITS:
    p = filelists / f"{split}.txt"
    ids = []
    if p.is_file():
      for line in p.read_text().splitlines():
        tok = line.strip().split()
        if tok:
          ids.append(tok[0].strip("/"))
    out[split] = ids
  if not any(out.values()):
    raise FileNotFoundError(f"no filelists {{train,val,test}}.txt with clips "
                            f"in {filelists}")
  return out


def _load_clip(clip_dir: pathlib.Path, clip_id: str, img_size: int
               ) -> tuple[fmt.ClipMeta, np.ndarray, list[np.ndarray | None]]:
  from lipsync_jax.io import audio  # pylint: disable=g-import-not-at-top
  if not clip_dir.is_dir():
    raise ValueError("clip folder not found")
  nums = sorted(int(p.stem) for p in clip_dir.glob("*.jpg")
                if re.fullmatch(r"\d+", p.stem))
  if not nums:
    raise ValueError("no numbered .jpg frames")
  wav_path = clip_dir / "audio.wav"
  if not wav_path.is_file():
    raise ValueError("no audio.wav")
  try:
    mel = audio.melspectrogram(audio.load_audio(wav_path))
  except audio.AudioError as e:
    raise ValueError(f"audio unusable: {e}") from None
  n = nums[-1] + 1
  present = set(nums)
  frames: list[np.ndarray | None] = []
  for t in range(n):
    if t not in present:
      frames.append(None)
      continue
    img = cv2.imread(str(clip_dir / f"{t}.jpg"), cv2.IMREAD_COLOR)
    if img is None:
      frames.append(None)  # unreadable jpg: treated as no face
      continue
    frames.append(cv2.resize(img, (img_size, img_size)))
  found = np.array([f is not None for f in frames])
  notes = [] if found.all() else [f"no face in {int((~found).sum())} of {n} "
                                  "frames (missing jpgs)"]
  meta = fmt.ClipMeta(
      clip_id=clip_id, speaker_id=clip_id.split("/")[0], source=str(clip_dir),
      fps=FPS, num_frames=n, found=found, boxes=np.zeros((n, 4), np.float32),
      detector="wav2lip_tree", mel_cols=mel.shape[1], notes=notes)
  return meta, mel, frames


def convert(root: str | os.PathLike[str], filelists: str | os.PathLike[str],
            output: str | os.PathLike[str], img_size: int = 96,
            codec: str = "jpeg", clips_per_shard: int = 256,
            progress: bool = True) -> dict[str, Any]:
  """Converts the tree; returns the report (also written to report.json)."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  root, out = pathlib.Path(root), pathlib.Path(output)
  if not root.is_dir():
    raise FileNotFoundError(f"root folder not found: {root}")
  lists = read_filelists(pathlib.Path(filelists))
  order = list(dict.fromkeys(c for s in fmt.SPLITS for c in lists[s]))
  out.mkdir(parents=True, exist_ok=True)
  clips: list[fmt.ClipMeta] = []
  entries = []
  writer = None
  shard_no = 0
  try:
    for cid in tqdm(order, unit="clip", disable=not progress):
      try:
        meta, mel, frames = _load_clip(root / cid, cid, img_size)
      except ValueError as e:
        entries.append({"clip_id": cid, "status": "failed", "reason": str(e)})
        continue
      if writer is None or len(clips) % clips_per_shard == 0 and clips:
        if writer is not None:
          writer.close()
        name = f"{fmt.SHARDS_DIR}/wav2lip-{shard_no:05d}.array_record"
        writer = fmt.ShardWriter(out / name)
        shard_no += 1
      meta.file = name
      writer.write_clip(meta, mel, frames, codec)
      clips.append(meta)
      entries.append({"clip_id": cid, "status": "ok", "reason": "",
                      "frames": meta.num_frames,
                      "face_frames": int(meta.found.sum()),
                      "notes": meta.notes})
    if writer is not None:
      writer.close()
      writer = None
  finally:
    if writer is not None:
      writer.abort()
  ok = {c.clip_id for c in clips}
  fmt.write_index(out, clips, img_size=img_size, codec=codec, fps=FPS)
  fmt.write_splits(out, {s: [c for c in lists[s] if c in ok]
                         for s in fmt.SPLITS})
  report = {"num_inputs": len(order), "num_ok": len(clips),
            "num_failed": len(order) - len(clips), "clips": entries,
            "config": {"img_size": img_size, "codec": codec,
                       "root": str(root), "filelists": str(filelists)}}
  fmt.atomic_write_text(out / REPORT_NAME, json.dumps(report, indent=1))
  return report
