"""The landmark expert against the pixel SyncNet, where both work: the demo.

    python -m lipsync_jax.demo --workdir runs/demo [--quick]
    python bench/lip_sync_vs_syncnet.py --demo runs/demo

Scores every held-out video of a finished demo (before / after training /
ground truth, `heldout/pair*/`) with the demo's own `syncnet_color` expert
and with the built-in landmark expert (`lip_sync:builtin`), and prints both
per video with the correlation of their LSE-D and LSE-C and how often their
best offsets agree (within +-1 frame); then, on the clips of the demo's
held-out identity with their audio shifted by 0, +-3 and +-5 frames, how often
each finds the shift and how well their distance-vs-offset curves agree. The two
measure distances on different scales, so only their ranking can agree, not
their values. Both average over the windows that meet real audio
(`--sync-padding exclude`): with zero padding a scorer's LSE-D grows with the
shift itself, which would dominate the comparison.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

VIDEOS = ("before", "after", "ground_truth")


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--demo", required=True, help="a finished demo workdir")
  return p


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)
  import scipy.stats
  from lipsync_jax.io import audio as audio_lib
  from lipsync_jax.evaluation import metrics
  from lipsync_jax.vision import face_detection
  from lipsync_jax.vision import face_crops

  demo = pathlib.Path(a.demo)
  pairs = sorted((demo / "heldout").glob("pair*"))
  if not pairs or not (demo / "expert" / "model").is_dir():
    print(f"error: {demo} is not a finished demo workdir", file=sys.stderr)
    return 2
  scorers = {"syncnet_color (demo expert)": metrics.load_scorer(str(demo / "expert" / "model")),
             "lip_sync:builtin": metrics.load_builtin_scorer()}
  detector = face_detection.create_detector("default")
  rows = []
  for pair in pairs:
    for v in VIDEOS:
      path = pair / f"{v}.mp4"
      if not path.is_file():
        continue
      wav = audio_lib.load_audio(path)
      row = {"video": f"{pair.name}/{v}"}
      for name, scorer in scorers.items():
        try:
          crops, first, fps, _ = face_crops.video_face_crops(str(path), scorer.face_size,
                                                           detector, min_frames=10)
          r = metrics.sync_scores(scorer, crops, metrics.ClipAudio(wav=wav), fps,
                                  first_frame=first, padding="exclude")
          row[name] = (r.lse_d, r.lse_c, r.offset)
        except ValueError as e:
          row[name] = None
          row.setdefault("notes", []).append(f"{name}: {str(e).splitlines()[0]}")
      rows.append(row)

  names = list(scorers)
  print("| video | " + " | ".join(f"{n} LSE-D / LSE-C / offset" for n in names) + " |")
  print("|---" * (len(names) + 1) + "|")
  for r in rows:
    cells = [("%.3f / %.3f / %+d" % r[n]) if r.get(n) else "not scored" for n in names]
    print(f"| {r['video']} | " + " | ".join(cells) + " |")
    for note in r.get("notes", []):
      print(f"  note: {note}")
  both = [r for r in rows if all(r.get(n) for n in names)]
  if len(both) >= 3:
    for i, what in ((0, "LSE-D"), (1, "LSE-C")):
      x = [r[names[0]][i] for r in both]
      y = [r[names[1]][i] for r in both]
      print(f"{what}: Pearson r = {scipy.stats.pearsonr(x, y)[0]:+.2f}, "
            f"Spearman rho = {scipy.stats.spearmanr(x, y)[0]:+.2f} over {len(both)} videos")
    agree = np.mean([abs(r[names[0]][2] - r[names[1]][2]) <= 1 for r in both])
    print(f"best offsets agree within +-1 frame on {100 * agree:.0f}% of the videos")

  # The held-out identity's clips with their audio shifted: both scorers
  # should find the shift, and their distances should rank alike.
  from lipsync_jax.train import lip_sync_lib
  from lipsync_jax import demo as demo_lib
  clips = sorted((demo / "raw" / f"id{demo_lib.HELDOUT_IDENTITY}").glob("*.mp4"))
  shifts = (0, 3, -3, 5, -5)
  found = {n: [] for n in names}
  pairs_d = []
  for path in clips:
    wav = audio_lib.load_audio(path)
    crops = {n: face_crops.video_face_crops(str(path), s.face_size, detector, min_frames=10)
             for n, s in scorers.items()}
    for k in shifts:
      audio = metrics.ClipAudio(wav=lip_sync_lib.shift_waveform(wav, k))
      curves = []
      for n, s in scorers.items():
        c, first, fps, _ = crops[n]
        r = metrics.sync_scores(s, c, audio, fps, first_frame=first,
                                padding="exclude")
        found[n].append(abs(r.offset - k) <= 1)
        curves.append(np.asarray(r.mean_dists, np.float64))
      ok = np.isfinite(curves[0]) & np.isfinite(curves[1])
      pairs_d.append(np.corrcoef(curves[0][ok], curves[1][ok])[0, 1])
  if clips:
    print(f"\n{len(clips)} clips of the held-out identity, audio shifted by "
          + ", ".join(f"{k:+d}" for k in shifts) + " frames:")
    for n in names:
      print(f"  {n}: shift found within +-1 frame in {100 * np.mean(found[n]):.0f}% "
            f"of {len(found[n])} cases")
    print(f"  their distance-vs-offset curves (31 offsets) correlate with Pearson r = "
          f"{np.mean(pairs_d):+.2f} on average (min {np.min(pairs_d):+.2f}) over "
          f"{len(pairs_d)} cases")
  return 0


if __name__ == "__main__":
  sys.exit(main())
