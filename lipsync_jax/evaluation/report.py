"""Evaluation reports: JSON, a Markdown summary and PNG plots (matplotlib).

`write_report(out_dir, report, grid)` writes, each file atomically (temp name
in the same folder, then `os.replace`):

  report.json         the whole `report` dict (per-clip values, aggregates
                      with 95% CIs, unscorable clips with reasons, the scorer)
  report.md           a summary table, the per-clip table and the skip list
  lse_c_per_clip.png  LSE-C of every clip (bar chart)
  offset_hist.png     histogram of the best offsets
  sync_conf_worst.png frame-wise sync confidence of the worst clips (by LSE-C)
  mouth_grid.png      rows of mouth crops (e.g. ground truth / generated) at
                      fixed frames, when `grid` is given

`report` layout (built by `lipsync_jax.evaluate`):
  {"scorer": str, "mode": str, "meta": {...}, "metrics": [names],
   "aggregate": {metric: {"mean", "ci95", "n"}},
   "clips": [{"name", "lse_d", "lse_c", "offset", "frame_conf": [...], ...}],
   "unscorable": [{"name", "reason"}]}
With the energy judge (`--videos`), clips also carry "judge_lag", "judge_r",
... and the aggregate "judge_lag_within1" (`energy_judge.share_within`);
report.md then adds their columns and shares.
"""

from __future__ import annotations

import io
import json
import math
import os
import pathlib
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.ticker  # noqa: E402  pylint: disable=wrong-import-position
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=wrong-import-position
import numpy as np  # noqa: E402  pylint: disable=wrong-import-position

from lipsync_jax.io import files as files_lib  # noqa: E402  pylint: disable=wrong-import-position

FILES = ("report.json", "report.md", "lse_c_per_clip.png", "offset_hist.png",
         "sync_conf_worst.png", "mouth_grid.png")

# Direction of each metric, for the tables.
HIGHER_IS_BETTER = {"lse_c": True, "lse_d": False, "psnr": True, "ssim": True,
                    "lpips": False, "lmd": False, "gt_lse_c": True, "gt_lse_d": False}


def _json_clean(v: Any) -> Any:
  """numpy -> python; non-finite floats -> strings ("inf"), valid JSON."""
  if isinstance(v, dict):
    return {str(k): _json_clean(x) for k, x in v.items()}
  if isinstance(v, (list, tuple)):
    return [_json_clean(x) for x in v]
  if isinstance(v, np.ndarray):
    return _json_clean(v.tolist())
  if isinstance(v, np.generic):
    v = v.item()
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return v


def _fig_png(fig) -> bytes:
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
  plt.close(fig)
  return buf.getvalue()


def _fmt(v: Any, digits: int = 3) -> str:
  if v is None:
    return "n/a"
  if isinstance(v, str):
    return v
  if isinstance(v, float) and not math.isfinite(v):
    return str(v)
  return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


# -----------------------------------------------------------------------------
# Markdown.
# -----------------------------------------------------------------------------

def markdown(report: dict) -> str:
  """The Markdown summary of a report dict."""
  metrics = report.get("metrics", [])
  lines = [f"# Lip-sync evaluation ({report.get('mode', '?')})", ""]
  lines.append(f"**Sync scorer: `{report.get('scorer', '?')}`.** LSE values from "
               "different scorers are not comparable.")
  lines.append("")
  for k, v in report.get("meta", {}).items():
    lines.append(f"- {k}: `{v}`")
  n_ok, n_bad = len(report.get("clips", [])), len(report.get("unscorable", []))
  lines += [f"- clips scored: {n_ok}, not scorable: {n_bad}", "", "## Summary", "",
            "| metric | mean | 95% CI | n |", "|---|---|---|---|"]
  for m in metrics:
    agg = report.get("aggregate", {}).get(m, {})
    ci = agg.get("ci95")
    arrow = " (higher is better)" if HIGHER_IS_BETTER.get(m) else (
        " (lower is better)" if m in HIGHER_IS_BETTER else "")
    ci_s = f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "n/a"
    lines.append(f"| {m}{arrow} | {_fmt(agg.get('mean'))} | {ci_s} | {agg.get('n', 0)} |")
  if "offset_hist" in report.get("aggregate", {}):
    hist = report["aggregate"]["offset_hist"]
    lines += ["", "Best offsets (frames, + = audio lags video): " +
              ", ".join(f"{k}: {v}" for k, v in hist.items())]
  lines += _judge_summary(report.get("aggregate", {}))
  lines += ["", "## Clips", ""]
  judged = any("judge_lag" in c for c in report.get("clips", []))
  cols = ["name"] + metrics + ["offset", "frames"] + (["judge lag", "judge r"] if judged else [])
  lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
  for c in report.get("clips", []):
    row = [str(c.get("name"))] + [_fmt(c.get(m)) for m in metrics]
    row += [str(c.get("offset")), str(c.get("num_frames"))]
    if judged:
      ref = c.get("judge_reference_lag")
      row += [_fmt(c.get("judge_lag")) + ("" if ref is None else f" (source {ref})"),
              _fmt(c.get("judge_r"), 2)]
    lines.append("| " + " | ".join(row) + " |")
  lines += ["", "## Not scored", ""]
  bad = report.get("unscorable", [])
  if bad:
    lines += [f"- `{u['name']}`: {u['reason']}" for u in bad]
  else:
    lines.append("none")
  return "\n".join(lines) + "\n"


def _judge_summary(aggregate: dict) -> list[str]:
  """The energy judge's shares (`energy_judge.share_within`) as Markdown lines."""
  lines = []
  for key, what in (("judge_lag_within1", "0"),
                    ("judge_lag_within1_of_reference", "its source clip's judge lag")):
    agg = aggregate.get(key)
    if agg:
      share = "n/a" if agg["share"] is None else f"{agg['share']:.0%}"
      lines.append(f"Energy judge (no learned weights): best lag within +-1 frame of {what} "
                   f"on {agg['hits']} of {agg['n']} clips ({share}).")
  short = aggregate.get("judge_short_clips")
  if short and short["n"]:
    lines.append(f"{short['n']} of these {short['of']} clips have fewer than "
                 f"{short['frames']} frames: on so few, one clip's judge lag is often a noise "
                 "peak, so read the share, not single lags (docs/sync_judges.md).")
  return [""] + lines if lines else []


# -----------------------------------------------------------------------------
# Plots.
# -----------------------------------------------------------------------------

def plot_lse_c(clips: Sequence[dict], scorer: str) -> bytes:
  names = [c["name"] for c in clips]
  vals = [c["lse_c"] for c in clips]
  fig, ax = plt.subplots(figsize=(max(4.0, 0.35 * len(names) + 2), 3.5))
  ax.bar(range(len(vals)), vals, color="tab:blue")
  ax.set_xticks(range(len(vals)))
  ax.set_xticklabels(names, rotation=75, ha="right", fontsize=7)
  ax.set_ylabel("LSE-C (higher is better)")
  ax.set_title(f"LSE-C per clip, scorer {scorer}", fontsize=9)
  return _fig_png(fig)


def plot_offset_hist(clips: Sequence[dict], vshift: int, scorer: str) -> bytes:
  offs = [c["offset"] for c in clips]
  fig, ax = plt.subplots(figsize=(5, 3.2))
  ax.hist(offs, bins=np.arange(-vshift, vshift + 2) - 0.5, color="tab:green")
  ax.set_xlim(-vshift - 1, vshift + 1)
  ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
  ax.set_xlabel("best offset (frames, + = audio lags video)")
  ax.set_ylabel("clips")
  ax.set_title(f"Offset histogram, scorer {scorer}", fontsize=9)
  return _fig_png(fig)


def plot_worst_conf(clips: Sequence[dict], scorer: str, k: int = 4) -> bytes:
  worst = sorted(clips, key=lambda c: c["lse_c"])[:k]
  fig, ax = plt.subplots(figsize=(6, 3.2))
  for c in worst:
    conf = np.asarray(c.get("frame_conf", []), np.float64)
    ax.plot(np.arange(conf.size), conf, label=f"{c['name']} (LSE-C {c['lse_c']:.2f})")
  ax.axhline(0.0, color="grey", lw=0.5)
  ax.set_xlabel("5-frame window")
  ax.set_ylabel("sync confidence")
  ax.set_title(f"Frame-wise confidence of the worst clips, scorer {scorer}", fontsize=9)
  if worst:
    ax.legend(fontsize=6)
  return _fig_png(fig)


def plot_grid(grid: dict) -> bytes:
  """grid: {"row_labels": [..R], "col_labels": [..C],
  "images": (R, C, h, w, 3) BGR uint8}."""
  imgs = np.asarray(grid["images"])
  r, c = imgs.shape[:2]
  fig, axes = plt.subplots(r, c, figsize=(1.3 * c + 0.5, 0.8 * r + 0.5), squeeze=False)
  for i in range(r):
    for j in range(c):
      ax = axes[i][j]
      ax.imshow(imgs[i, j][..., ::-1])   # BGR -> RGB
      ax.set_xticks([])
      ax.set_yticks([])
      if j == 0:
        ax.set_ylabel(grid["row_labels"][i], fontsize=6, rotation=0, ha="right", va="center")
      if i == 0:
        ax.set_title(grid["col_labels"][j], fontsize=6)
  fig.suptitle(grid.get("title", "mouth crops"), fontsize=8)
  return _fig_png(fig)


def write_report(out_dir: str | os.PathLike, report: dict,
                 grid: dict | None = None, vshift: int = 15) -> list[pathlib.Path]:
  """Writes the report files into `out_dir`; returns their paths."""
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  clips = report.get("clips", [])
  scorer = report.get("scorer", "?")
  files = {
      "report.json": json.dumps(_json_clean(report), indent=1).encode(),
      "report.md": markdown(report).encode(),
      "lse_c_per_clip.png": plot_lse_c(clips, scorer),
      "offset_hist.png": plot_offset_hist(clips, vshift, scorer),
      "sync_conf_worst.png": plot_worst_conf(clips, scorer),
  }
  if grid is not None and np.asarray(grid["images"]).size:
    files["mouth_grid.png"] = plot_grid(grid)
  paths = []
  for name, data in files.items():
    files_lib.atomic_write_bytes(out / name, data)
    paths.append(out / name)
  return paths
