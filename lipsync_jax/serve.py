"""The live page: lip-sync a browser's microphone over WebRTC.

    python -m lipsync_jax.serve --checkpoint CKPT --face FACE [--host 127.0.0.1 --port 7860]
        [--adapt-steps N]

Open http://127.0.0.1:7860, press Start and speak: the browser sends its
microphone over WebRTC (aiortc on this side) and gets back the face,
lip-synced, with the voice; the page shows the frame rate it receives and the
latency. CKPT is any checkpoint the streaming engine takes (builtin, the
shipped two-stage model; a two-stage or Wav2Lip model directory, a training
workdir, an upstream .pth, a .onnx; docs/realtime.md);
FACE a video (played back and forth) or a photo. With --adapt-steps N (a
two-stage model and a face video) the renderer is fine-tuned on FACE once,
before the page is served; every session then draws with those weights.

Routes: `GET /` the page, `POST /offer` the WebRTC offer/answer exchange
(JSON {sdp, type}; 503 with {"error": "busy: ..."} when --max-sessions
sessions are running), `GET /status` the sessions, threads and memory.
Binds to 127.0.0.1 unless --host says otherwise. Bad input is one `error:`
line and exit status 2: a busy port, a missing or foreign model, a model
that cannot stream, a face file with no face (for the built-in model, no lips).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import os
import pathlib
import socket
import sys
import threading

PAGE = pathlib.Path(__file__).resolve().parent / "web" / "live.html"


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(
      description="Serve the live lip-sync page: microphone in over WebRTC, lip-synced video out.")
  p.add_argument("--checkpoint", required=True,
                 help="a streaming model: builtin (the shipped two-stage model), model dir, "
                      "training workdir, upstream .pth or .onnx")
  p.add_argument("--face", required=True, help="face video (played back and forth) or photo")
  p.add_argument("--host", default="127.0.0.1",
                 help="address to listen on (default 127.0.0.1: this machine only)")
  p.add_argument("--port", type=int, default=7860, help="port (default 7860)")
  p.add_argument("--max-sessions", type=int, default=1,
                 help="browsers served at the same time; one more gets a 'busy' answer "
                      "(default 1)")
  p.add_argument("--max-latency", type=float, default=0.4,
                 help="seconds from audio to frame after which a frame is dropped "
                      "(default 0.4, as infer.py --stream)")
  p.add_argument("--box", type=int, nargs=4, default=None,
                 metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                 help="fixed face box for every frame (skips detection)")
  p.add_argument("--adapt-steps", type=int, default=0, metavar="N",
                 help="two-stage models: fine-tune the renderer on the face video's own "
                      "frames for N steps once, at start-up, so it draws this face's lips and "
                      "teeth (about 35 s per 100 steps on 2 CPU cores; default 0: off)")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  return p


def _rss_mb() -> float | None:
  """This process's resident memory (MB; Linux), else None."""
  try:
    with open("/proc/self/statm") as f:
      return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
  except (OSError, ValueError, IndexError):
    return None


class Busy(Exception):
  """Every session slot is taken."""


class LiveServer:
  """The sessions of one model and one face.

  Args:
    syncer: a streaming `LipSyncer` (batch 1 to 4).
    face: the face file every session lip-syncs.
    max_sessions: sessions at the same time; one more raises `Busy`.
    max_latency: each session's `RealtimeStream` max_latency.
  """

  def __init__(self, syncer, face: str, max_sessions: int = 1, max_latency: float = 0.4):
    self.syncer, self.face = syncer, face
    self.max_sessions, self.max_latency = max_sessions, max_latency
    self.sessions: set = set()
    self._starting = 0
    self._preparing = asyncio.Lock()  # one face preparation at a time: the detector is not thread-safe

  def check_face(self) -> None:
    """Prepares the face once and runs the generator on it (compiling it),
    so that a face with no face, or a model that cannot stream, fails
    before the server starts (one-line InferenceError). With
    `options.adapt_steps` this adapts the renderer to the face; the
    sessions' preparations of the same face find those weights kept."""
    self.syncer.stream(self.face).close()

  async def offer(self, sdp: str, kind: str) -> dict:
    """A new session for a browser's offer: its answer {sdp, type}."""
    from lipsync_jax.web.live import LiveSession  # pylint: disable=import-outside-toplevel
    if len(self.sessions) + self._starting >= self.max_sessions:
      raise Busy(f"busy: {self.max_sessions} session(s) already running "
                 "(the server's --max-sessions); try again later")
    self._starting += 1
    try:
      async with self._preparing:
        stream = await asyncio.to_thread(self.syncer.stream, self.face, warmup=False)
      live = LiveSession(stream, self.max_latency, on_close=self.sessions.discard)
      self.sessions.add(live)
    finally:
      self._starting -= 1
    try:
      answer = await live.answer(sdp, kind)
    except BaseException:
      await live.close()
      raise
    return {"sdp": answer.sdp, "type": answer.type}

  async def close_all(self) -> None:
    await asyncio.gather(*(s.close() for s in list(self.sessions)))

  def status(self) -> dict:
    return {"sessions": len(self.sessions), "max_sessions": self.max_sessions,
            "threads": threading.active_count(), "rss_mb": _rss_mb(),
            "face": os.path.basename(self.face)}


def make_app(server: LiveServer):
  """The Starlette app: the page, the offer/answer exchange, the status."""
  # pylint: disable=import-outside-toplevel
  from starlette.applications import Starlette
  from starlette.responses import HTMLResponse, JSONResponse
  from starlette.routing import Route

  from lipsync_jax.inference import error_message

  async def page(request):
    del request
    return HTMLResponse(PAGE.read_text())

  async def offer(request):
    try:
      body = await request.json()
      answer = await server.offer(str(body["sdp"]), str(body["type"]))
    except Busy as e:
      return JSONResponse({"error": str(e)}, status_code=503)
    except (KeyError, TypeError, json.JSONDecodeError):
      return JSONResponse({"error": "expected JSON {sdp, type}: a WebRTC offer"},
                          status_code=400)
    except Exception as e:  # pylint: disable=broad-except
      print(f"error: offer: {error_message(e)}", file=sys.stderr)
      return JSONResponse({"error": error_message(e)}, status_code=500)
    return JSONResponse(answer)

  async def status(request):
    del request
    return JSONResponse(server.status())

  @contextlib.asynccontextmanager
  async def lifespan(app):
    del app
    yield
    await server.close_all()  # a server that stops closes its sessions

  return Starlette(routes=[Route("/", page), Route("/offer", offer, methods=["POST"]),
                           Route("/status", status)], lifespan=lifespan)


def bind(host: str, port: int) -> socket.socket:
  """A listening socket on host:port; a busy port is a one-line OSError."""
  family = socket.AF_INET6 if ":" in host else socket.AF_INET
  sock = socket.socket(family, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    sock.bind((host, port))
  except OSError as e:
    sock.close()
    if e.errno == errno.EADDRINUSE:
      raise OSError(f"port {port} on {host} is in use (another server?): "
                    "choose another with --port") from None
    raise OSError(f"cannot listen on {host}:{port}: {e.strerror}") from None
  sock.listen(128)
  return sock


def uvicorn_server(app):
  """A uvicorn server for `app`, not started: `.run(sockets=[sock])` serves
  on a socket from `bind` (in a thread too; `.should_exit = True` stops it)."""
  import uvicorn  # pylint: disable=import-outside-toplevel
  return uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))


def _quick_check(args) -> str | None:
  from lipsync_jax.web.loading import checkpoint_problem  # pylint: disable=import-outside-toplevel
  if args.max_sessions < 1:
    return f"--max-sessions must be >= 1, got {args.max_sessions}"
  if not args.max_latency > 0:
    return f"--max-latency must be > 0, got {args.max_latency}"
  if args.adapt_steps < 0:
    return f"--adapt-steps must be >= 0, got {args.adapt_steps}"
  if not os.path.isfile(args.face):
    return f"face file not found: {args.face}"
  return checkpoint_problem(args.checkpoint)


def main(argv: list[str] | None = None, make_syncer=None) -> int:
  """CLI entry point; returns the exit status. `make_syncer(checkpoint,
  options)` replaces `loading.load_model` (tests reuse a compiled model)."""
  args = build_parser().parse_args(argv)
  problem = _quick_check(args)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  sock = None
  try:
    sock = bind(args.host, args.port)  # before the model: a busy port fails at once
    from lipsync_jax import inference  # pylint: disable=import-outside-toplevel
    from lipsync_jax.web import loading  # pylint: disable=import-outside-toplevel
    options = inference.InferenceOptions(batch_size=1,
                                         box=tuple(args.box) if args.box else None,
                                         adapt_steps=args.adapt_steps)
    syncer = (make_syncer(args.checkpoint, options) if make_syncer
              else loading.load_model(args.checkpoint, options, streaming=True))
    server = LiveServer(syncer, args.face, args.max_sessions, args.max_latency)
    server.check_face()
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"live page on http://{host}:{args.port} ({args.checkpoint}, face {args.face}, "
          f"{args.max_sessions} session(s) at a time); Ctrl-C stops", flush=True)
    uvicorn_server(make_app(server)).run(sockets=[sock])
    return 0
  except (Exception, KeyboardInterrupt) as e:  # one line for users; --debug for the traceback
    from lipsync_jax.inference import error_message  # pylint: disable=import-outside-toplevel
    interrupted = isinstance(e, KeyboardInterrupt)
    if args.debug and not interrupted:
      raise
    print(f"error: {'interrupted' if interrupted else error_message(e)}", file=sys.stderr)
    return 130 if interrupted else 2
  finally:
    if sock is not None:
      sock.close()


if __name__ == "__main__":
  sys.exit(main())
