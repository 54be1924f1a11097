#!/usr/bin/env python
"""Lip-sync a face video or photo to speech.

    python infer.py --face FACE --audio AUDIO --outfile OUT.mp4
    python infer.py --checkpoint CKPT --face FACE --audio AUDIO --outfile OUT.mp4
    python infer.py --checkpoint CKPT --jobs jobs.csv [--report report.json]

With no --checkpoint (or `--checkpoint builtin`) the two-stage model shipped
in the package runs (docs/two_stage.md). CKPT is otherwise an exported model
directory, a two-stage model directory, a training workdir or an upstream
PyTorch .pth, or an ONNX file from `python -m lipsync_jax.export`, which runs
with onnxruntime (`--backend`). FACE is a video or a still image (.png/.jpg/...); AUDIO is any
file ffmpeg reads (wav, mp3, the audio of an mp4, ...). In batch mode every
row `face,audio,outfile` of the CSV (relative paths are relative to the CSV)
is run with the same compiled model; failing rows are reported and skipped.

With --stream the audio is read at real-time pace, from a file or as raw
s16le 16 kHz PCM from standard input (`--stream-input -`), and every frame is
written as soon as it is made: to a fragmented mp4, or with `--outfile -` to
standard output as raw bgr24 frames. Latency, frame rate and dropped frames
are printed at the end (docs/realtime.md).

    python infer.py --stream --checkpoint CKPT --face FACE --audio AUDIO --outfile OUT.mp4
    arecord -f S16_LE -r 16000 -c 1 | python infer.py --stream --checkpoint CKPT \
        --face FACE --stream-input - --outfile - | ffplay -f rawvideo ...

Exit status: 0 on success, 1 when some batch jobs failed, 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from lipsync_jax.io import files


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(
      description="Lip-sync a face video or photo to speech (JAX Wav2Lip, LPIPS-AttnWav2Lip, SyncTalkFace, au_tcn).")
  p.add_argument("--checkpoint", default="builtin",
                 help="exported model dir, training workdir, upstream .pth, .onnx, a "
                      "two-stage model dir, or builtin (default: the two-stage model "
                      "shipped in the package)")
  p.add_argument("--face", help="face video or still image")
  p.add_argument("--audio", help="speech: any file ffmpeg reads")
  p.add_argument("--outfile", help="output video (.mp4)")
  p.add_argument("--jobs", help="CSV of face,audio,outfile rows (batch mode)")
  p.add_argument("--report", help="write the run report(s) as JSON here")
  p.add_argument("--pads", type=int, nargs=4, default=[0, 10, 0, 0],
                 metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                 help="padding of the detected face box (default 0 10 0 0)")
  p.add_argument("--resize-factor", "--resize_factor", type=int, default=1,
                 help="downscale the frames by this factor first")
  p.add_argument("--nosmooth", action="store_true", help="do not smooth the boxes over time")
  p.add_argument("--box", type=int, nargs=4, default=None,
                 metavar=("TOP", "BOTTOM", "LEFT", "RIGHT"),
                 help="fixed face box for every frame (skips detection)")
  p.add_argument("--fps", type=float, default=25.0, help="output fps for a still image")
  p.add_argument("--batch-size", "--batch_size", type=int, default=None,
                 help="generator batch size (default 64; an ONNX file has its own)")
  p.add_argument("--backend", choices=("auto", "jax", "onnxruntime"), default="auto",
                 help="run the generator with JAX, or an ONNX file from python -m "
                      "lipsync_jax.export with onnxruntime (default: onnxruntime for "
                      "a .onnx checkpoint, else jax)")
  p.add_argument("--face-size", "--face_size", type=int, default=None,
                 help="the face size (px) you expect the checkpoint to have; the "
                      "checkpoint's own size is always used, and a different one is "
                      "refused (default: no check)")
  p.add_argument("--static", action="store_true", help="use only the first frame of the video")
  p.add_argument("--hard-paste", action="store_true",
                 help="paste the whole box as upstream (no feathering/colour matching)")
  p.add_argument("--detector", default="default", help="face detector name")
  p.add_argument("--lip-gain", type=float, default=None,
                 help="two-stage models: factor on the predicted lip motion (default: the "
                      "model's gain calibrated for the lips smoothed or not)")
  p.add_argument("--reference", choices=("rest", "frame"), default="rest",
                 help="two-stage models: the renderer's reference, each frame's nearest "
                      "closed-mouth frame (rest) or the frame itself (frame, as Wav2Lip)")
  p.add_argument("--lower-face-paste", action="store_true",
                 help="two-stage models: paste the whole lower face, as the pixel generators "
                      "do (default: only around the mouth, keeping the input's own skin)")
  p.add_argument("--lip-smoothing", action="store_true",
                 help="two-stage models: smooth the predicted lips over +-1 frame ([1, 2, 1]; "
                      "damps fast mouth motion, about 15%% of the amplitude the lip gain was "
                      "calibrated for, and a stream waits one frame more)")
  p.add_argument("--adapt-steps", type=int, default=0,
                 help="two-stage models: first fine-tune the renderer on the face video's own "
                      "frames for N steps, so it draws this face's lips and teeth (100: about "
                      "a minute on 2 CPU cores; default 0: the model as shipped)")
  p.add_argument("--cache-dir", default=None,
                 help="box-track cache folder (default ~/.cache/lipsync_jax/boxes)")
  p.add_argument("--no-cache", action="store_true",
                 help="do not read or write the caches: face boxes and compiled programs "
                      "(under $LIPSYNC_CACHE_DIR, default ~/.cache/lipsync_jax)")
  p.add_argument("--debug", action="store_true", help="show tracebacks")
  s = p.add_argument_group("real time (--stream)")
  s.add_argument("--stream", action="store_true",
                 help="stream: audio at real-time pace in, each frame out as it is made "
                      "(--batch-size defaults to 1)")
  s.add_argument("--stream-input", metavar="SRC",
                 help="the audio to stream: a file (read at real-time pace) or - for raw "
                      "s16le PCM on standard input (default: --audio)")
  s.add_argument("--stream-rate", type=int, default=16000,
                 help="sample rate of the raw PCM on standard input (must be 16000)")
  s.add_argument("--stream-channels", type=int, default=1,
                 help="channels of the raw PCM on standard input (averaged)")
  s.add_argument("--chunk-ms", type=float, default=20.0,
                 help="audio chunk size, as a microphone delivers it (default 20 ms)")
  s.add_argument("--pace", type=float, default=1.0,
                 help="speed of reading an audio file, x real time (0: as fast as it goes)")
  s.add_argument("--max-latency", type=float, default=0.4,
                 help="seconds from audio to frame after which a frame is dropped rather "
                      "than shown late (default 0.4)")
  return p


def _write_json(path: str, data) -> None:
  files.atomic_write_text(path, json.dumps(data, indent=2))


def _one_line(e: BaseException) -> str:
  text = str(e).strip()
  msg = text.splitlines()[0] if text else type(e).__name__
  return msg if isinstance(e, (ValueError, OSError)) else f"{type(e).__name__}: {msg}"


def _summary(report) -> str:
  t = report.timings
  stages = " ".join(f"{k}={t[k]:.2f}s" for k in ("decode", "detect", "mel", "adapt", "generate",
                                                  "paste", "encode") if k in t)
  cached = " (boxes cached)" if report.detection_cached else ""
  return (f"{report.outfile}: {report.frames} frames at {report.fps:g} fps, "
          f"{report.frames_without_face} without face{cached}, "
          f"{report.frames / max(t['total'], 1e-9):.1f} fps end to end, first frame after "
          f"{t['first_frame']:.1f}s [{stages}]")


def _backend(args) -> str:
  is_onnx = args.checkpoint.lower().endswith(".onnx")
  return ("onnxruntime" if is_onnx else "jax") if args.backend == "auto" else args.backend


def _quick_check(args) -> str | None:
  """The cheapest input errors (the full checks are `inference.prepare` and,
  for --stream, `_stream_check`)."""
  if args.checkpoint == "builtin":
    from lipsync_jax import two_stage  # pylint: disable=import-outside-toplevel
    if not two_stage.is_two_stage(two_stage.builtin_path()):
      return (f"the built-in model is missing from this install "
              f"({two_stage.builtin_path()}); pass --checkpoint")
  elif not os.path.exists(args.checkpoint):
    return f"checkpoint not found: {args.checkpoint}"
  is_onnx = os.path.isfile(args.checkpoint) and args.checkpoint.lower().endswith(".onnx")
  if _backend(args) == "onnxruntime" and not is_onnx:
    return (f"--backend onnxruntime runs an exported .onnx file, not {args.checkpoint}: "
            f"python -m lipsync_jax.export --checkpoint {args.checkpoint} --out model.onnx")
  if _backend(args) == "jax" and is_onnx:
    return f"{args.checkpoint} is an ONNX file: run it with --backend onnxruntime"
  if args.batch_size is not None and args.batch_size < 1:
    return f"batch size must be >= 1, got {args.batch_size}"
  if args.lip_gain is not None and not 0 < args.lip_gain <= 10:
    return f"--lip-gain must be in (0, 10], got {args.lip_gain}"
  if args.adapt_steps < 0:
    return f"--adapt-steps must be >= 0, got {args.adapt_steps}"
  if args.face_size is not None and args.face_size < 1:
    return f"--face-size must be >= 1, got {args.face_size}"
  if args.jobs is not None:
    return None if os.path.isfile(args.jobs) else f"jobs file not found: {args.jobs}"
  for what, path in (("face", args.face), ("audio", args.audio)):
    if not os.path.exists(path) and not (args.stream and path == "-"):
      return f"{what} file not found: {path}"
  folder = os.path.dirname(os.path.abspath(args.outfile))
  if args.outfile != "-" and not os.path.isdir(folder):
    return f"output folder does not exist: {folder}"
  return None


def _stream_check(args) -> str | None:
  """--stream's own argument errors."""
  if args.jobs is not None:
    return "--stream takes one --face and its audio, not --jobs"
  if args.stream_rate != 16000:
    return (f"--stream-rate {args.stream_rate}: the stream takes 16000 Hz PCM "
            "(resample it first, e.g. ffmpeg ... -ar 16000 -ac 1 -f s16le -)")
  for flag, value, ok in (("--stream-channels", args.stream_channels, args.stream_channels >= 1),
                          ("--chunk-ms", args.chunk_ms, args.chunk_ms > 0),
                          ("--pace", args.pace, args.pace >= 0),
                          ("--max-latency", args.max_latency, args.max_latency > 0)):
    if not ok:
      return f"{flag} must be {'>= 1' if flag == '--stream-channels' else '> 0'}, got {value}"
  return None


def _options(args, batch_size: int):
  """`InferenceOptions` from the flags (`batch_size` when --batch-size is not given)."""
  from lipsync_jax import inference
  return inference.InferenceOptions(
      pads=tuple(args.pads), resize_factor=args.resize_factor, nosmooth=args.nosmooth,
      box=tuple(args.box) if args.box else None, fps=args.fps,
      batch_size=batch_size if args.batch_size is None else args.batch_size,
      static=args.static, hard_paste=args.hard_paste, detector=args.detector,
      box_cache=not args.no_cache, cache_dir=args.cache_dir, lip_gain=args.lip_gain,
      reference=args.reference, mouth_paste=not args.lower_face_paste,
      lip_smoothing=args.lip_smoothing, adapt_steps=args.adapt_steps)


def _load_syncer(args, options, make_syncer=None):
  """The generator of --checkpoint on its backend; a --face-size other than
  the checkpoint's is a one-line error."""
  from lipsync_jax import inference
  if not args.no_cache:
    from lipsync_jax import cache  # the second run with this model skips compilation
    cache.enable_compilation_cache()
  if _backend(args) == "onnxruntime":
    syncer = inference.LipSyncer.from_onnx(args.checkpoint, options, spinning=not args.stream)
    if args.batch_size not in (None, syncer.batch_size):
      print(f"note: {args.checkpoint} runs batches of {syncer.batch_size} "
            f"(--batch-size {args.batch_size} ignored)", file=sys.stderr)
  else:
    syncer = (make_syncer or inference.load_syncer)(args.checkpoint, options)
  if args.face_size is not None and args.face_size != syncer.face_size:
    raise inference.InferenceError(f"{args.checkpoint} generates {syncer.face_size} px faces, "
                                   f"not the {args.face_size} px of --face-size")
  return syncer


def _stream_main(args, make_syncer=None) -> int:
  """infer.py --stream (see the module docstring)."""
  from lipsync_jax import inference
  from lipsync_jax.inference import stream as stream_lib
  from lipsync_jax.io import audio as audio_lib
  from lipsync_jax.io import video as video_lib
  raw = args.outfile == "-"
  log = sys.stderr if raw else sys.stdout  # stdout may carry the frames
  chunk = max(1, round(args.chunk_ms / 1000 * audio_lib.SAMPLE_RATE))
  writer = None
  if args.audio == "-":
    chunks, pace, channels = (stream_lib.pcm_chunks(sys.stdin.buffer, chunk, args.stream_channels),
                              0.0, args.stream_channels)
  else:
    wav = audio_lib.load_audio(args.audio)
    chunks, pace, channels = stream_lib.wav_chunks(wav, chunk), args.pace, 1
  if not raw:
    inference.check_output_path(args.outfile, (args.face, args.audio))
  syncer = _load_syncer(args, _options(args, batch_size=1), make_syncer)
  session = syncer.stream(args.face, channels=channels)  # a face without a face fails here
  try:
    for note in session.notes:
      print(f"note: {note}", file=sys.stderr)
    if raw:
      print(f"raw bgr24 frames, {session.width}x{session.height} at {session.fps:g} fps, "
            "on standard output", file=sys.stderr)
    else:
      writer = video_lib.VideoWriter(args.outfile, session.fps, session.width, session.height,
                                     audio=(None, audio_lib.SAMPLE_RATE), fragmented=True)
    rt = session.realtime(max_latency=args.max_latency).start()
    feeder = stream_lib.Feeder(rt, chunks, pace)
    feeder.start()

    def write_all():
      for frame in rt.frames():
        if raw:
          sys.stdout.buffer.write(frame.image.tobytes())
          sys.stdout.buffer.flush()
        else:
          writer.write(frame.image, audio=frame.audio)

    try:
      write_all()
    except KeyboardInterrupt:  # the end of a live stream: finish what is queued
      feeder.stop()
      write_all()
    feeder.join()
    if feeder.error is not None:
      raise feeder.error
    if writer is not None:
      writer.close()
  except BaseException:
    if writer is not None:
      writer.abort()
    raise
  finally:
    session.close()
  stats = rt.stats()
  print(f"{args.outfile if not raw else 'stdout'}: {stats.summary()}", file=log)
  if args.report:
    _write_json(args.report, {"fps": session.fps, "width": session.width,
                              "height": session.height, **dataclasses.asdict(stats)})
  return 0


def main(argv: list[str] | None = None, make_syncer=None) -> int:
  """CLI entry point; returns the exit status.

  `make_syncer(checkpoint, options)` replaces `inference.load_syncer`
  (tests pass one that reuses an already compiled model).
  """
  args = build_parser().parse_args(argv)
  if args.stream and args.stream_input is not None:
    args.audio = args.stream_input
  if args.stream and (problem := _stream_check(args)):
    print(f"error: {problem}", file=sys.stderr)
    return 2
  batch = args.jobs is not None
  if batch and any(v is not None for v in (args.face, args.audio, args.outfile)):
    print("error: use either --jobs or --face/--audio/--outfile, not both", file=sys.stderr)
    return 2
  if not batch and None in (args.face, args.audio, args.outfile):
    print("error: --face, --audio and --outfile are required (or --jobs CSV)", file=sys.stderr)
    return 2

  # Path checks before the (slow) imports, so that typos fail instantly.
  problem = _quick_check(args)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2

  try:
    if args.stream:
      return _stream_main(args, make_syncer)
    from lipsync_jax import inference
    options = _options(args, batch_size=64)
    if batch:
      jobs = inference.open_jobs(args.jobs)
    else:
      # Input checks first, so bad input fails before the model is loaded.
      job = inference.prepare(args.face, args.audio, args.outfile, options)
    syncer = _load_syncer(args, options, make_syncer)
    if not batch:
      report = syncer.run_prepared(job)
      print(_summary(report))
      for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
      if args.report:
        _write_json(args.report, report.to_dict())
      return 0

    def show(res):
      if res.ok:
        print(f"ok    {_summary(res.report)}")
      else:
        print(f"FAIL  {res.face} + {res.audio} -> {res.outfile}: {res.error}")
      sys.stdout.flush()

    results = inference.run_jobs(syncer, jobs, on_result=show)
    failed = sum(not r.ok for r in results)
    n = syncer.compilations
    engine = ("onnxruntime session loaded once" if syncer.backend == "onnxruntime"
              else "generator compiled " + ("once" if n == 1 else f"{n} times"))
    print(f"{len(results) - failed}/{len(results)} jobs succeeded; {engine}")
    if args.report:
      _write_json(args.report, [r.to_dict() for r in results])
    return 1 if failed else 0
  except KeyboardInterrupt:
    print("error: interrupted", file=sys.stderr)
    return 130
  except Exception as e:  # one line for users; --debug for the traceback
    if args.debug:
      raise
    print(f"error: {_one_line(e)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
