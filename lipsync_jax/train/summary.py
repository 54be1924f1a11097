"""Progress bar, metric files, TensorBoard events, sample grids, summary."""

from __future__ import annotations

import json
import os
from typing import Any

import cv2
import numpy as np
import tqdm

from lipsync_jax.io import files


def write_json_atomic(path: str, obj: Any) -> None:
  """json.dump to a temp file beside `path`, then os.replace."""
  files.atomic_write_text(path, json.dumps(obj, indent=2, default=float))


def _truncate_jsonl(path: str, max_step: int) -> None:
  """Drops lines of a step > max_step (written after the resumed checkpoint)."""
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = [ln for ln in f if ln.strip()]
  keep = [ln for ln in lines if json.loads(ln)["step"] <= max_step]
  files.atomic_write_text(path, "".join(keep))


def read_jsonl(path: str) -> list[dict[str, Any]]:
  with open(path) as f:
    return [json.loads(ln) for ln in f if ln.strip()]


class MetricsWriter:
  """metrics.jsonl (every step), eval.jsonl, and TensorBoard scalars."""

  def __init__(self, workdir: str, enabled: bool = True, resume_step: int = 0):
    self.enabled = enabled
    self.train_path = os.path.join(workdir, "metrics.jsonl")
    self.eval_path = os.path.join(workdir, "eval.jsonl")
    self._tb = None
    if not enabled:
      return
    for p in (self.train_path, self.eval_path):
      _truncate_jsonl(p, resume_step)
    self._train_f = open(self.train_path, "a")
    self._eval_f = open(self.eval_path, "a")
    from tensorboardX import SummaryWriter
    self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def train(self, step: int, metrics: dict[str, float], log_tb: bool) -> None:
    if not self.enabled:
      return
    self._train_f.write(json.dumps({"step": step, **metrics}) + "\n")
    self._train_f.flush()
    if log_tb:
      for k, v in metrics.items():
        self._tb.add_scalar(f"train/{k}", v, step)

  def eval(self, step: int, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    self._eval_f.write(json.dumps({"step": step, **metrics}) + "\n")
    self._eval_f.flush()
    for k, v in metrics.items():
      self._tb.add_scalar(f"eval/{k}", v, step)
    self._tb.flush()

  def close(self) -> None:
    if not self.enabled:
      return
    self._train_f.close()
    self._eval_f.close()
    self._tb.close()


class progress:  # pylint: disable=invalid-name
  """tqdm bar with step, losses, steps/s and ETA (no-op when disabled)."""

  KEYS = ("loss", "l1", "sync", "lpips", "gan_g", "disc", "accuracy")

  def __init__(self, total: int, initial: int, enabled: bool = True):
    self._bar = tqdm.tqdm(total=total, initial=initial, disable=not enabled,
                          unit="step", dynamic_ncols=True, smoothing=0.1)
    self._last = initial

  def update(self, step: int, metrics: dict[str, float]) -> None:
    self._bar.update(step - self._last)
    self._last = step
    self._bar.set_postfix({k: f"{metrics[k]:.4f}" for k in self.KEYS if k in metrics},
                          refresh=False)

  def close(self) -> None:
    self._bar.close()


def sample_grid(batch: dict[str, np.ndarray], pred: np.ndarray,
                max_rows: int = 4) -> np.ndarray:
  """BGR uint8 grid: one row per sample, frames 0..T-1 of
  [masked input | reference | generated | ground truth] side by side.

  Args:
    batch: generator batch (target, reference (B,T,H,W,3) uint8).
    pred: (B, T, H, W, 3) floats in [0, 1].
  Returns:
    (rows*H, 4*T*W, 3) uint8.
  """
  gt = batch["target"][:max_rows]
  ref = batch["reference"][:max_rows]
  gen = (np.clip(pred[:max_rows], 0, 1) * 255 + 0.5).astype(np.uint8)
  masked = gt.copy()
  masked[:, :, gt.shape[2] // 2:] = 0
  rows = []
  for i in range(gt.shape[0]):
    panels = [np.concatenate(list(x[i]), axis=1) for x in (masked, ref, gen, gt)]
    sep = np.full((gt.shape[2], 4, 3), 255, np.uint8)
    rows.append(np.concatenate(
        [p for panel in panels for p in (panel, sep)][:-1], axis=1))
  return np.concatenate(rows, axis=0)


def save_sample_grid(workdir: str, step: int, batch: dict[str, np.ndarray],
                     pred: np.ndarray) -> str:
  """Writes samples/step_<step>.png atomically; returns its path."""
  folder = os.path.join(workdir, "samples")
  os.makedirs(folder, exist_ok=True)
  ok, png = cv2.imencode(".png", sample_grid(batch, pred))
  if not ok:
    raise RuntimeError("PNG encoding failed")
  path = os.path.join(folder, f"step_{step:07d}.png")
  files.atomic_write_bytes(path, png.tobytes())
  return path
