"""The two-stage model (the built-in one) in the streaming engine.

Its stage 1 runs per micro-batch as each frame's mel context completes
(`StreamLips`; with `--lip-smoothing` its [1, 2, 1] smoothing holds each
frame back one frame), so a stream gives the offline run's frames. The
model tests use the shipped model on a real face (a VoxCeleb2 frame, and 10
frames of the clip) from ../shared and real speech; no timing is asserted.
"""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lipsync_jax.inference import stream as stream_lib
from lipsync_jax.inference import two_stage as two_stage_syncer

from test_inference import CLIP, SPEECH, _infer_module, _reuse
from test_stream import _max_diff, _offline, _push_all, _wav_file

FPS = 25.0


# -----------------------------------------------------------------------------
# Without the model.
# -----------------------------------------------------------------------------

def test_lip_smoothing_in_pieces_is_the_whole_track_smoothed():
  rng = np.random.default_rng(0)
  track = rng.normal(size=(9, 40, 2)).astype(np.float32)
  padded = np.concatenate([track[:1], track, track[-1:]])  # the ends repeated
  want = 0.25 * padded[:-2] + 0.5 * padded[1:-1] + 0.25 * padded[2:]
  for sizes in ([9], [1] * 9, [1, 2, 1, 5], [4, 5]):
    smoother, got, pos = two_stage_syncer.LipSmoother(), [], 0
    for k in sizes:
      got.append(smoother.push(track[pos:pos + k]))
      pos += k
      # Every frame but the newest is out: its lips need the next frame's.
      assert sum(map(len, got)) == pos - 1
    got.append(smoother.finish())
    np.testing.assert_array_equal(np.concatenate(got), want)
  one = two_stage_syncer.LipSmoother()
  assert len(one.push(track[:1])) == 0
  np.testing.assert_array_equal(one.finish(), track[:1])   # one frame: itself
  assert len(one.finish()) == 0   # finish starts a new track


def test_lip_smoothing_off_passes_every_frame_at_once():
  rng = np.random.default_rng(0)
  track = rng.normal(size=(9, 40, 2)).astype(np.float32)
  smoother = two_stage_syncer.LipSmoother(enabled=False)
  np.testing.assert_array_equal(smoother.push(track[:4]), track[:4])   # nothing held back
  np.testing.assert_array_equal(smoother.push(track[4:]), track[4:])
  assert len(smoother.finish()) == 0


def test_two_stage_lookahead_with_lip_smoothing_is_one_frame_more_than_wav2lips():
  # With --lip-smoothing, frame i waits for frame i + 1's window: 640
  # samples more at worst. Without it, Wav2Lip's look-ahead.
  assert stream_lib.lookahead_seconds(FPS, extra_frames=1) == 4041 / 16000
  assert stream_lib.lookahead_seconds(FPS) == 3401 / 16000


# -----------------------------------------------------------------------------
# The built-in model.
# -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
  return tmp_path_factory.mktemp("stream_two_stage")


@pytest.fixture(scope="module")
def builtin(tmp):
  """The shipped two-stage model at batch 1, as `infer.py --stream` and the
  live page load it."""
  from lipsync_jax import inference
  return inference.load_syncer("builtin", batch_size=1, cache_dir=str(tmp / "boxes"))


@pytest.fixture(scope="module")
def real_faces(shared_dir, tmp) -> dict[str, str]:
  """Frame 10 of the VoxCeleb2 clip as a photo, and its first 10 frames
  (played back and forth)."""
  import cv2
  from lipsync_jax.io import video
  frames = [f for _, f in zip(range(11), video.iter_frames(shared_dir / CLIP))]
  cv2.imwrite(str(tmp / "face.png"), frames[10])
  video.write_video(tmp / "face.mp4", frames[:10], FPS)
  return {"photo": str(tmp / "face.png"), "video": str(tmp / "face.mp4")}


@pytest.fixture(scope="module")
def speech(shared_dir) -> np.ndarray:
  """2 s of LibriVox speech, int16 16 kHz."""
  pcm, rate = sf.read(shared_dir / SPEECH, dtype="int16")
  assert rate == 16000
  return pcm[:32000]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["photo", "video"])
def test_builtin_model_streams_its_offline_frames(builtin, real_faces, speech, tmp,
                                                  monkeypatch, kind):
  """Random chunk sizes, no clock: the frames are `run`'s for the same audio
  (stage 1 at another batch size: within 1 uint8 level)."""
  offline = _offline(builtin, real_faces[kind], speech, tmp, monkeypatch)
  with builtin.stream(real_faces[kind]) as session:
    frames = _push_all(session, speech, np.random.default_rng(1).integers(1, 2000, 50))
    again = _push_all(session, speech, [320])
  assert len(frames) == len(offline) == 50 and all(f.face for f in frames)
  assert [f.index for f in frames] == list(range(50))
  assert _max_diff([f.image for f in frames], offline) <= 1
  assert _max_diff([f.image for f in again], [f.image for f in frames]) <= 1
  np.testing.assert_array_equal(np.concatenate([f.audio for f in frames]), speech / 32768.0)
  diff = np.mean([np.abs(f.image.astype(float) - o).mean() for f, o in zip(frames, offline)])
  print(f"\n{kind}: streamed vs offline, mean abs diff {diff:.2g} levels")
  assert diff < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("smoothing", [False, True])
def test_builtin_model_frames_wait_for_their_window_and_silence_is_a_still_closed_mouth(
    builtin, real_faces, speech, monkeypatch, smoothing):
  """20 ms chunks of 1 s of speech then 2 s of digital silence: frame i is
  out once its mel window is complete (with lip smoothing, frame i + 1's);
  in the silence the lips the renderer gets stay at the face's rest shape
  (the inner lips closed as at rest) and the mouth does not move, while in
  the speech it does."""
  import dataclasses
  from lipsync_jax.vision import lip_landmarks
  monkeypatch.setattr(builtin, "options",
                      dataclasses.replace(builtin.options, lip_smoothing=smoothing))
  wait = int(smoothing)
  pcm = np.concatenate([speech[:16000], np.zeros(32000, np.int16)])
  rows = []
  generate = builtin.generate_faces

  def recording(windows, crops=None, feats=None):
    rows.extend(np.asarray(windows)[:, :80].reshape(-1, 40, 2))   # then the reference
    return generate(windows, crops, feats)

  monkeypatch.setattr(builtin, "generate_faces", recording)
  with builtin.stream(real_faces["photo"]) as session:
    rest = session._lips.neutral[0]  # pylint: disable=protected-access
    rows.clear()  # the warm-up's
    got = []
    for end in range(320, len(pcm) + 1, 320):
      got += [(f, end) for f in session.push(pcm[end - 320:end])]
    tail = session.end()
  for f, end in got:  # frame k's window reaches sample 200 int(3.2 k) + 3400
    need = 200 * int(3.2 * (f.index + wait)) + 3400
    assert end - 320 <= need < end
  frames = [f for f, _ in got] + tail
  # Frames 70-74 need audio past the end (frame 69 too when it waits for 70).
  assert [f.index for f in frames] == list(range(75)) and len(tail) == 5 + wait
  lips = np.stack(rows)
  gap = lip_landmarks.inner_gap(lips) - lip_landmarks.inner_gap(rest[None])
  silent, spoken = slice(40, 70), slice(3, 22)   # past the 0.2 s context; before it
  images = np.stack([f.image for f in frames]).astype(float)
  change = np.abs(np.diff(images, axis=0)).mean(axis=(1, 2, 3))
  print(f"\ninner-lip gap (crop units): at rest {lip_landmarks.inner_gap(rest[None])[0]:.3f}; "
        f"minus that, speech {gap[spoken].min():.3f} to {gap[spoken].max():.3f}, silence {gap[silent].min():.4f} to "
        f"{gap[silent].max():.4f}; image change a frame: speech {change[spoken].mean():.3f}, "
        f"silence max {change[silent].max():.4f} levels")
  # Closed: no more open than the face at rest (the photo's own mouth may be ajar).
  assert gap[silent].max() < 0.005
  assert lip_landmarks.inner_gap(lips[silent]).max() < max(0.02, lip_landmarks.inner_gap(rest[None])[0])
  assert np.abs(np.diff(lips[silent], axis=0)).max() < 0.002
  assert np.ptp(gap[spoken]) > 0.01 and np.ptp(gap[silent]) < 0.1 * np.ptp(gap[spoken])
  assert change[silent].max() < 0.1 * change[spoken].mean()


@pytest.mark.slow
def test_cli_streams_the_builtin_model(builtin, real_faces, speech, tmp, monkeypatch, capsys):
  """`infer.py --stream --checkpoint builtin` (here reusing the compiled
  model) writes every frame and prints the latency and frame rate."""
  import av
  monkeypatch.chdir(tmp)
  out = tmp / "live.mp4"
  rc = _infer_module().main(["--stream", "--checkpoint", "builtin", "--face",
                             real_faces["video"], "--audio", _wav_file(tmp / "s.wav", speech),
                             "--outfile", str(out), "--pace", "0"], _reuse(builtin, []))
  captured = capsys.readouterr()
  print(captured.out)
  assert rc == 0, captured.err
  assert "latency p50" in captured.out  # drops are the busy machine's, not asserted
  with av.open(str(out)) as c:
    assert sum(1 for _ in c.decode(video=0)) == 50
