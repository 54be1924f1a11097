"""The web pages: the live WebRTC page (`lipsync_jax.serve`) and the Gradio
app (`lipsync_jax.app`), driven by a real browser.

The live page in Chromium runs the shipped two-stage model (`builtin`) on a
real face (a frame of a VoxCeleb2 clip from ../shared), so the test sees the
mouth move with speech and stand still, closed, in silence. Elsewhere a tiny
random-weight Wav2Lip (tests/test_inference.py's) stands in, quicker to
compile: its mouth is noise, but noise that follows the speech. The browser is
Debian's Chromium (/usr/bin/chromium, installed by setup.sh), driven by
Playwright with a fake microphone fed from a LibriVox WAV; the sessions test
is an aiortc client in Python. Frame rates and latencies are printed, never
asserted: the machine may be busy.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fractions
import gc
import json
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from test_inference import CLIP, SPEECH, SPEECH_LONG, _save

CHROMIUM = pathlib.Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--autoplay-policy=no-user-gesture-required"]
REPO = pathlib.Path(__file__).resolve().parents[1]


# -----------------------------------------------------------------------------
# Fixtures: a tiny model, a real face, servers on free ports, the browser.
# -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
  return tmp_path_factory.mktemp("web")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp) -> str:
  return _save(tmp / "wav2lip", "wav2lip", np.zeros((1, 80, 16, 1), np.float32),
               np.zeros((1, 96, 96, 6), np.float32))


@pytest.fixture(scope="module")
def stream_syncer(tiny_ckpt, tmp):
  """The tiny model at batch 1, as the live server loads it."""
  from lipsync_jax import inference
  return inference.LipSyncer.from_checkpoint(tiny_ckpt, batch_size=1,
                                             cache_dir=str(tmp / "boxes"))


@pytest.fixture(scope="module")
def builtin_syncer(tmp):
  """The shipped two-stage model at batch 1, as the live server loads it."""
  from lipsync_jax import inference
  return inference.load_syncer("builtin", batch_size=1, cache_dir=str(tmp / "boxes"))


@pytest.fixture(scope="module")
def face_photo(shared_dir, tmp) -> str:
  """A real face: frame 10 of the VoxCeleb2 clip, as a photo."""
  import cv2
  from lipsync_jax.io import video
  frame = next(f for i, f in enumerate(video.iter_frames(shared_dir / CLIP)) if i == 10)
  cv2.imwrite(str(tmp / "face.png"), frame)
  return str(tmp / "face.png")


@pytest.fixture(scope="module")
def speech_and_silence(shared_dir, tmp) -> str:
  """The fake microphone: 3 s of LibriVox speech, 2.5 s of digital silence,
  3 s of other speech, 2.5 s of silence (Chromium loops it)."""
  one, _ = sf.read(shared_dir / SPEECH, dtype="int16")
  two, _ = sf.read(shared_dir / SPEECH_LONG, dtype="int16")
  pause = np.zeros(40000, np.int16)
  sf.write(tmp / "mic.wav", np.concatenate([one, pause, two[:48000], pause]), 16000,
           subtype="PCM_16")
  return str(tmp / "mic.wav")


@contextlib.contextmanager
def live_server(syncer, face: str, max_sessions: int = 1):
  """`serve.LiveServer` in a thread on a free loopback port: (url, server)."""
  from lipsync_jax import serve
  live = serve.LiveServer(syncer, face, max_sessions=max_sessions)
  live.check_face()
  sock = serve.bind("127.0.0.1", 0)
  http = serve.uvicorn_server(serve.make_app(live))
  thread = threading.Thread(target=http.run, kwargs={"sockets": [sock]}, daemon=True)
  thread.start()
  url = f"http://127.0.0.1:{sock.getsockname()[1]}"
  for _ in range(200):
    if http.started:
      break
    time.sleep(0.05)
  try:
    yield url, live
  finally:
    http.should_exit = True
    thread.join(timeout=30)
    sock.close()


def _status(url: str) -> dict:
  with urllib.request.urlopen(url + "/status") as r:
    return json.loads(r.read())


@pytest.fixture
def chromium():
  """A Playwright `launch(**kwargs)` for Debian's Chromium; skips without it."""
  if not CHROMIUM.is_file():
    pytest.skip(f"needs Debian's Chromium at {CHROMIUM} (setup.sh installs it as root: "
                "apt-get install chromium chromium-driver)")
  from playwright.sync_api import sync_playwright
  with sync_playwright() as p:
    browsers = []

    def launch(args=(), **kwargs):
      browsers.append(p.chromium.launch(executable_path=str(CHROMIUM),
                                        args=CHROMIUM_FLAGS + list(args), **kwargs))
      return browsers[-1]

    yield launch
    for b in browsers:
      b.close()


# -----------------------------------------------------------------------------
# The live page: errors.
# -----------------------------------------------------------------------------

def _serve_cli(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "lipsync_jax.serve", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=120)


def test_serve_fails_on_one_line_before_loading_anything(tmp):
  """A busy port, a missing model or face: one line, at once (no jax)."""
  (tmp / "photo.png").write_bytes(b"not read")
  with socket.socket() as taken:
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    cases = [((str(tmp), str(tmp / "photo.png"), port), f"port {port} on 127.0.0.1 is in use"),
             (("/no/model", str(tmp / "photo.png"), "0"), "checkpoint not found: /no/model"),
             ((str(tmp), "/no/face.png", "0"), "face file not found: /no/face.png"),
             ((str(tmp), str(tmp / "photo.png"), "0", "-1"), "--adapt-steps must be >= 0, got -1")]
    for (ckpt, face, port_arg, *adapt), message in cases:
      run = _serve_cli("--checkpoint", ckpt, "--face", face, "--port", port_arg,
                       *(("--adapt-steps", *adapt) if adapt else ()))
      lines = run.stderr.strip().splitlines()
      assert run.returncode == 2 and len(lines) == 1, run.stderr
      assert lines[0].startswith(f"error: {message}")


@pytest.mark.slow
def test_serve_model_and_face_errors_are_one_line(stream_syncer, tiny_ckpt, face_photo, tmp,
                                                  capsys):
  """A foreign model, a face file with no face (for a Wav2Lip and for the
  built-in model), adapting a Wav2Lip or adapting to a photo: one `error:`
  line each, exit status 2."""
  import cv2
  from lipsync_jax import serve
  (tmp / "foreign").mkdir(exist_ok=True)
  (tmp / "foreign" / "notes.json").write_text("{}")
  cv2.imwrite(str(tmp / "wall.png"), np.full((160, 160, 3), 120, np.uint8))
  reuse = lambda ckpt, options: stream_syncer.with_options(adapt_steps=options.adapt_steps)
  cases = [(["--checkpoint", str(tmp / "foreign"), "--face", face_photo], None, "holds no model"),
           (["--checkpoint", tiny_ckpt, "--face", str(tmp / "wall.png")], reuse, "no face found"),
           (["--checkpoint", "builtin", "--face", str(tmp / "wall.png")], None, "no face found"),
           (["--checkpoint", tiny_ckpt, "--face", face_photo, "--adapt-steps", "50"], reuse,
            "adapting to the face (--adapt-steps) needs a two-stage model"),
           (["--checkpoint", "builtin", "--face", face_photo, "--adapt-steps", "50"], None,
            "adapting the renderer needs a face video with at least 10 frames of visible lips")]
  for argv, make_syncer, message in cases:
    assert serve.main([*argv, "--port", "0"], make_syncer) == 2
    err = capsys.readouterr().err.strip()
    print(err)
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and message in err


# -----------------------------------------------------------------------------
# The live page: sessions, with an aiortc client.
# -----------------------------------------------------------------------------

class _Speech:
  """An aiortc audio track: `pcm` (int16, 16 kHz), looped, at real-time pace."""

  def __init__(self, pcm: np.ndarray):
    from aiortc import MediaStreamTrack

    class Track(MediaStreamTrack):
      kind = "audio"

      def __init__(self):
        super().__init__()
        self.n, self.t0 = 0, None

      async def recv(self):
        import av
        self.t0 = self.t0 or time.monotonic()
        await asyncio.sleep(max(0.0, self.t0 + self.n / 16000 - time.monotonic()))
        idx = (self.n + np.arange(320)) % len(pcm)
        frame = av.AudioFrame.from_ndarray(pcm[idx][None], format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16000, self.n
        frame.time_base = fractions.Fraction(1, 16000)
        self.n += 320
        return frame

    self.track = Track()


async def _client(url: str, pcm: np.ndarray, frames: int = 3):
  """Opens a session, waits for `frames` video frames, returns (the
  connection, the frames received so far as a list). A refused offer
  raises urllib's HTTPError."""
  from aiortc import RTCPeerConnection, RTCSessionDescription
  pc = RTCPeerConnection()
  pc.addTrack(_Speech(pcm).track)
  pc.addTransceiver("video", direction="recvonly")
  got, enough = [], asyncio.Event()

  @pc.on("track")
  def on_track(track):
    async def read():
      with contextlib.suppress(Exception):
        while True:
          got.append(await track.recv())
          if len(got) >= frames:
            enough.set()
    if track.kind == "video":
      asyncio.ensure_future(read())

  await pc.setLocalDescription(await pc.createOffer())
  body = json.dumps({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})
  request = urllib.request.Request(url + "/offer", body.encode(),
                                   {"Content-Type": "application/json"})
  try:
    answer = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(request).read()))
  except BaseException:
    await pc.close()
    raise
  await pc.setRemoteDescription(RTCSessionDescription(**answer))
  await asyncio.wait_for(enough.wait(), 60)
  return pc, got


def _threads() -> list[str]:
  """This process's threads by name, but for the event loops' executor pool
  workers (a pool of fixed size, shared by all sessions and this test's
  client, which grows to its size on demand)."""
  return sorted(t.name for t in threading.enumerate() if not t.name.startswith(("asyncio_", "uvloop_")))


async def _until(predicate, seconds: float = 20.0) -> None:
  deadline = time.monotonic() + seconds
  while not predicate() and time.monotonic() < deadline:
    await asyncio.sleep(0.05)


@pytest.mark.slow
def test_sessions_are_freed_and_extra_clients_are_busy_or_served(stream_syncer, face_photo,
                                                                 shared_dir):
  """20 sessions opened and closed give their threads and memory back; with
  --max-sessions 1 a second browser is told "busy", with 2 it gets its own
  stream."""
  from lipsync_jax.inference import StreamSession
  pcm, _ = sf.read(shared_dir / SPEECH, dtype="int16")

  async def scenario(url, live):
    # One session to warm everything up (aiortc's encoder threads, caches).
    pc, _ = await _client(url, pcm)
    with pytest.raises(urllib.error.HTTPError) as busy:
      await _client(url, pcm)
    assert busy.value.code == 503
    message = json.loads(busy.value.read())["error"]
    assert message.startswith("busy: 1 session(s) already running")
    await pc.close()
    await _until(lambda: not live.sessions)
    before, threads_before = _status(url), _threads()
    t0 = time.monotonic()
    for _ in range(20):
      pc, got = await _client(url, pcm)
      assert len(got) >= 3
      await pc.close()
      await _until(lambda: not live.sessions)  # the server sees the goodbye
      assert not live.sessions
    print(f"\n20 sessions opened and closed in {time.monotonic() - t0:.1f} s")
    await _until(lambda: _threads() == threads_before)
    after, threads_after = _status(url), _threads()
    gc.collect()
    alive = sum(type(o) is StreamSession for o in gc.get_objects())
    print(f"\nafter 1 session: {before}\nafter 20 more:   {after}; StreamSessions alive: {alive}"
          f"\nthreads besides the asyncio pools' workers: {threads_after}")
    assert after["sessions"] == 0 and alive == 0
    assert threads_after == threads_before, (threads_before, threads_after)
    assert after["rss_mb"] - before["rss_mb"] < 150  # 20 leaked sessions would hold far more
    # --max-sessions 2: two browsers at once, each with its own stream.
    live.max_sessions = 2
    (pc1, got1), (pc2, got2) = await asyncio.gather(_client(url, pcm), _client(url, pcm))
    assert len(live.sessions) == 2 and len(got1) >= 3 and len(got2) >= 3
    await asyncio.gather(pc1.close(), pc2.close())
    await _until(lambda: not live.sessions)
    assert not live.sessions

  with live_server(stream_syncer, face_photo) as (url, live):
    asyncio.run(scenario(url, live))


# -----------------------------------------------------------------------------
# The live page in Chromium.
# -----------------------------------------------------------------------------

# Records every frame the page's video shows: a 112 x 112 grey copy, base64.
_RECORD_FRAMES = """() => {
  window.recorded = [];
  const video = document.getElementById('video');
  const canvas = document.createElement('canvas');
  canvas.width = canvas.height = 112;
  const g = canvas.getContext('2d', { willReadFrequently: true });
  const grab = (now) => {
    g.drawImage(video, 0, 0, 112, 112);
    const rgba = g.getImageData(0, 0, 112, 112).data, grey = new Uint8Array(112 * 112);
    for (let i = 0; i < grey.length; i++) grey[i] = (rgba[4 * i] + rgba[4 * i + 1] + rgba[4 * i + 2]) / 3;
    window.recorded.push([now, btoa(String.fromCharCode.apply(null, grey))]);
    video.requestVideoFrameCallback(grab);
  };
  video.requestVideoFrameCallback(grab);
}"""


def _motion_per_second(recorded) -> tuple[np.ndarray, int]:
  """(mean absolute change between consecutive frames in the region the
  generator redraws, per second of the recording; that region's pixels).
  The region: the pixels that change at all over the recording (the photo's
  other pixels never do)."""
  frames = np.stack([np.frombuffer(base64.b64decode(b), np.uint8).reshape(112, 112)
                     for _, b in recorded]).astype(np.float32)
  t = np.array([ms for ms, _ in recorded]) / 1000
  region = frames.std(axis=0) > 2
  change = np.abs(np.diff(frames, axis=0))[:, region].mean(axis=1)
  second = ((t[1:] - t[0]) // 1).astype(int)
  return np.array([change[second == s].mean() for s in np.unique(second)]), int(region.sum())


@pytest.mark.slow
def test_live_page_in_chromium(chromium, builtin_syncer, face_photo, speech_and_silence, tmp):
  """Chromium's fake microphone (speech, then silence, looped) in, the
  built-in model's video out: frames arrive, the mouth moves with speech and
  stands still in silence; the page's frame rate and end-to-end latency are
  printed."""
  with live_server(builtin_syncer, face_photo) as (url, _):
    browser = chromium(["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                        f"--use-file-for-fake-audio-capture={speech_and_silence}"])
    page = browser.new_page(viewport={"width": 820, "height": 560})
    page.goto(url)
    page.click("#start")
    page.wait_for_function("window.liveFigures.shown > 0", timeout=60000)
    page.evaluate(_RECORD_FRAMES)
    page.wait_for_timeout(12000)
    page.screenshot(path=str(tmp / "live.png"))
    figures = page.evaluate("window.liveFigures")
    recorded = page.evaluate("window.recorded")
    page.click("#stop")
  motion, region = _motion_per_second(recorded)
  e2e = figures["e2e_samples"]
  print(f"\nlive page: {figures['shown']} frames shown, {figures['fps']:.1f} frames/s at the end; "
        f"end to end {np.median(e2e) if e2e else float('nan'):.0f} ms median of {len(e2e)} "
        f"({', '.join(f'{v:.0f}' for v in e2e)}); engine {figures['engine']}")
  print(f"mouth region {region} px; change per second: {np.round(motion, 2).tolist()}")
  print(f"screenshot: {tmp / 'live.png'}")
  assert figures["error"] is None and figures["shown"] > 0 and len(recorded) > 50
  assert region > 100
  # Speech moves the mouth; a second of silence leaves it still (the VP8 coding's noise aside).
  assert motion.max() > 0.5 and motion.min() < 0.1 * motion.max()


# -----------------------------------------------------------------------------
# The Gradio app in Chromium.
# -----------------------------------------------------------------------------

@pytest.fixture
def app_url(tiny_ckpt, tmp, monkeypatch):
  """The app on a free port with the tiny model (loaded through the app's
  cache); its uploads under tmp/gradio."""
  from lipsync_jax import app, inference
  from lipsync_jax.web.loading import ModelCache
  monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp / "gradio"))
  monkeypatch.setenv("GRADIO_ANALYTICS_ENABLED", "False")
  loaded = []
  models = ModelCache(lambda ckpt: loaded.append(ckpt) or inference.LipSyncer.from_checkpoint(
      ckpt, batch_size=8, cache_dir=str(tmp / "boxes")))
  (tmp / "out").mkdir(exist_ok=True)
  demo = app.build_app(app.LipSyncApp(models, str(tmp / "out")), ["builtin", tiny_ckpt])
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True,
              ssr_mode=False, quiet=True)
  yield f"http://127.0.0.1:{port}", loaded
  demo.close()


def _lipsync_in_page(page, face: str, speech: str, model: str) -> str:
  """Uploads, picks the model, presses the button; the message shown."""
  page.locator("input[type=file][accept*=video]").set_input_files(face)
  page.locator("input[type=file][accept*=audio]").set_input_files(speech)
  page.get_by_label("Model").fill(model)
  page.keyboard.press("Enter")
  page.get_by_role("button", name="Lip-sync").click()
  message = page.locator("p", has_text=re.compile(r"^(Done in|Error)"))
  message.first.wait_for(timeout=120000)
  return message.first.inner_text()


@pytest.mark.slow
def test_app_in_chromium(chromium, app_url, tiny_ckpt, shared_dir, tmp):
  """A clip and speech uploaded in the page give back an mp4 with audio, as
  long as the speech; a file that is not a video or an image gets a message
  and is deleted; two requests at once are both served (queued)."""
  from lipsync_jax.io import video
  url, loaded = app_url
  page = chromium().new_page(viewport={"width": 1100, "height": 900})
  page.goto(url)
  message = _lipsync_in_page(page, str(shared_dir / CLIP), str(shared_dir / SPEECH), tiny_ckpt)
  assert message.startswith("Done in"), message
  src = page.locator("video").first.get_attribute("src")
  out = tmp / "from_page.mp4"
  out.write_bytes(urllib.request.urlopen(src).read())
  info, speech = video.probe(out), sf.info(str(shared_dir / SPEECH))
  assert info.has_audio and info.audio_sample_rate
  assert info.num_frames == round(speech.duration * 25)  # 75 frames: as long as the speech
  page.screenshot(path=str(tmp / "app.png"), full_page=True)
  print(f"\n{message}\nscreenshot: {tmp / 'app.png'}")

  # Not a video nor an image: a message, and the upload is gone.
  bad = tmp / "notes.mp4"
  bad.write_text("these are notes, not a video\n")
  page.reload()
  files_before = {p for p in (tmp / "gradio").rglob("*") if p.is_file()}
  message = _lipsync_in_page(page, str(bad), str(shared_dir / SPEECH), tiny_ckpt)
  print(message)
  assert message == "Error: cannot read notes.mp4: Invalid data found when processing input"
  assert {p for p in (tmp / "gradio").rglob("*") if p.is_file()} <= files_before
  assert "Traceback" not in page.inner_text("body")
  assert loaded == [tiny_ckpt]  # loaded once, kept between requests

  # Two requests at once: the second waits in the queue, both come back.
  from gradio_client import Client, handle_file
  client = Client(url, verbose=False)
  jobs = [client.submit(handle_file(str(shared_dir / CLIP)), handle_file(str(shared_dir / SPEECH)),
                        tiny_ckpt, 0, fn_index=0) for _ in range(2)]
  results = [job.result(timeout=120) for job in jobs]
  assert all(r[2].startswith("Done in") for r in results), [r[2] for r in results]
  # Adapting to the face needs a two-stage model: a Wav2Lip gets a message, no video.
  video_out, _, message, *_ = client.predict(
      handle_file(str(shared_dir / CLIP)), handle_file(str(shared_dir / SPEECH)), tiny_ckpt, 100,
      fn_index=0)
  assert video_out is None and message == (
      "**Error:** adapting to the face (--adapt-steps) needs a two-stage model (builtin or a "
      "two-stage model directory), not a wav2lip checkpoint"), message
