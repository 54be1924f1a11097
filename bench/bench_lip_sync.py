"""Offset recovery and pair accuracy of sync scorers on the real clips.

    python bench/bench_lip_sync.py [--videos ../shared/data/real/av] [--model DIR]

For every clip whose speaker the landmark expert never trained on (the
`val_speakers` recorded in the model's meta; default: the built-in scorer),
the audio is delayed or advanced by 3, 5 and 8 frames, and each scorer's best
offset over +-15 frames must show the shift within +-1 frame:

* absolute: |offset(k) - k| <= 1;
* relative: |offset(k) - offset(0) - k| <= 1, against the clip's own best
  offset (a source clip may itself be a frame or two out of sync).

Scorers, in one run on the same clips and crops:

* `lip_sync`: the landmark expert (FaceMesh lips + mel), padding "exclude";
* `gap_xcorr`: no learning: the correlation of the FaceMesh inner-lip gap
  with the audio energy at the frame's centre, best lag over +-15;
* `energy_judge`: no learning: `evaluate`'s judge, the correlation of the
  frame-to-frame changes of the gap and of the log-RMS energy, over +-8;
* `syncnet_color` (with `--syncnet CKPT`): a pixel expert, for comparison.

Also prints in-sync vs off-sync pair accuracy on the same clips (one in-sync
pair and one off-sync pair, a random other position of the same clip, per
video window) and the AUC of those pairs' cosines (free of the decision
head's threshold). Lip tracks are cached under --cache; `--json FILE` also
writes the figures there.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

SHIFTS = (0, 3, -3, 5, -5, 8, -8)


def gap_xcorr_offset(clip, wav) -> int:
  """Best lag of corr(inner-lip gap, mel energy at the frame centre)."""
  from lipsync_jax.io import audio as audio_lib
  from lipsync_jax.vision import lip_landmarks
  mel = audio_lib.melspectrogram(wav)
  energy = mel.mean(axis=0)
  gap = lip_landmarks.inner_gap(clip.lips)
  t = clip.first_frame + np.arange(len(gap))
  centre = (audio_lib.MEL_STEPS_PER_SECOND * (t + 0.5) / clip.fps).astype(int)
  best, best_r = 0, -np.inf
  for lag in range(-15, 16):
    j = centre + int(round(lag * audio_lib.MEL_STEPS_PER_SECOND / clip.fps))
    ok = (j >= 0) & (j < len(energy))
    if ok.sum() < 10:
      continue
    r = np.corrcoef(gap[ok], energy[j[ok]])[0, 1]
    if np.isfinite(r) and r > best_r:
      best, best_r = lag, r
  return best


def energy_judge_offset(clip, wav) -> int:
  """The energy judge's best lag (`evaluation.energy_judge`); 99 (a miss at
  every shift) where it cannot measure the clip."""
  from lipsync_jax.evaluation import energy_judge
  try:
    return energy_judge.lip_energy_lag(clip.lips, clip.valid, wav, clip.first_frame,
                                       clip.fps).best_lag
  except energy_judge.JudgeError:
    return 99


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--videos", default=str(pathlib.Path(__file__).resolve().parents[2]
                                         / "shared" / "data" / "real" / "av"))
  p.add_argument("--model", default=None, help="lip_sync model dir (default: built-in)")
  p.add_argument("--cache", default=os.path.expanduser("~/.cache/lipsync_jax/lip_tracks"))
  p.add_argument("--all-clips", action="store_true",
                 help="also score the clips of training speakers (marked *)")
  p.add_argument("--json", default=None, help="also write the figures to this JSON file")
  return p


def main(argv=None) -> int:
  a = build_parser().parse_args(argv)

  from lipsync_jax import checkpoint
  from lipsync_jax.evaluation import metrics
  from lipsync_jax.vision import lip_landmarks
  from lipsync_jax.train import lip_sync_lib

  path = a.model or metrics.builtin_scorer_path()
  loaded = checkpoint.load_model(path, expected_arch="lip_sync")
  training = loaded.meta.get("training", {})
  val = set(training.get("val_speakers", []))
  normalise = bool(dict(loaded.meta.get("inputs") or {}).get("normalise", False))
  speakers = lip_sync_lib.parse_speakers(training.get("speakers", []))
  t0 = time.time()
  clips, skipped = lip_landmarks.extract_videos([a.videos], a.cache, speakers=speakers)
  for s in skipped:
    print(f"skipped {s['name']}: {s['reason']}")
  held = [c for c in clips if c.speaker in val]
  scored = clips if a.all_clips else held
  if not scored:
    print("no clip of a held-out speaker: nothing to score (see --all-clips)")
    return 1
  print(f"{len(held)} clips of {len({c.speaker for c in held})} held-out speakers "
        f"({sum(c.num_frames for c in held)} frames); model {path}; "
        f"lip tracks {time.time() - t0:.0f} s")

  scorers = {
      "lip_sync": lip_sync_lib.model_offset_fn(loaded.module, loaded.variables, "exclude",
                                               normalise),
      "lip_sync (zeros)": lip_sync_lib.model_offset_fn(loaded.module, loaded.variables,
                                                       "zeros", normalise),
      "gap_xcorr": gap_xcorr_offset,
      "energy_judge": energy_judge_offset,
  }
  results = {name: lip_sync_lib.offset_recovery(fn, scored, SHIFTS)
             for name, fn in scorers.items()}

  print("\nOffset recovery, share of clips within +-1 frame (absolute | relative):")
  print("| scorer | " + " | ".join(f"{k:+d}" for k in SHIFTS) + " |")
  print("|---" * (len(SHIFTS) + 1) + "|")
  for name, r in results.items():
    cells = [f"{100 * r['rate'][k]:.0f}%" + ("" if k == 0 else
                                              f" \\| {100 * r['rate_relative'][k]:.0f}%")
             for k in SHIFTS]
    print(f"| {name} | " + " | ".join(cells) + " |")

  print("\nBest offsets per clip (lip_sync, shifts " + " ".join(f"{k:+d}" for k in SHIFTS)
        + "):")
  for name, offs in results["lip_sync"]["offsets"].items():
    mark = "" if any(c.name == name and c.speaker in val for c in clips) else " *"
    print(f"  {name}{mark}: " + " ".join(f"{offs[k]:+d}" for k in SHIFTS))

  head = {"scale": float(loaded.meta.get("logit_scale", 10.0)),
          "bias": float(loaded.meta.get("logit_bias", -5.0))}
  windows = [lip_sync_lib.clip_windows(c, normalise=normalise, window=loaded.module.window)
             for c in held]
  acc = lip_sync_lib.pair_accuracy(loaded.module, loaded.variables, head, windows)
  print(f"\nPair accuracy on held-out speakers: {100 * acc['pair_acc']:.1f}% of "
        f"{acc['pairs']} pairs, AUC {acc['auc']:.3f} (mean cos in sync "
        f"{acc['cos_in_sync']:.3f}, off sync {acc['cos_off_sync']:.3f}); "
        f"{time.time() - t0:.0f} s in all")
  if a.json:
    out = {"model": path, "clips": [c.name for c in scored], "pair_accuracy": acc,
           "offset_recovery": {name: {key: {str(k): v for k, v in r[key].items()}
                                      for key in ("rate", "rate_relative", "offsets")}
                               for name, r in results.items()}}
    pathlib.Path(a.json).write_text(json.dumps(out, indent=1))
  return 0


if __name__ == "__main__":
  sys.exit(main())
