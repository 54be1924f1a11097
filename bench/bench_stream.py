"""Real-time streaming benchmark: latency, sustained frame rate, drops, CPU.

    python bench/bench_stream.py                        # 60 s of speech per backend
    python bench/bench_stream.py --seconds 600          # the 10-minute steadiness run
    python bench/bench_stream.py --backends ort-int8 --seconds 30

Model: full-size Wav2Lip (96 px) with bench_infer's weights (the baseline's
fill where torch is installed: speed only), at micro-batch `--batch-size`
(default 1), under three backends: JAX (XLA), onnxruntime fp32 on our
export, and onnxruntime INT8 (`bench_infer.three_backends`).

Each backend gets a `StreamSession` on the 224x224 VoxCeleb2 clip (boxes
from the cache after the first), and a `Feeder` thread pushes speech
(../shared/data/real/audio/musetalk/eng.wav, looped to `--seconds`) in
`--chunk-ms` chunks at real-time pace, as a microphone would; the main
thread takes the frames as they come (and drops them: the engine is
measured, not an encoder). `RealtimeStream.stats()` gives the row:

  latency   from the arrival of the audio sample at a frame's timestamp to
            the frame's output: p50 and p95 over generated frames;
  look-ahead  the part of it spent waiting for the rest of the frame's mel
            window to arrive (p50; 200 ms with 20 ms chunks at 25 fps);
  fps       generated frames a second of wall time (25 when it keeps up);
  dropped   frames skipped to keep up (of all frames; their slot repeats
            the previous image), late: generated but later than
            `--max-latency`;
  last      the last frame's latency: no drift when it is near p50;
  CPU       process CPU time over wall time (200% = both cores busy);
  gen ms    the generator alone on one micro-batch, median of 20 calls.

Backends run one after the other, so load from other jobs hits them
differently: the 1-minute load average is printed per row.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH_DIR))

from bench_infer import CLIPS, LONG_SPEECH, SHARED, _weights, three_backends  # noqa: E402

BACKENDS = {"jax": "JAX (XLA)", "ort": "onnxruntime fp32", "ort-int8": "onnxruntime INT8"}


def _generator_ms(syncer, iters: int = 20) -> float:
  """The generator alone on one micro-batch: median ms a call."""
  import numpy as np
  n, s = syncer.batch_size, syncer.face_size
  windows = np.zeros((n, 80, 16), np.float32)
  crops = np.full((n, s, s, 3), 128, np.uint8)
  syncer.generate_faces(windows, crops)
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    syncer.generate_faces(windows, crops)
    times.append(time.perf_counter() - t)
  return 1000 * statistics.median(times)


def stream_once(syncer, face, wav, chunk_ms: float, max_latency: float) -> dict[str, Any]:
  """Streams `wav` (16 kHz float32) at real-time pace through a session on
  `face`; returns the stats and the load average."""
  import dataclasses
  from lipsync_jax.inference import stream as stream_lib
  load0 = os.getloadavg()[0]
  with syncer.stream(face) as session:
    rt = session.realtime(max_latency=max_latency).start()
    chunk = max(1, round(chunk_ms / 1000 * stream_lib.SAMPLE_RATE))
    feeder = stream_lib.Feeder(rt, stream_lib.wav_chunks(wav, chunk), pace=1.0)
    feeder.start()
    for _ in rt.frames():
      pass
    feeder.join()
    if feeder.error is not None:
      raise feeder.error
  stats = rt.stats()
  return {**dataclasses.asdict(stats), "load_avg": (load0 + os.getloadavg()[0]) / 2,
          "micro_batch": syncer.batch_size}


def _row(name: str, r: dict[str, Any]) -> str:
  ms = lambda v: "-" if v is None else f"{1000 * v:.0f}"
  return (f"| {name} | {r['micro_batch']} | {r['gen_ms']:.1f} | {ms(r['latency_p50'])} | "
          f"{ms(r['latency_p95'])} | {ms(r['lookahead_p50'])} | "
          f"{'-' if r['fps'] is None else format(r['fps'], '.1f')} | "
          f"{r['dropped']} / {r['frames']} | {r['late']} | {ms(r['last_latency'])} | "
          f"{100 * r['cpu_cores']:.0f}% | {r['load_avg']:.1f} |")


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--backends", default="jax,ort,ort-int8",
                 help=f"comma list of {','.join(BACKENDS)}")
  p.add_argument("--seconds", type=float, default=60.0, help="speech streamed per backend")
  p.add_argument("--batch-size", type=int, default=1, help="the micro-batch")
  p.add_argument("--chunk-ms", type=float, default=20.0, help="audio chunk size")
  p.add_argument("--max-latency", type=float, default=0.4,
                 help="frames later than this are dropped (RealtimeStream)")
  p.add_argument("--json", help="write the results here")
  return p


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  names = args.backends.split(",")
  if unknown := [b for b in names if b not in BACKENDS]:
    print(f"error: unknown backend(s) {unknown}; choose from {list(BACKENDS)}", file=sys.stderr)
    return 2
  if not SHARED.is_dir():
    print(f"error: needs the shared data folder at {SHARED}", file=sys.stderr)
    return 2
  import numpy as np
  from lipsync_jax import machine
  from lipsync_jax.io import audio as audio_lib
  info = machine.describe()
  print(f"machine: {machine.one_line(info)}")
  speech = audio_lib.load_audio(SHARED / LONG_SPEECH)
  n = int(args.seconds * audio_lib.SAMPLE_RATE)
  wav = np.tile(speech, n // len(speech) + 1)[:n]
  face = str(SHARED / CLIPS["224x224 VoxCeleb2"])
  module, variables, source = _weights()
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    syncers = dict(zip(("jax", "ort", "ort-int8"),
                       three_backends(module, variables, "wav2lip", args.batch_size, tmp,
                                      calibration_frames=16, spinning=False)))
    print(f"Wav2Lip ({source}), micro-batch {args.batch_size}: backends ready in "
          f"{time.perf_counter() - t:.0f} s; {args.seconds:g} s of speech each, "
          f"{args.chunk_ms:g} ms chunks at real-time pace", flush=True)
    for name in names:
      syncer = syncers[name]
      rows[name] = {"gen_ms": _generator_ms(syncer),
                    **stream_once(syncer, face, wav, args.chunk_ms, args.max_latency)}
      print(f"  {BACKENDS[name]}: done", flush=True)
  print("| backend | micro-batch | generator ms | latency p50 ms | p95 ms | look-ahead ms "
        "| fps | dropped | late | last frame ms | CPU | load |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for name, r in rows.items():
    print(_row(BACKENDS[name], r))
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(
        {"machine": info, "weights": source, "args": vars(args), "rows": rows}, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(main())
