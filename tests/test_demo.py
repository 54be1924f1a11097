"""The synthetic talking-face generator and the demo's command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lipsync_jax import demo
from lipsync_jax.data import synthetic
from lipsync_jax.evaluation import metrics


# -----------------------------------------------------------------------------
# synthetic.py (fast).
# -----------------------------------------------------------------------------

def test_mouth_track_follows_phoneme_segments():
  # 8 frames of /m/, 8 of /a/, 8 of /p/, 8 of /a:/ at 25 fps.
  seg = 8 / synthetic.FPS
  speech = synthetic.Speech(np.zeros(16000, np.float32), (
      (0.0, seg, "m"), (seg, 2 * seg, "a"), (2 * seg, 3 * seg, "p"),
      (3 * seg, 4 * seg, "'a:")))
  track = synthetic.mouth_track(speech, 32)
  opening = track[:, 0]
  # Away from the boundaries (coarticulation spans one frame each side).
  assert np.all(opening[1:7] < 0.05)
  assert np.all(opening[17:23] < 0.05)
  assert np.all(opening[9:15] > 0.9)
  assert np.all(opening[25:31] > 0.9)


@pytest.mark.slow  # compile-heavy: kept out of the fast loop
def test_mouth_track_of_real_speech_opens_on_vowels_closes_on_bilabials():
  speech = synthetic.synthesize("papa bob, mama", voice="en-us", rate=120)
  n = int(round(speech.duration * synthetic.FPS))
  opening = synthetic.mouth_track(speech, n)[:, 0]

  def frames_of(symbols):
    out = []
    for start, end, sym in speech.phonemes:
      if sym.strip("',%=_:!") in symbols:
        first, last = int(start * synthetic.FPS), int(np.ceil(end * synthetic.FPS))
        out.append(opening[first:max(last, first + 1)])
    return out

  bilabial = frames_of({"p", "b", "m"})
  vowels = frames_of({"a", "A", "0", "V", "aa"})
  assert len(bilabial) >= 5 and len(vowels) >= 3, speech.phonemes
  # Every closure reaches a nearly closed mouth; every open vowel opens wide.
  assert max(seg.min() for seg in bilabial) < 0.3
  assert min(seg.max() for seg in vowels) > 0.8


def test_clips_are_deterministic_for_a_seed():
  a = synthetic.make_clip(7, identity=1, num_phrases=1, out_size=64)
  b = synthetic.make_clip(7, identity=1, num_phrases=1, out_size=64)
  c = synthetic.make_clip(8, identity=1, num_phrases=1, out_size=64)
  assert a.text == b.text and a.voice == b.voice and a.identity == b.identity
  # eSpeak NG carries state between utterances: a few samples of timing.
  assert a.frames.shape == b.frames.shape
  assert abs(len(a.wav) - len(b.wav)) < 16
  np.testing.assert_allclose(a.mouth, b.mouth, atol=0.05)
  assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 0.5
  assert a.frames.shape[1:] == (64, 64, 3) and a.frames.dtype == np.uint8
  assert len(a.frames) == int(round(len(a.wav) / synthetic.SAMPLE_RATE * synthetic.FPS))
  assert a.text != c.text or not np.array_equal(a.wav, c.wav)


def test_render_clip_same_motion_differs_only_in_the_mouth():
  x = synthetic.render_clip("bin blue at a now", 2, motion_seed=5, out_size=128)
  y = synthetic.render_clip("set red by z soon", 2, motion_seed=5, out_size=128)
  n = min(len(x.frames), len(y.frames))
  diff = np.abs(x.frames[:n].astype(int) - y.frames[:n].astype(int)).sum(-1)
  rows = diff.sum(2)   # (T, H): per frame and row
  mouth_rows = rows[:, 64:110].sum()
  assert mouth_rows > 0
  assert mouth_rows / max(rows.sum(), 1) > 0.9   # differences sit in the mouth rows


def test_lip_mask_marks_the_lip_ring_and_scores_colour():
  clip = synthetic.render_clip("bin blue at a now", 3, motion_seed=5, out_size=128,
                               lip_mask=True)
  mask = clip.lip_mask
  assert mask.shape == clip.frames.shape[:3] and mask.dtype == bool
  assert mask.any(axis=(1, 2)).all()            # lips in every frame
  rows = np.nonzero(mask.any(axis=(0, 2)))[0]
  assert rows.min() > 64 and rows.max() < 120   # in the mouth rows only
  lips = clip.frames[mask].astype(float).mean(axis=0)
  assert lips[2] > lips[0] + 40 and lips[2] > lips[1] + 40   # red (BGR)
  score = metrics.masked_lab_distance(clip.frames, clip.frames, mask)
  assert score["lab_distance"] == 0 and score["mean_colour_lab_distance"] == 0
  grey = np.full_like(clip.frames, 128)
  score = metrics.masked_lab_distance(grey, clip.frames, mask)
  assert score["lab_distance"] > 30 and score["mean_bgr"] == [128.0, 128.0, 128.0]
  with pytest.raises(metrics.MetricError, match="no pixel"):
    metrics.masked_lab_distance(grey, clip.frames, np.zeros_like(mask))


def test_laplacian_variance_is_lower_for_a_blurred_mouth():
  import cv2
  clip = synthetic.render_clip("bin blue at a now", 3, motion_seed=5, out_size=192)
  frames = clip.frames[:4]
  blurred = np.stack([cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames])
  sharp, soft = metrics.laplacian_variance(frames), metrics.laplacian_variance(blurred)
  assert sharp.shape == (4,) and np.all(soft < 0.5 * sharp)


def test_chroma_noise_flags_a_dotted_colour_pattern_not_brightness_edges():
  clip = synthetic.render_clip("bin blue at a now", 3, motion_seed=5, out_size=192)
  frames = clip.frames[:4].astype(np.int16)
  clean = metrics.chroma_noise(clip.frames[:4])
  # A 3-px cyan/red checkerboard over the lower face (what a sync gradient
  # through the transposed convolutions drew in issue 18), +-24 per channel.
  yy, xx = np.mgrid[:192, :192]
  board = np.where(((yy // 3) + (xx // 3)) % 2 == 0, 1, -1)[None, :, :, None]
  board = board * np.array([24, 24, -24])                     # BGR: cyan vs red
  dotted = frames.copy()
  dotted[:, 110:170, 50:140] += board[:, 110:170, 50:140]
  # The same amplitude as a grey (brightness-only) pattern.
  grey = frames.copy()
  grey[:, 110:170, 50:140] += board[:, 110:170, 50:140, :1]    # +-24 on B, G and R
  to_u8 = lambda x: np.clip(x, 0, 255).astype(np.uint8)
  dotted_score = metrics.chroma_noise(to_u8(dotted))
  grey_score = metrics.chroma_noise(to_u8(grey))
  assert clean.shape == (4,) and np.all(clean < 5)
  assert np.all(dotted_score > 5 * clean)
  assert np.all(grey_score < clean + 1)   # brightness edges barely count


def test_cli_bad_face_size_is_one_line_and_writes_nothing(tmp_path, capsys):
  assert demo.main(["--workdir", str(tmp_path / "d"), "--face-size", "100",
                    "--no-progress", "--no-cache"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "--face-size must be one of (96, 192, 256)" in err[0]
  assert not (tmp_path / "d").exists()


def test_cli_refuses_a_non_empty_foreign_workdir(tmp_path, capsys):
  (tmp_path / "precious.txt").write_text("keep me")
  assert demo.main(["--workdir", str(tmp_path), "--force", "--no-progress"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: ") and "refusing" in err[0]
  assert (tmp_path / "precious.txt").exists()


def test_stage_estimate_spreads_the_probe_over_the_run():
  import ml_collections
  config = ml_collections.ConfigDict({"num_steps": 100, "eval_every": 50, "eval_batches": 4,
                                      "eval_at_start": True, "checkpoint_every": 100})
  probe = {"setup": 2.0, "compile": 30.0, "step": 0.5, "eval_compile": 10.0,
           "eval_batch": 0.25, "export": 0.1}
  # 3 evaluations (start, 50, 100) of 4 batches; 1 + 2 saves, each with 2 exports.
  fixed = 2.0 + 3 * 4 * 0.25 + 3 * (demo._SAVE_S + 2 * 0.1)  # pylint: disable=protected-access
  cold = demo._stage_estimate(config, probe, cached=False)  # pylint: disable=protected-access
  assert cold["steps"] == 100 and cold["step_s"] == 0.5
  assert cold["fixed_s"] == pytest.approx(fixed + 40.0, abs=0.05)
  assert cold["total_s"] == pytest.approx(fixed + 40.0 + 50.0, abs=0.1)
  # With the compilation cache the stage loads what the probe compiled.
  warm = demo._stage_estimate(config, probe, cached=True)  # pylint: disable=protected-access
  loads = 2 * demo._CACHED_LOAD_S  # pylint: disable=protected-access
  assert warm["total_s"] == pytest.approx(cold["total_s"] - 40.0 + loads, abs=0.1)


def test_summary_prints_the_estimate_beside_the_actual_time_and_the_lip_colour_target():
  colour = lambda mean, pixel: {"lip_mean_colour_lab_distance": mean, "lip_lab_distance": pixel}
  summary = {
      "timings_s": {"synthesize": 10.0, "expert": 100.0, "generator": 200.0, "total": 400.0},
      "estimate": {"expert": {"total_s": 90.0}, "generator": {"total_s": 230.0},
                   "total_s": 420.0},
      "expert": {"step": 50, "step_time_s": 1.8}, "generator": {"step": 20, "step_time_s": 9.5},
      "mouth": {"before": colour(58.5, 62.0), "after": colour(13.0, 34.2),
                "input": colour(15.4, 35.9)},
      "machine": {"cpu": "Some CPU", "cores": 2, "avx512": True, "load_avg": [0.5, 0, 0]}}
  text = demo.format_table(summary)
  assert "expert         100.0 s  (estimated 90 s, -10%; 50 steps, 1.800 s a step)" in text
  assert "generator      200.0 s  (estimated 230 s, +15%;" in text
  assert "total          400.0 s  (estimated 420 s, +5%)" in text
  assert "synthesize      10.0 s\n" in text
  assert ("lip colour vs ground truth (mean-colour Lab distance on the truth's lip pixels, "
          "target <= 15), init -> trained: 58.5 -> 13.0 (met); the input face's own lips "
          "(the truth's colour, other words): 15.4") in text
  summary["mouth"]["after"] = colour(16.0, 30.0)
  assert "58.5 -> 16.0 (not met)" in demo.format_table(summary)
  line = demo.format_estimate({"total_s": 600.0, "before_training_s": 40.0,
                               "expert": {"steps": 200, "step_s": 0.34, "fixed_s": 12.0},
                               "generator": {"steps": 160, "step_s": 1.07, "fixed_s": 30.0},
                               "after_training_s": 20.0}, summary["machine"])
  assert line.startswith("estimated 10.0 min for the whole demo on Some CPU, 2 cores, AVX-512")


@pytest.mark.slow
def test_quick_demo_end_to_end(tmp_path):
  """The reduced demo (`--quick`): synthetic data -> data_prep -> expert ->
  generator -> lip-sync -> scores -> outputs, through the real code paths."""
  from lipsync_jax.io import audio as audio_lib
  from lipsync_jax.io import video as video_lib

  workdir = tmp_path / "demo"
  # Run as a user does: the command line, on this machine's one CPU device
  # (the test session simulates 8, which the demo would round its batches to).
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
      [sys.executable, "-m", "lipsync_jax.demo", "--workdir", str(workdir), "--quick",
       "--seed", "0", "--no-progress"],
      env=env, capture_output=True, text=True, timeout=3600, check=False)  # hangs only
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "expert val accuracy" in proc.stdout and "LSE-D" in proc.stdout
  summary = json.loads((workdir / "demo_summary.json").read_text())

  # The expert beats chance (50%) by a clear margin on the held-out identity.
  assert summary["expert_val_accuracy"] > 0.6, summary["expert"]
  # Training moved the generator towards the held-out identity's speech: on
  # the same val windows, the expert's sync loss of the generated mouths is
  # lower than the initial weights', and so is L1. (LSE-D of the one held-out
  # video needs the full demo's data and expert to move past seed noise; the
  # README reports it over 3 seeds.)
  gen = summary["generator"]
  assert gen["final_eval"]["sync"] < gen["initial_eval"]["sync"], gen
  assert gen["final_eval"]["l1"] < gen["initial_eval"]["l1"], gen
  assert "sync loss" in proc.stdout
  # The trained mouth looks more like the truth than the initial one, and
  # the summary says on what machine, at what cost a step.
  mouth = summary["mouth"]
  assert mouth["after"]["mouth_lpips"] < mouth["before"]["mouth_lpips"], mouth
  # The lip colour: training at least halves the mean-colour distance on the
  # truth's lip pixels. Whether it reaches the demo's target depends on the
  # CPU's float rounding over 2 minutes of training: seed 0 went 59.9 -> 12.4
  # (met) on an AVX-512 EPYC (2026-12-04) and 59.9 -> 20.8 (not met) on an
  # AVX2-only one (2026-12-07), the same commit; the input's own lips read
  # 14.6 on both. So the target is reported (met or not), not asserted. The
  # per-pixel distance also counts the mouth's shape, which real lips saying
  # other words miss too (docs/demo.md), so it is reported, not checked.
  key = "lip_mean_colour_lab_distance"
  assert mouth["after"][key] <= 0.5 * mouth["before"][key], mouth
  met = "met" if mouth["after"][key] <= demo.LIP_COLOUR_TARGET else "not met"
  assert f"-> {mouth['after'][key]:.1f} ({met})" in proc.stdout
  assert "lip colour" in proc.stdout and "target <= 15" in proc.stdout
  assert "machine:" in proc.stdout
  # The input face's own lips are the reference: the truth's colour (closer in
  # mean colour than the untrained mouth), the shape of other words.
  assert mouth["input"][key] < mouth["before"][key], mouth
  assert "input face's own lips" in proc.stdout
  # The estimate: printed before training with the machine's name, and beside
  # the actual time in the summary. (It came within 20% on an idle 2-core
  # AVX-512 EPYC; how close it comes here depends on what else the machine
  # runs, so no test checks that: the estimate's arithmetic is checked above.)
  est = summary["estimate"]
  assert "estimated" in proc.stderr and summary["machine"]["cpu"] in proc.stderr
  assert proc.stderr.index("estimated") < proc.stderr.index("== expert")
  assert "(estimated" in proc.stdout
  assert est["total_s"] > 0 and summary["timings_s"]["total"] > 0, (est, summary["timings_s"])
  # The mouth region at the video's resolution: reconstruction and sharpness.
  assert mouth["after"]["mouth_region_psnr"] > 0 and 0 < mouth["after"]["mouth_region_ssim"] <= 1
  assert mouth["after"]["mouth_sharpness"] > 0 and mouth["ground_truth"]["mouth_sharpness"] > 0
  # No striped or dotted colour pattern on the mouth: its colour speckle is
  # within twice the truth's. (Measured, seed 0: the truth 3.9, a clean mouth
  # 3.5, the striped mouths that sync weights 0.2-0.3 drew 18-28.)
  assert "colour speckle" in proc.stdout
  assert mouth["after"]["mouth_chroma_noise"] < 2 * mouth["ground_truth"]["mouth_chroma_noise"], \
      mouth
  assert summary["face_size"] == 96 and "mouth region at 96 px" in proc.stdout
  assert summary["machine"]["cores"] >= 1 and summary["machine"]["cpu"]
  for stage in ("expert", "generator"):
    assert 0 < summary[stage]["step_time_s"] < summary[stage]["wall_time_s"], summary[stage]
  scores = summary["sync"]["scores"]
  # The ground truth is in sync at offset 0 for the expert that scores it.
  assert all(abs(v["offset"]) <= 1 for v in scores["ground_truth"]["per_video"]), scores

  # demo.mp4: video + audio streams, as long as the held-out speech.
  out = workdir / "demo.mp4"
  info = video_lib.probe(str(out))
  speech = workdir / "heldout" / "pair0" / "speech.wav"
  seconds = len(audio_lib.load_audio(str(speech))) / audio_lib.SAMPLE_RATE
  assert info.has_audio
  assert info.width == 3 * info.height
  assert abs(info.num_frames / info.fps - seconds) < 0.1
  assert len(audio_lib.load_audio(str(out))) / audio_lib.SAMPLE_RATE == \
      pytest.approx(seconds, abs=0.1)
  for name in ("loss_curves.png", "mouth_grid.png"):
    assert (workdir / "report" / name).stat().st_size > 1000
