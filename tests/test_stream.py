"""The streaming engine (`inference.stream`) and `infer.py --stream`.

A tiny random-weight Wav2Lip stands in for a trained one, on synthetic faces
(random pixels, a fixed box: no detection) and synthetic speech-like audio:
the tests are about the engine (frames equal to the offline path's, chunking,
reuse, errors, gaps, drops, backends), not about how the mouth looks. No
timing is asserted: the realtime tests run on a fake clock.
"""

from __future__ import annotations

import io
import os
import sys

import av
import numpy as np
import pytest
import soundfile as sf

from lipsync_jax import inference
from lipsync_jax.inference import stream as stream_lib
from lipsync_jax.io import audio as audio_lib
from lipsync_jax.io import video

from test_inference import _infer_module, _reuse, _save

BOX = (20, 110, 20, 110)  # top bottom left right, inside the 128 px faces
FPS = 25.0


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
  return tmp_path_factory.mktemp("stream")


@pytest.fixture(scope="module")
def syncer(tmp) -> inference.LipSyncer:
  ckpt = _save(tmp / "wav2lip", "wav2lip", np.zeros((1, 80, 16, 1), np.float32),
               np.zeros((1, 96, 96, 6), np.float32))
  return inference.LipSyncer.from_checkpoint(ckpt, batch_size=2, box=BOX,
                                             cache_dir=str(tmp / "boxes"))


def _speech(seconds: float, seed: int) -> np.ndarray:
  """Speech-like int16 PCM at 16 kHz: noise under a syllable-rate envelope."""
  rng = np.random.default_rng(seed)
  n = int(seconds * 16000)
  env = np.sin(np.arange(n) / 16000 * np.pi * 4) ** 2
  return np.round(rng.normal(0, 6000, n) * env).clip(-32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def faces(tmp) -> dict[str, str]:
  """A 6-frame video (played back and forth) and a photo, random pixels."""
  rng = np.random.default_rng(0)
  frames = [rng.integers(0, 256, (128, 128, 3), np.uint8) for _ in range(6)]
  video.write_video(tmp / "face.mp4", frames, FPS)
  import cv2
  cv2.imwrite(str(tmp / "face.png"), frames[0])
  return {"video": str(tmp / "face.mp4"), "photo": str(tmp / "face.png")}


def _wav_file(path, pcm: np.ndarray) -> str:
  sf.write(str(path), pcm, 16000, subtype="PCM_16")
  return str(path)


def _offline(syncer, face, pcm, tmp, monkeypatch) -> list[np.ndarray]:
  """The frames `LipSyncer.run` makes for this audio, before encoding."""
  frames = []

  class Recorder:
    def __init__(self, *args, **kwargs):
      pass

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      pass

    def write(self, frame):
      frames.append(np.array(frame))

  with monkeypatch.context() as m:
    m.setattr(video, "VideoWriter", Recorder)
    syncer.run(face, _wav_file(tmp / "offline.wav", pcm), tmp / "unused.mp4")
  return frames


def _push_all(session, pcm, sizes) -> list[inference.StreamFrame]:
  out, pos, k = [], 0, 0
  while pos < len(pcm):
    size = int(sizes[k % len(sizes)])
    out += session.push(pcm[pos:pos + size])
    pos, k = pos + size, k + 1
  return out + session.end()


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> int:
  assert len(a) == len(b)
  return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b))


# -----------------------------------------------------------------------------
# The mel, exact.
# -----------------------------------------------------------------------------

def test_mel_stream_equals_the_offline_mel():
  rng = np.random.default_rng(1)
  wav = _speech(2.0, 1).astype(np.float32) / 32768
  for n in (len(wav), 1, 5, 399, 400, 401, 1234, 3401, 6000):
    ms = audio_lib.MelStream()
    cols, pos = [], 0
    while pos < n:
      k = int(rng.integers(1, 700))
      cols.append(ms.push(wav[pos:min(pos + k, n)]))
      pos += k
    # A column is returned only once it is final: sample 200 c + 400 is in.
    assert ms.columns == max(0, (n - 401) // 200 + 1)
    got = np.concatenate(cols + [ms.finish()], axis=1)
    want = audio_lib.melspectrogram(wav[:n])
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
  assert ms.samples == 0 and ms.columns == 0  # finish starts a new waveform


def test_lookahead_is_the_mel_windows_reach():
  # 16 columns from int(3.2 i), the last reaching 400 samples past its centre,
  # plus column 0's pad sample: 3401 samples past frame 0's timestamp.
  assert stream_lib.lookahead_seconds(FPS) == 3401 / 16000
  assert [stream_lib.frame_sample(i, FPS) for i in range(3)] == [0, 640, 1280]


# -----------------------------------------------------------------------------
# StreamSession: exact, clock-free.
# -----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["video", "photo"])
def test_frames_equal_the_offline_path(syncer, faces, tmp, monkeypatch, kind):
  pcm = _speech(2.3, 2)  # 57.5 -> 58 frames; the video ping-pongs 6 frames
  offline = _offline(syncer, faces[kind], pcm, tmp, monkeypatch)
  still_before = syncer.still_compilations
  with syncer.stream(faces[kind]) as session:
    frames = _push_all(session, pcm, np.random.default_rng(3).integers(1, 2000, 50))
  assert len(frames) == len(offline) == 58
  assert [f.index for f in frames] == list(range(58))
  assert [f.time for f in frames] == [i / FPS for i in range(58)]
  assert all(f.face for f in frames)
  assert _max_diff([f.image for f in frames], offline) <= 1
  # The audio passes through, aligned: 640 samples a frame, the rest on the last.
  assert all(len(f.audio) == 640 for f in frames[:-1])
  np.testing.assert_array_equal(np.concatenate([f.audio for f in frames]), pcm / 32768.0)
  if kind == "photo":  # the encoder ran once, the decoder per micro-batch
    assert syncer.still_compilations == max(still_before, 2)


def test_chunk_sizes_do_not_change_the_frames(syncer, faces):
  pcm = _speech(1.0, 4)
  with syncer.stream(faces["video"]) as session:
    sizes = ([1] * 400 + [1500], [320], [7, 1001, 3], [len(pcm)])  # single samples too
    runs = [_push_all(session, pcm, s) for s in sizes]
  for run in runs[1:]:
    assert [f.index for f in run] == [f.index for f in runs[0]]
    assert _max_diff([f.image for f in run], [f.image for f in runs[0]]) <= 1


def test_frames_come_as_soon_as_their_window_is_complete(syncer, faces):
  with syncer.stream(faces["photo"]) as session:
    pcm = _speech(1.0, 5)
    got = []
    for end in range(320, len(pcm) + 1, 320):  # 20 ms chunks
      got += [(f.index, end) for f in session.push(pcm[end - 320:end])]
    # Frame i needs sample 200 int(3.2 i) + 3400: the first chunk holding it.
    for i, end in got:
      need = 200 * int(3.2 * i) + 3400
      assert end - 320 <= need < end
    assert [i for i, _ in got] == list(range(len(got))) and len(got) == 20
    assert len(session.end()) == 5  # 25 frames in all: the tail waits for the end


def test_a_session_is_reused_without_recompiling(syncer, faces):
  a, b = _speech(1.0, 6), _speech(0.7, 7)
  with syncer.stream(faces["video"]) as session:
    compiled = syncer.compilations
    first = _push_all(session, a, [320])
    other = _push_all(session, b, [500])
    again = _push_all(session, a, [320])
  assert syncer.compilations == compiled
  assert [f.index for f in other] == list(range(18))  # each utterance starts at frame 0
  assert _max_diff([f.image for f in again], [f.image for f in first]) == 0


def test_bad_chunks_are_one_line_errors_and_the_session_goes_on(syncer, faces):
  pcm = _speech(0.6, 8)
  bad = [
      (pcm.astype(np.float64), "dtype float64"),
      (pcm.astype(np.int32), "dtype int32"),
      (np.stack([pcm, pcm], axis=1), "1 channel"),
      (pcm[None, None], "shape"),
      (np.array([0.1, np.nan], np.float32), "NaN"),
  ]
  with syncer.stream(faces["photo"]) as session:
    clean = _push_all(session, pcm, [320])
    out = []
    for j, k in enumerate(range(0, len(pcm), 320)):
      chunk, what = bad[j % len(bad)]
      for call, match in ((lambda: session.push(chunk), what),
                          (lambda: session.push(pcm[k:k + 320], sample_rate=44100), "44100 Hz")):
        with pytest.raises(inference.InferenceError, match=match) as e:
          call()
        assert "\n" not in str(e.value)
      out += session.push(pcm[k:k + 320], sample_rate=16000)
    out += session.end()
  assert _max_diff([f.image for f in out], [f.image for f in clean]) == 0


def test_stereo_sessions_average_the_channels(syncer, faces):
  pcm = _speech(0.5, 9)
  with syncer.stream(faces["photo"], channels=2) as session:
    stereo = _push_all(session, np.stack([pcm, pcm], axis=1), [333])
    with pytest.raises(inference.InferenceError, match="2 channel"):
      session.push(pcm)
  with syncer.stream(faces["photo"]) as session:
    mono = _push_all(session, pcm, [333])
  assert _max_diff([f.image for f in stereo], [f.image for f in mono]) == 0


def test_a_face_input_without_a_face_fails_before_streaming(syncer, tmp):
  import cv2
  blank = tmp / "blank.png"
  cv2.imwrite(str(blank), np.full((160, 160, 3), 128, np.uint8))
  video.write_video(tmp / "blank.mp4", [np.full((160, 160, 3), 128, np.uint8)] * 4, FPS)
  detecting = syncer.with_options(box=None)
  for face, what in ((blank, "no face found in image"), (tmp / "blank.mp4", "no face found in")):
    with pytest.raises(inference.InferenceError, match=what) as e:
      detecting.stream(face)
    assert "\n" not in str(e.value)


def test_a_model_whose_frames_need_more_than_a_window_does_not_stream(syncer, faces):
  import copy

  class TwoStageLike(type(syncer)):
    frames_from_mel_windows = inference.TwoStageSyncer.frames_from_mel_windows

    def generate_faces(self, windows, crops=None, feats=None):
      raise AssertionError("not reached")

  other = copy.copy(syncer)
  other.__class__ = TwoStageLike
  with pytest.raises(inference.InferenceError, match="does not stream yet"):
    other.stream(faces["photo"])


# -----------------------------------------------------------------------------
# RealtimeStream, on a fake clock.
# -----------------------------------------------------------------------------

class FakeClock:
  def __init__(self):
    self.now = 100.0

  def __call__(self) -> float:
    return self.now


def _realtime_run(rt, clock, pcm, chunk=320, gap_after=None, gap_seconds=0.0):
  """Pushes `pcm` as a microphone would on the fake clock (each chunk when
  its last sample is due; from sample `gap_after` on, `gap_seconds` later),
  stepping the engine between chunks, then ends the utterance."""
  t0, k, out = clock.now, 0, []

  def due(k):
    late = gap_seconds if gap_after is not None and k >= gap_after else 0.0
    return t0 + late + min(k + chunk, len(pcm)) / 16000

  while k < len(pcm):
    if due(k) <= clock.now + 1e-9:
      rt.push(pcm[k:k + chunk])
      k += chunk
      continue
    made = rt.step()
    out += made
    if not made:
      clock.now = min(due(k), clock.now + 0.02)
  rt.end()
  while not rt.idle:
    out += rt.step()
  return out


def test_a_gap_gives_silence_frames_and_keeps_time(syncer, faces):
  pcm = _speech(1.0, 10)
  clock = FakeClock()
  with syncer.stream(faces["photo"]) as session:
    rt = session.realtime(clock=clock, gap=0.2)
    frames = _realtime_run(rt, clock, pcm, gap_after=8000, gap_seconds=2.0)
    # The mouth that silence gives: a whole utterance of zeros.
    closed = session.push(np.zeros(16000, np.int16))[5].image
  n = len(frames)
  # Every slot is there, in order, on time: 0.5 s + the 2 s gap + 0.5 s.
  assert [f.index for f in frames] == list(range(n)) and abs(n - 75) <= 1
  assert [f.time for f in frames] == [i / FPS for i in range(n)]
  audio = np.concatenate([f.audio for f in frames])
  assert abs(len(audio) - 3 * 16000) <= 640
  silent = [f for f in frames if f.silence]
  assert 45 <= len(silent) <= 52 and not any(f.dropped for f in frames)
  assert all(not f.audio.any() for f in silent)
  # Frames whose whole window lies in the gap show the silence mouth.
  mid = [f for f in silent if 0.5 + 0.1 < f.time < 2.5 - 0.3]
  assert len(mid) > 30
  assert max(int(np.abs(f.image.astype(int) - closed.astype(int)).max()) for f in mid) <= 1
  stats = rt.stats()
  assert stats.frames == n and stats.dropped == 0 and stats.silence_frames == len(silent)
  assert stats.latency_p95 is not None and stats.audio_seconds == pytest.approx(3.0, abs=0.05)


def test_too_slow_drops_frames_but_keeps_every_slot_and_the_audio(syncer, faces):
  pcm = _speech(3.0, 11)
  clock = FakeClock()
  with syncer.stream(faces["photo"]) as session:
    real = session._render

    def slow(jobs):  # each micro-batch takes 0.5 s of the fake clock
      clock.now += 0.5
      return real(jobs)

    session._render = slow
    rt = session.realtime(clock=clock, max_latency=0.4)
    frames = _realtime_run(rt, clock, pcm)
  n = len(frames)
  assert [f.index for f in frames] == list(range(n)) and n == 75
  np.testing.assert_array_equal(np.concatenate([f.audio for f in frames]), pcm / 32768.0)
  dropped = [k for k, f in enumerate(frames) if f.dropped]
  made = n - len(dropped)
  assert 0 < len(dropped) < n and made >= session.batch_size
  for k in dropped:  # a dropped slot repeats the previous image
    if k:
      np.testing.assert_array_equal(frames[k].image, frames[k - 1].image)
  stats = rt.stats()
  assert stats.dropped == len(dropped) and stats.frames == n


def test_the_worker_thread_gives_the_offline_frames_when_it_keeps_up(syncer, faces):
  pcm = _speech(1.2, 12)
  with syncer.stream(faces["video"]) as session:
    sync = _push_all(session, pcm, [320])
    rt = session.realtime(max_latency=60.0).start()  # a busy CI machine: no drops
    feeder = stream_lib.Feeder(rt, stream_lib.wav_chunks(pcm, 320), pace=0)
    feeder.start()
    frames = list(rt.frames())
    feeder.join()
  assert feeder.error is None
  assert [f.index for f in frames] == list(range(len(sync)))
  assert not any(f.dropped for f in frames)
  assert _max_diff([f.image for f in frames], [f.image for f in sync]) == 0
  stats = rt.stats()
  assert stats.frames == len(sync) and stats.latency_p50 is not None


# -----------------------------------------------------------------------------
# onnxruntime, fp32 and INT8.
# -----------------------------------------------------------------------------

def test_onnxruntime_fp32_and_int8_stream_their_offline_frames(syncer, faces, tmp, monkeypatch):
  from lipsync_jax import checkpoint, export
  from lipsync_jax.export import int8
  loaded = checkpoint.load_model(tmp / "wav2lip")
  # The graph alone (test_export.py checks the export against JAX).
  fp32 = tmp / "g.onnx"
  fp32.write_bytes(export.generator_onnx(loaded.module, loaded.variables, loaded.arch,
                                         2).SerializeToString())
  rng = np.random.default_rng(13)
  calibration = [(rng.normal(-1, 1.5, (2, 80, 16, 1)).astype(np.float32),
                  export.faces_input(rng.integers(0, 256, (2, 96, 96, 3), np.uint8)))
                 for _ in range(2)]
  int8.quantize(fp32, tmp / "g.int8.onnx", calibration)
  pcm = _speech(1.0, 14)
  for path in (fp32, tmp / "g.int8.onnx"):
    ort = inference.LipSyncer.from_onnx(path, box=BOX)
    assert ort.backend == "onnxruntime" and ort.batch_size == 2
    offline = _offline(ort, faces["video"], pcm, tmp, monkeypatch)
    with ort.stream(faces["video"]) as session:
      frames = _push_all(session, pcm, [320, 77])
    assert _max_diff([f.image for f in frames], offline) <= 1


# -----------------------------------------------------------------------------
# infer.py --stream.
# -----------------------------------------------------------------------------

def _cli(syncer, argv) -> int:
  return _infer_module().main(["--stream", "--checkpoint", "unused", "--batch-size", "2",
                               "--box", *map(str, BOX), *argv], _reuse(syncer, []))


@pytest.fixture
def checkpoint_path(syncer, tmp, monkeypatch):
  """infer.py checks that --checkpoint exists before anything else."""
  monkeypatch.chdir(tmp)
  (tmp / "unused").mkdir(exist_ok=True)


def test_cli_streams_to_a_fragmented_mp4(syncer, faces, tmp, checkpoint_path, capsys):
  pcm = _speech(1.0, 15)
  out = tmp / "live.mp4"
  rc = _cli(syncer, ["--face", faces["video"], "--audio", _wav_file(tmp / "s.wav", pcm),
                     "--outfile", str(out), "--pace", "0", "--report", str(tmp / "r.json")])
  captured = capsys.readouterr()
  assert rc == 0, captured.err
  assert "latency p50" in captured.out and "0 dropped" in captured.out
  data = out.read_bytes()
  assert b"moof" in data and data.index(b"moov") < data.index(b"moof")  # fragmented
  with av.open(str(out)) as c:
    assert sum(1 for _ in c.decode(video=0)) == 25
  with av.open(str(out)) as c:
    seconds = sum(f.samples for f in c.decode(audio=0)) / 16000
  assert abs(seconds - 1.0) < 0.1
  assert [p.name for p in tmp.iterdir() if p.name.startswith(".live")] == []


def test_cli_streams_raw_frames_from_stdin_pcm(syncer, faces, tmp, checkpoint_path,
                                               capsysbinary, monkeypatch):
  pcm = _speech(0.8, 16)

  class Stdin:
    buffer = io.BytesIO(pcm.astype("<i2").tobytes() + b"\x01")  # + half a sample

  monkeypatch.setattr(sys, "stdin", Stdin)
  rc = _cli(syncer, ["--face", faces["photo"], "--stream-input", "-", "--outfile", "-"])
  captured = capsysbinary.readouterr()
  assert rc == 0, captured.err
  assert len(captured.out) == 20 * 128 * 128 * 3  # 0.8 s: 20 frames of 128x128 bgr24
  assert b"raw bgr24 frames, 128x128 at 25 fps" in captured.err and b"latency p50" in captured.err


def test_cli_stream_bad_input_is_one_line_and_writes_nothing(syncer, faces, tmp, checkpoint_path,
                                                             capsys):
  import cv2
  cv2.imwrite(str(tmp / "blank.png"), np.full((160, 160, 3), 128, np.uint8))
  speech = _wav_file(tmp / "s.wav", _speech(0.5, 17))
  out = tmp / "bad.mp4"
  cases = [
      (["--face", str(tmp / "blank.png"), "--audio", speech, "--outfile", str(out)], "no face"),
      (["--face", faces["photo"], "--stream-input", "-", "--stream-rate", "44100",
        "--outfile", str(out)], "16000 Hz"),
      (["--face", faces["photo"], "--audio", str(tmp / "nope.wav"), "--outfile", str(out)],
       "not found"),
  ]
  for argv, what in cases:
    if "blank.png" in argv[1]:  # detection: no --box
      rc = _infer_module().main(["--stream", "--checkpoint", "unused", "--batch-size", "2"]
                                + argv, _reuse(syncer.with_options(box=None), []))
    else:
      rc = _cli(syncer, argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ") and what in err[0], err
    assert not out.exists() and not any(p.name.startswith(".bad") for p in tmp.iterdir())
