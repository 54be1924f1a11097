"""Sanity report of the FaceMesh AU proxies on the real talking-face clips.

  python bench/au_proxy_report.py [--shared ../shared] [--step 1]
      [--out /tmp/au_proxy_report.json] [--aus 10,14,20,25,26]

For every clip in ``shared/data/real/av/`` (resampled to 25 fps): the face is
found with ``face_detection``'s default detector (BlazeFace), the box track is
smoothed, FaceMesh runs on every ``--step``-th frame and the AU proxies of
``lipsync_jax.vision.au_proxies`` are computed per clip (per-clip baselines). The
audio track is loaded at 16 kHz and its RMS energy taken per video frame
(frame i owns samples [i * 16000 / 25, (i + 1) * 16000 / 25)), in dB.

Speech vs silence: a frame is "speech" when its RMS is within
``--speech-db`` (20) dB of the clip's 95th-percentile frame RMS, and
"silence" when it is more than ``--silence-db`` (30) dB below it; frames in
between are left out of the presence rates. (Per-clip relative thresholds,
because the clips' recording levels differ by ~20 dB.)

Printed (Markdown) and written to ``--out`` (JSON), per AU:
  * r(opening): Pearson correlation of the AU's activation with the mouth
    opening (inner-lip gap |p13 - p14| / IOD); mean over clips [min, max].
    (AU25's activation IS the opening, so its r is 1 by construction.)
  * r(RMS dB): correlation with the frame's audio RMS in dB at lag 0, and at
    the one lag in -2..+2 video frames (+ = audio frame later than the video
    frame) whose mean r over the clips is largest in magnitude.
  * P(present | speech) and P(present | silence): presence rates, pooled over
    the frames of all clips.
Also a per-dataset table (GRID, VoxCeleb2, HDTF, in-the-wild).

Timing: ~1 min on a shared 2-core machine with --step 1 (3.4k frames; frame
decoding of the large in-the-wild clips dominates); --step 2 halves it.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import numpy as np  # pylint: disable=wrong-import-position

from lipsync_jax.vision import au_proxies  # pylint: disable=wrong-import-position
from lipsync_jax.io import audio  # pylint: disable=wrong-import-position
from lipsync_jax.vision import face_detection as fd  # pylint: disable=wrong-import-position
from lipsync_jax.vision import face_mesh  # pylint: disable=wrong-import-position

FPS = 25.0
SR = 16000
LAGS = (-2, -1, 0, 1, 2)
GROUPS = {"grid": "GRID", "voxceleb2": "VoxCeleb2", "hdtf": "HDTF",
          "retalking": "in-the-wild"}


def frame_rms_db(wav: np.ndarray, num_frames: int, fps: float = FPS,
                 sr: int = SR) -> np.ndarray:
  """(n,) waveform -> (num_frames,) RMS in dB of each video frame's samples."""
  edges = np.round(np.arange(num_frames + 1) * sr / fps).astype(int)
  out = np.full((num_frames,), -160.0)
  for i in range(num_frames):
    seg = wav[edges[i]:edges[i + 1]]
    if seg.size:
      out[i] = 20 * np.log10(np.sqrt(np.mean(seg.astype(np.float64) ** 2))
                             + 1e-8)
  return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size < 3 or a.std() < 1e-12 or b.std() < 1e-12:
    return float("nan")
  return float(np.corrcoef(a, b)[0, 1])


def lagged_r(x: np.ndarray, idx: np.ndarray, energy: np.ndarray) -> dict:
  """r(x[k], energy[idx[k] + lag]) per lag (video frames; + = audio later)."""
  out = {}
  for lag in LAGS:
    j = idx + lag
    ok = (j >= 0) & (j < len(energy))
    out[lag] = pearson(x[ok], energy[j[ok]])
  return out


def analyse_clip(path: pathlib.Path, mesh, detector, config, step: int,
                 speech_db: float, silence_db: float) -> dict:
  t0 = time.time()
  vl = face_mesh.video_landmarks(path, mesh, detector, step=step, fps=FPS)
  wav = audio.load_audio(path, SR)
  energy = frame_rms_db(wav, vl.num_frames)
  valid = vl.presence >= 0.5
  labels = au_proxies.compute_proxies(vl.landmarks, config, valid)
  opening = au_proxies.mouth_opening(vl.landmarks)
  idx = vl.frame_indices
  ref = np.percentile(energy, 95)
  e = energy[idx]
  speech = (e >= ref - speech_db) & valid
  silence = (e < ref - silence_db) & valid
  per_au = {}
  for k, au in enumerate(config.aus):
    act = labels.activation[:, k].astype(np.float64)
    lr = lagged_r(act[valid], idx[valid], energy)
    per_au[au] = {
        "r_opening": pearson(act[valid], opening[valid]),
        "r_rms": lr[0],
        "r_rms_by_lag": {str(l): r for l, r in lr.items()},
        "present_speech": int(labels.presence[speech, k].sum()),
        "present_silence": int(labels.presence[silence, k].sum()),
    }
  return {
      "clip": str(path.relative_to(path.parents[1])),
      "group": path.parent.name,
      "frames_used": int(len(idx)),
      "valid": int(valid.sum()),
      "detector": vl.detector,
      "detected_rate": float(vl.detected.mean()),
      "speech_frames": int(speech.sum()),
      "silence_frames": int(silence.sum()),
      "opening_p5_p95": [float(np.percentile(opening[valid], 5)),
                         float(np.percentile(opening[valid], 95))],
      "r_opening_rms": pearson(opening[valid], energy[idx[valid]]),
      "per_au": per_au,
      "seconds": time.time() - t0,
  }


def _fmt_r(vals: list[float]) -> str:
  v = np.asarray([x for x in vals if np.isfinite(x)])
  if not v.size:
    return "n/a"
  return f"{v.mean():+.2f} [{v.min():+.2f}, {v.max():+.2f}]"


def _rate(n: int, d: int) -> str:
  return f"{n / d:.2f} ({n}/{d})" if d else "n/a"


def summarise(clips: list[dict], aus: tuple[int, ...]) -> list[dict]:
  rows = []
  n_sp = sum(c["speech_frames"] for c in clips)
  n_si = sum(c["silence_frames"] for c in clips)
  for au in aus:
    pa = [c["per_au"][au] for c in clips]
    # One lag for all clips: the one whose mean r is largest in magnitude.
    mean_by_lag = {l: np.nanmean([p["r_rms_by_lag"][str(l)] for p in pa])
                   for l in LAGS}
    best = max(LAGS, key=lambda l: abs(mean_by_lag[l]))
    sp = sum(p["present_speech"] for p in pa)
    si = sum(p["present_silence"] for p in pa)
    rows.append({
        "au": au,
        "r_opening": [p["r_opening"] for p in pa],
        "r_rms": [p["r_rms"] for p in pa],
        "best_lag": best,
        "r_rms_best_lag": [p["r_rms_by_lag"][str(best)] for p in pa],
        "present_speech": sp, "speech_frames": n_sp,
        "present_silence": si, "silence_frames": n_si,
    })
  return rows


def markdown(rows: list[dict], title: str) -> str:
  lines = [f"**{title}**", "",
           "| AU | r(opening) mean [min, max] | r(RMS dB), lag 0 | "
           "r(RMS dB) at best lag (frames) | P(present \\| speech) | "
           "P(present \\| silence) |",
           "|---|---|---|---|---|---|"]
  for r in rows:
    lines.append(
        f"| AU{r['au']} | {_fmt_r(r['r_opening'])} | {_fmt_r(r['r_rms'])} | "
        f"{_fmt_r(r['r_rms_best_lag'])} ({r['best_lag']:+d}) | "
        f"{_rate(r['present_speech'], r['speech_frames'])} | "
        f"{_rate(r['present_silence'], r['silence_frames'])} |")
  return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--shared", default=str(
      pathlib.Path(__file__).resolve().parents[2] / "shared"))
  ap.add_argument("--step", type=int, default=1)
  ap.add_argument("--aus", default=",".join(map(str, au_proxies.DEFAULT_AUS)))
  ap.add_argument("--speech-db", type=float, default=20.0)
  ap.add_argument("--silence-db", type=float, default=30.0)
  ap.add_argument("--only", default="", help="comma list of groups")
  ap.add_argument("--out", default="/tmp/au_proxy_report.json")
  return ap


def main(argv=None) -> int:
  args = build_parser().parse_args(argv)

  root = pathlib.Path(args.shared) / "data" / "real" / "av"
  if not root.is_dir():
    print(f"error: real clips not found at {root} (pass --shared)",
          file=sys.stderr)
    return 2
  groups = [g for g in args.only.split(",") if g] or list(GROUPS)
  paths = sorted(p for g in groups for p in (root / g).glob("*")
                 if p.suffix.lower() in (".mp4", ".mpg"))
  config = au_proxies.ProxyConfig(
      aus=tuple(int(a) for a in args.aus.split(",")))
  try:
    mesh = face_mesh.FaceMesh()
  except face_mesh.FaceMeshError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  detector = fd.create_detector("default")
  t0 = time.time()
  clips = []
  for p in paths:
    c = analyse_clip(p, mesh, detector, config, args.step, args.speech_db,
                     args.silence_db)
    clips.append(c)
    print(f"{c['clip']}: {c['frames_used']} frames ({c['detector']}, "
          f"detected {c['detected_rate']:.2f}, valid {c['valid']}), speech "
          f"{c['speech_frames']} / silence {c['silence_frames']}, "
          f"r(opening, RMS) {c['r_opening_rms']:+.2f}, {c['seconds']:.1f} s",
          file=sys.stderr)

  aus = tuple(config.aus)
  rows = summarise(clips, aus)
  n_frames = sum(c["frames_used"] for c in clips)
  print(f"AU proxies on {len(clips)} real clips, {n_frames} frames (step "
        f"{args.step} at 25 fps), FaceMesh + BlazeFace, "
        f"{time.time() - t0:.0f} s. Speech: frame RMS >= clip P95 - "
        f"{args.speech_db:g} dB; silence: < P95 - {args.silence_db:g} dB.\n")
  print(markdown(rows, "All clips"))
  by_group = {}
  for g in groups:
    cs = [c for c in clips if c["group"] == g]
    if cs:
      by_group[g] = summarise(cs, aus)
      print()
      print(markdown(by_group[g], f"{GROUPS.get(g, g)} ({len(cs)} clips)"))
  out = pathlib.Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({
      "settings": {"step": args.step, "fps": FPS, "aus": list(aus),
                   "speech_db_below_p95": args.speech_db,
                   "silence_db_below_p95": args.silence_db,
                   "thresholds": {a: config.threshold(a) for a in aus}},
      "summary": rows, "by_group": by_group, "clips": clips,
  }, indent=1, default=float))
  print(f"\nJSON written to {out}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
