"""One browser's live lip-sync over WebRTC, on aiortc.

    session = LiveSession(syncer.stream(face, warmup=False), max_latency=0.4)
    answer = await session.answer(offer_sdp, offer_type)   # the browser's offer
    ...
    await session.close()                                  # or when the browser leaves

The browser's microphone track (Opus, 48 kHz) is resampled to 16 kHz mono
and pushed into a `RealtimeStream`, which never blocks; a pump thread takes
its frames as they are made and hands them, as `av` frames, to two outgoing
tracks: the video (BGR frames, 90 kHz clock) and the frames' own audio (the
microphone's samples, 16 kHz), so the browser plays the voice in step with
the mouth. A data channel the page opens carries the figures (`Figures`)
twice a second. Signalling is aiortc's offer/answer, nothing more.
"""

from __future__ import annotations

import asyncio
import collections
import fractions
import json
import threading
import time

import av
import numpy as np
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from lipsync_jax.inference.stream import SAMPLE_RATE, StreamFrame, StreamSession

VIDEO_CLOCK = 90000
MAX_QUEUED = 50          # frames an outgoing track holds before the oldest go
FIGURES_EVERY = 0.5      # seconds between two figures messages
RECENT_FRAMES = 50       # the window of the "recent" latency and frame rate


def video_frame(image: np.ndarray, n: int, fps: float) -> av.VideoFrame:
  """Output frame number `n` of the session ((H, W, 3) uint8 BGR) as an
  `av.VideoFrame` stamped n / fps on the 90 kHz clock."""
  frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
  frame.pts = round(n * VIDEO_CLOCK / fps)
  frame.time_base = fractions.Fraction(1, VIDEO_CLOCK)
  return frame


def audio_frame(samples: np.ndarray, first: int) -> av.AudioFrame:
  """(k,) float32 16 kHz samples in [-1, 1] as an s16 mono `av.AudioFrame`
  whose first sample is sample `first` of the session."""
  pcm = np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)
  frame = av.AudioFrame.from_ndarray(pcm[None], format="s16", layout="mono")
  frame.sample_rate = SAMPLE_RATE
  frame.pts = first
  frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
  return frame


def mono_16k(frame: av.AudioFrame, resampler: av.AudioResampler) -> np.ndarray:
  """A received audio frame (any rate and layout) as (n,) int16 16 kHz mono
  samples; `resampler` keeps the state between frames."""
  out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
  return np.concatenate(out) if out else np.zeros(0, np.int16)


class Figures:
  """The session's figures for the page: the latest frames' latency and
  rate (a window of `RECENT_FRAMES`), and the totals of the engine."""

  def __init__(self):
    self.latencies: collections.deque = collections.deque(maxlen=RECENT_FRAMES)
    self.times: collections.deque = collections.deque(maxlen=RECENT_FRAMES)
    self.frames = self.dropped = 0

  def add(self, frame: StreamFrame, now: float) -> None:
    self.frames += 1
    self.dropped += frame.dropped
    if not frame.dropped and frame.latency is not None:
      self.latencies.append(frame.latency)
      self.times.append(now)

  def as_dict(self) -> dict:
    """{"frames", "dropped", "latency_p50", "latency_p95" (seconds, the
    engine's: audio in at the server -> frame out), "fps" (generated frames
    a second)}; None where there are too few frames yet."""
    lat = np.asarray(self.latencies)
    fps = None
    if len(self.times) > 1 and self.times[-1] > self.times[0]:
      fps = (len(self.times) - 1) / (self.times[-1] - self.times[0])
    p = (lambda q: float(np.percentile(lat, q))) if lat.size else (lambda q: None)
    return {"frames": self.frames, "dropped": self.dropped, "latency_p50": p(50),
            "latency_p95": p(95), "fps": fps}


class QueueTrack(MediaStreamTrack):
  """An outgoing track that sends the `av` frames put into it (None ends it)."""

  def __init__(self, kind: str):
    super().__init__()
    self.kind = kind
    self.queue: asyncio.Queue = asyncio.Queue()

  def put(self, frame) -> None:
    """Queues a frame (on the event loop's thread); past `MAX_QUEUED` the
    oldest go, so a stalled peer never makes the server grow."""
    while self.queue.qsize() >= MAX_QUEUED:
      self.queue.get_nowait()
    self.queue.put_nowait(frame)

  async def recv(self):
    frame = await self.queue.get()
    if frame is None:
      self.stop()
      raise MediaStreamError
    return frame


class LiveSession:
  """A prepared `StreamSession` served to one browser over WebRTC.

  Args:
    session: from `syncer.stream(face)`; this object closes it.
    max_latency: `RealtimeStream`'s (seconds).
    on_close: called (on the event loop) once the session is closed.
  """

  def __init__(self, session: StreamSession, max_latency: float = 0.4, on_close=None):
    self.session = session
    self.figures = Figures()
    self.pc = RTCPeerConnection()
    self.video = QueueTrack("video")
    self.audio = QueueTrack("audio")
    self._on_close = on_close
    self._loop = asyncio.get_running_loop()
    self._rt = session.realtime(max_latency=max_latency)
    self._tasks: list[asyncio.Task] = []
    self._channel = None
    self._closed = False
    self._pump = threading.Thread(target=self._pump_frames, name="lipsync-live-pump",
                                  daemon=True)

    @self.pc.on("track")
    def on_track(track):
      if track.kind == "audio":
        self._tasks.append(asyncio.ensure_future(self._take_microphone(track)))

    @self.pc.on("datachannel")
    def on_datachannel(channel):
      self._channel = channel

    @self.pc.on("connectionstatechange")
    async def on_state():
      if self.pc.connectionState in ("failed", "closed", "disconnected"):
        await self.close()

  async def answer(self, sdp: str, kind: str) -> RTCSessionDescription:
    """Takes the browser's offer, starts the engine, returns the answer."""
    await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
    self.pc.addTrack(self.audio)
    self.pc.addTrack(self.video)
    await self.pc.setLocalDescription(await self.pc.createAnswer())
    self._rt.start()
    self._pump.start()
    self._tasks.append(asyncio.ensure_future(self._send_figures()))
    return self.pc.localDescription

  # --- microphone -> engine -> tracks -----------------------------------------

  async def _take_microphone(self, track) -> None:
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    while True:
      try:
        frame = await track.recv()
      except MediaStreamError:
        return
      pcm = mono_16k(frame, resampler)
      if pcm.size:
        self._rt.push(pcm)

  def _pump_frames(self) -> None:
    """(thread) The engine's frames -> the two tracks, until it stops."""
    n, first = 0, 0
    try:
      for frame in self._rt.frames():
        items = (frame, video_frame(frame.image, n, self.session.fps),
                 audio_frame(frame.audio, first))
        n, first = n + 1, first + len(frame.audio)
        self._call_soon(self._deliver, *items)
    except Exception:  # pylint: disable=broad-except
      pass  # the engine's error ends the session (below)
    self._call_soon(self._deliver, None, None, None)

  def _call_soon(self, fn, *args) -> None:
    try:
      self._loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:  # the loop is closed: the server is gone
      pass

  def _deliver(self, frame, video, audio) -> None:
    if frame is not None:
      self.figures.add(frame, time.monotonic())
    self.video.put(video)
    self.audio.put(audio)

  async def _send_figures(self) -> None:
    while True:
      await asyncio.sleep(FIGURES_EVERY)
      if self._channel is not None and self._channel.readyState == "open":
        self._channel.send(json.dumps(self.figures.as_dict()))

  # --- the end -------------------------------------------------------------------

  async def close(self) -> None:
    """Stops the engine and its threads, frees the face, closes the peer
    connection. Idempotent."""
    if self._closed:
      return
    self._closed = True
    for task in self._tasks:
      task.cancel()
    await asyncio.gather(*self._tasks, return_exceptions=True)
    await asyncio.to_thread(self._stop_engine)
    await self.pc.close()
    if self._on_close is not None:
      self._on_close(self)

  def _stop_engine(self) -> None:
    self._rt.close()
    if self._pump.is_alive():
      self._pump.join()
    self.session.close()
