"""Synthetic datasets in the real on-disk format, for tests and smoke runs."""

from __future__ import annotations

import os
import pathlib

import cv2
import numpy as np

from lipsync_jax.data import format as fmt

SYNTHETIC_FPS = 25.0


def _mouth_track(rng: np.random.Generator, n: int) -> np.ndarray:
  """(n,) smooth mouth opening in [0, 1]."""
  x = rng.random(n + 4)
  x = np.convolve(x, np.ones(5) / 5, mode="valid")[:n]
  return (x - x.min()) / max(x.max() - x.min(), 1e-6)


def _face(img_size: int, bg: np.ndarray, skin: np.ndarray, opening: float,
          rng: np.random.Generator) -> np.ndarray:
  s = img_size
  img = np.empty((s, s, 3), np.uint8)
  img[:] = bg
  c = (s // 2, s // 2)
  cv2.ellipse(img, c, (int(s * 0.36), int(s * 0.46)), 0, 0, 360,
              tuple(int(v) for v in skin), -1)
  for ex in (int(s * 0.35), int(s * 0.65)):
    cv2.circle(img, (ex, int(s * 0.38)), max(1, s // 20), (40, 30, 30), -1)
  mh = max(1, int(s * 0.02 + s * 0.12 * opening))
  cv2.ellipse(img, (s // 2, int(s * 0.72)), (int(s * 0.16), mh), 0, 0, 360,
              (40, 20, 120), -1)
  noise = rng.integers(-6, 7, img.shape)
  return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def write_synthetic_dataset(out_dir: str | os.PathLike[str], num_clips: int = 4,
                            num_frames: int = 40, img_size: int = 96,
                            seed: int = 0, codec: str = "jpeg",
                            clips_per_shard: int = 2,
                            missing_faces: bool = True) -> pathlib.Path:
  """Writes a small dataset whose mouth opening follows the mel energy.

  Every clip is a drawn face (random colours) whose mouth opening a(t) also
  scales a band of the mel at frame t's columns, so sync is learnable. When
  ``missing_faces`` and num_frames >= 30, clip 1 has no face in frames 18-19.
  Splits: train = all clips, val = test = the last clip (overlapping on
  purpose so that every split is usable with few clips).

  Returns:
    out_dir as a Path.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  mel_cols = int(num_frames * 80 / SYNTHETIC_FPS) + 1
  clips: list[fmt.ClipMeta] = []
  writer = None
  shard_no = 0
  try:
    for i in range(num_clips):
      if i % clips_per_shard == 0:
        if writer is not None:
          writer.close()
        name = f"{fmt.SHARDS_DIR}/synthetic-{shard_no:05d}.array_record"
        writer = fmt.ShardWriter(out / name)
        shard_no += 1
      a = _mouth_track(rng, num_frames)
      found = np.ones((num_frames,), bool)
      if missing_faces and i == 1 and num_frames >= 30:
        found[18:20] = False
      bg = rng.integers(0, 256, 3)
      skin = np.array([120, 160, 210]) + rng.integers(-30, 30, 3)
      frames = [(_face(img_size, bg, skin, float(a[t]), rng) if found[t]
                 else None) for t in range(num_frames)]
      mel = rng.normal(-2.5, 0.3, (fmt.N_MELS, mel_cols)).astype(np.float32)
      col_frame = np.minimum(
          (np.arange(mel_cols) * SYNTHETIC_FPS / 80).astype(int),
          num_frames - 1)
      mel[10:40] += 4.0 * a[col_frame][None, :]
      mel = np.clip(mel, -4, 4)
      boxes = np.tile(np.array([[10, 10, 10 + img_size, 10 + img_size]],
                               np.float32), (num_frames, 1))
      meta = fmt.ClipMeta(
          clip_id=f"synthetic/clip{i:03d}", speaker_id=f"spk{i % 2}",
          source=f"synthetic://{i}", fps=SYNTHETIC_FPS, num_frames=num_frames,
          found=found, boxes=boxes, detector="synthetic", mel_cols=mel_cols,
          notes=[] if found.all() else
          [f"no face in {int((~found).sum())} frame(s)"],
          file=name)
      writer.write_clip(meta, mel, frames, codec)
      clips.append(meta)
    if writer is not None:
      writer.close()
      writer = None
  finally:
    if writer is not None:
      writer.abort()
  fmt.write_index(out, clips, img_size=img_size, codec=codec,
                  fps=SYNTHETIC_FPS, extra={"synthetic": True})
  ids = [c.clip_id for c in clips]
  fmt.write_splits(out, {"train": ids, "val": ids[-1:], "test": ids[-1:]})
  return out
