"""The energy judge (`evaluation.energy_judge`): lip opening vs audio energy, no learned weights."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lipsync_jax.evaluation import energy_judge
from lipsync_jax.evaluation import evaluate
from lipsync_jax.evaluation import metrics
from lipsync_jax.evaluation import report as report_lib
from lipsync_jax.vision import lip_landmarks

FPS = 25.0
HOP = int(energy_judge.SAMPLE_RATE / FPS)   # 640 samples a frame


def _envelope(n: int, seed: int) -> np.ndarray:
  """A smooth random log-energy series, (n,)."""
  x = np.random.default_rng(seed).normal(size=n + 4)
  return np.convolve(x, np.ones(5) / 5, mode="valid")


def _wav_with_log_rms(log_rms: np.ndarray) -> np.ndarray:
  """A waveform whose 40 ms RMS centred on frame t is exactly exp(log_rms[t]):
  a +-1 carrier at the sample rate, each frame's amplitude over the 640
  samples centred on the frame's time (frame 0's first half is cut off)."""
  amp = np.repeat(np.exp(log_rms), HOP)[HOP // 2:]
  return (amp * np.where(np.arange(amp.size) % 2 == 0, 1.0, -1.0)).astype(np.float32)


def _lips_with_gap(gap: np.ndarray) -> np.ndarray:
  """(T, 40, 2) lips whose inner-lip opening is `gap`."""
  lips = np.full((gap.size, lip_landmarks.NUM_LIP_POINTS, 2), 0.5, np.float32)
  lips[:, lip_landmarks.INNER_LOWER, 1] += gap
  return lips


def test_log_rms_energy_is_the_log_of_the_window_rms():
  e = _envelope(60, seed=0)
  wav = _wav_with_log_rms(e)
  energy, inside = energy_judge.log_rms_energy(wav, 60)
  assert not inside[0] and inside[1:-1].all()   # frame 0's window starts before the audio
  np.testing.assert_allclose(energy[1:-1], e[1:-1], atol=1e-4)
  # first_frame moves the frames along the audio; windows past the end are invalid.
  energy2, inside2 = energy_judge.log_rms_energy(wav, 10, first_frame=55)
  np.testing.assert_allclose(energy2[:4], e[55:59], atol=1e-4)
  assert inside2[:4].all() and not inside2[5:].any()


@pytest.mark.parametrize("k", [-6, -3, 0, 2, 5])
def test_known_lag_is_found_with_its_sign(k):
  """The lips follow the energy series; the audio is delayed by k frames
  (advanced for k < 0): the best lag is k (+ = audio lags video, as
  `metrics` reports `offset`) and r is ~1."""
  t, first = 200, 12
  e = _envelope(t + 40, seed=1)              # energy of the sound the mouth makes
  audio_log_rms = np.roll(e, k)              # heard k frames later
  gap = 0.05 + 0.01 * e[first:first + t]     # the mouth opens as the energy rises
  res = energy_judge.lip_energy_lag(_lips_with_gap(gap), np.ones(t, bool),
                                    _wav_with_log_rms(audio_log_rms), first_frame=first)
  assert res.best_lag == k
  assert res.r_best > 0.99
  assert res.lags.tolist() == list(range(-8, 9)) and res.curve.shape == (17,)
  assert res.r_zero == pytest.approx(res.curve[8])
  assert np.nanmax(np.abs(np.delete(res.curve, k + 8))) < 0.9   # a sharp peak
  # A (T,) opening series gives the same result as the lips it came from.
  same = energy_judge.lip_energy_lag(gap, np.ones(t, bool), _wav_with_log_rms(audio_log_rms),
                                     first_frame=first)
  np.testing.assert_allclose(same.curve, res.curve, atol=1e-4)   # lips are float32


def test_invalid_frames_are_dropped():
  t, k = 200, 3
  e = _envelope(t + 20, seed=2)
  gap = 0.05 + 0.01 * e[:t]
  valid = np.ones(t, bool)
  valid[40:60] = False
  gap[40:60] = 5.0                           # garbage where FaceMesh saw no face
  res = energy_judge.lip_energy_lag(gap, valid, _wav_with_log_rms(np.roll(e, k)))
  assert res.best_lag == k and res.r_best > 0.99
  assert res.pairs[k + 8] <= t - 1 - 21      # the pairs touching frames 40..59 are left out


def test_unrelated_lips_give_a_low_r():
  t = 300
  e = _envelope(t + 20, seed=3)
  wav = _wav_with_log_rms(e)
  gap = 0.05 + 0.01 * np.random.default_rng(4).permutation(e[:t])
  res = energy_judge.lip_energy_lag(gap, np.ones(t, bool), wav)
  assert np.nanmax(np.abs(res.curve)) < 0.25
  noise = 0.05 + 0.01 * np.random.default_rng(5).normal(size=t)
  assert energy_judge.lip_energy_lag(noise, np.ones(t, bool), wav).r_best < 0.25


def test_too_few_valid_pairs_is_a_one_line_error():
  t = 100
  e = _envelope(t, seed=6)
  valid = np.zeros(t, bool)
  valid[::2] = True                          # no two consecutive valid frames
  with pytest.raises(energy_judge.JudgeError, match=r"^0 lip difference pairs .*\(< 20\)$"):
    energy_judge.lip_energy_lag(e, valid, _wav_with_log_rms(e))
  assert issubclass(energy_judge.JudgeError, ValueError)


def test_report_carries_the_judge():
  """build_report/markdown: per-clip judge_lag/judge_r, the share within +-1
  of 0 and of the source clips' lags (no FaceMesh needed)."""
  def clip(name, lag, ref, frames=75):
    sync = metrics.SyncResult("s", 1.0, 0.1, 0, np.zeros(31), np.zeros(5))
    curve = np.linspace(-0.2, 0.3, 17)
    ce = evaluate.ClipEval(name, frames, 0, sync,
                           judge=energy_judge.LagResult(lag, 0.3, 0.1, np.arange(-8, 9), curve,
                                                        np.full(17, 70)),
                           judge_reference_lag=ref)
    return ce
  clips = [clip("a.mp4", 0, 0), clip("b.mp4", 5, 5), clip("c.mp4", -1, 4, frames=300)]
  clips.append(evaluate.ClipEval("d.mp4", 75, 0, clips[0].sync, judge_error="energy judge: x"))
  rep = evaluate.build_report(clips, [], "s", "videos", {}, ["lse_d", "lse_c"])
  rep = json.loads(json.dumps(rep))
  assert rep["aggregate"]["judge_lag_within1"] == {"share": 2 / 3, "hits": 2, "n": 3}
  assert rep["aggregate"]["judge_lag_within1_of_reference"] == {"share": 2 / 3, "hits": 2,
                                                                "n": 3}
  assert rep["clips"][1]["judge_lag"] == 5 and rep["clips"][1]["judge_r"] == 0.3
  assert rep["clips"][3]["judge_lag"] is None and "judge_lag" in rep["definitions"]
  md = report_lib.markdown(rep)
  assert "| judge lag | judge r |" in md and "| 5 (source 5) | 0.30 |" in md
  assert "within +-1 frame of 0 on 2 of 3 clips (67%)" in md
  # Short clips are flagged: a, b (75 frames), not c (300) nor unjudged d.
  assert rep["aggregate"]["judge_short_clips"] == {"n": 2, "of": 3, "frames": 250}
  assert "2 of these 3 clips have fewer than 250 frames" in md
  long_only = evaluate.build_report([clips[2]], [], "s", "videos", {}, ["lse_d"])
  assert "fewer than" not in report_lib.markdown(json.loads(json.dumps(long_only)))
  # Without the judge nothing changes.
  plain = evaluate.build_report([evaluate.ClipEval("a", 75, 0, clips[0].sync)], [], "s",
                                "videos", {}, ["lse_d"])
  assert "judge_lag_within1" not in plain["aggregate"]
  assert "judge" not in report_lib.markdown(plain)


# -----------------------------------------------------------------------------
# Real footage (../shared).
# -----------------------------------------------------------------------------

GRID_CLIP = "sgbj3a.mp4"   # GRID s1: judge lag 0 unshifted, +5/-5 with the audio shifted


def test_real_grid_clip_in_sync_and_shifted(shared_dir):
  """On a GRID s1 clip the judge finds lag 0 (+-1), and delaying the audio by
  5 frames (lip_sync_lib.shift_waveform, the shift the scorer tests use)
  moves it by +5 (+-1); advancing it, by -5."""
  from lipsync_jax.train import lip_sync_lib
  c = lip_landmarks.extract_clip(shared_dir / "data" / "grid_s1" / "video" / GRID_CLIP,
                                 keep_crops=False)

  def lag(shift):
    wav = lip_sync_lib.shift_waveform(c.wav, shift, c.fps)
    return energy_judge.lip_energy_lag(c.lips, c.valid, wav, c.first_frame, c.fps)

  base = lag(0)
  assert abs(base.best_lag) <= 1 and base.r_best > 0.2, base
  assert abs(lag(5).best_lag - base.best_lag - 5) <= 1
  assert abs(lag(-5).best_lag - base.best_lag + 5) <= 1

  # The built-in scorer's offset moves the same way: one sign convention.
  scorer = metrics.load_builtin_scorer()
  v = scorer.embed_video(scorer.lip_video_windows(c.lips, c.valid))

  def offset(shift):
    audio = metrics.ClipAudio(wav=lip_sync_lib.shift_waveform(c.wav, shift, c.fps))
    a = scorer.embed_audio(scorer.audio_windows(audio, c.first_frame + np.arange(len(v)),
                                                c.fps))
    return metrics.lse_from_embeddings(v, a, padding="exclude").offset

  assert abs(offset(5) - offset(0) - 5) <= 1


def test_evaluate_videos_reports_the_judge(shared_dir, tmp_path, capsys):
  """`evaluate --videos` with the built-in scorer: judge columns in
  report.json and report.md, and the share against --reference-videos."""
  vids, refs = tmp_path / "videos", tmp_path / "sources"
  vids.mkdir()
  refs.mkdir()
  src = shared_dir / "data" / "grid_s1" / "video" / GRID_CLIP
  (vids / "talk.mp4").symlink_to(src)
  (refs / "talk.mp4").symlink_to(src)
  out = tmp_path / "report"
  rc = evaluate.main(["--videos", str(vids), "--reference-videos", str(refs),
                      "--out", str(out), "--quiet"])
  assert rc == 0, capsys.readouterr().err
  rep = json.loads((out / "report.json").read_text())
  c = rep["clips"][0]
  assert abs(c["judge_lag"]) <= 1 and c["judge_r"] > 0.2 and len(c["judge_curve"]) == 17
  assert c["judge_reference_lag"] == c["judge_lag"]
  assert rep["aggregate"]["judge_lag_within1"]["hits"] == 1
  assert rep["aggregate"]["judge_lag_within1_of_reference"]["share"] == 1.0
  assert abs(c["offset"]) <= 1                # the scorer, unchanged beside it
  md = (out / "report.md").read_text()
  assert "judge lag" in md and "of its source clip's judge lag on 1 of 1" in md
