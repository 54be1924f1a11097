"""`python -m lipsync_jax.export`: a generator checkpoint -> an ONNX file
(and, with --int8, a quantised one that passed its quality bar).

Exit status: 0 written, 1 the fp32 file written but the INT8 one refused on
quality, 2 bad input or a failed self-check (nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys

from lipsync_jax import export
from lipsync_jax.export import int8


def build_parser() -> argparse.ArgumentParser:
  """The command-line parser (tests/test_docs.py checks the documented commands with it)."""
  p = argparse.ArgumentParser(
      prog="python -m lipsync_jax.export",
      description="Export a generator checkpoint to ONNX (checked against JAX before "
                  "it is written).")
  p.add_argument("--checkpoint", required=True,
                 help="model dir, training workdir or upstream .pth of a generator")
  p.add_argument("--format", choices=export.FORMATS, default="onnx")
  p.add_argument("--out", required=True, help="file to write (e.g. wav2lip.onnx)")
  p.add_argument("--batch-size", "--batch_size", type=int, default=export.DEFAULT_BATCH,
                 help=f"the file's fixed batch (default {export.DEFAULT_BATCH}; infer.py "
                      "runs batches of this size)")
  p.add_argument("--int8", action="store_true",
                 help="also write a static INT8 file (--int8-out), calibrated on --calibrate "
                      "videos and judged against the fp32 file on --held-out videos: written "
                      f"only if LPIPS(int8, fp32) < {int8.MAX_LPIPS}")
  p.add_argument("--int8-out", help="the INT8 file (default: OUT with .int8.onnx)")
  p.add_argument("--calibrate", nargs="+", default=[], metavar="VIDEO",
                 help="talking-face videos with speech for the INT8 calibration")
  p.add_argument("--held-out", nargs="+", default=[], metavar="VIDEO",
                 help="other talking-face videos on which INT8 is judged")
  p.add_argument("--calibration-batches", type=int, default=8,
                 help="at most this many batches of calibration frames (default 8)")
  p.add_argument("--force-int8", action="store_true",
                 help="write the INT8 file even when it misses the LPIPS bar")
  p.add_argument("--tolerance", type=float, default=1e-4,
                 help="largest relative error ||onnxruntime - JAX|| / ||JAX|| on the "
                      "self-check batch (default 1e-4)")
  return p


def _error(e: BaseException) -> int:
  text = str(e).strip()
  print(f"error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr)
  return 2


def _quick_check(args) -> str | None:
  """Argument and path errors, before the slow imports."""
  if not os.path.exists(args.checkpoint):
    return f"checkpoint not found: {args.checkpoint}"
  if not args.int8:
    return None
  if not args.calibrate or not args.held_out:
    return "--int8 needs --calibrate VIDEO... and --held-out VIDEO... (other videos)"
  for v in args.calibrate + args.held_out:
    if not os.path.isfile(v):
      return f"video not found: {v}"
  same = {os.path.realpath(v) for v in args.calibrate} & {os.path.realpath(v)
                                                          for v in args.held_out}
  if same:
    return f"a held-out video is also a calibration video: {sorted(same)[0]}"
  return None


def _write_int8(args, report, loaded) -> int:
  """Quantises the generator, judges it against the written fp32 file, and
  writes it if it passes. The INT8 graph keeps the sub-pixel transposed convs
  (`export.generator_onnx` says why)."""
  log = lambda m: print(m, file=sys.stderr)
  out = args.int8_out or (args.out[:-5] if args.out.endswith(".onnx") else args.out) + ".int8.onnx"
  size, n = report.face_size, report.batch_size
  log(f"int8: reading calibration faces from {len(args.calibrate)} video(s) ...")
  calib = int8.face_batches(args.calibrate, size, n, args.calibration_batches, progress=log)
  held = int8.face_batches(args.held_out, size, n, progress=log)
  tmp, subpixel = int8.temporary_path(out), int8.temporary_path(out)
  try:
    log(f"int8: calibrating on {len(calib) * n} frames, judging on {len(held) * n} ...")
    model = export.generator_onnx(loaded.module, loaded.variables, loaded.arch, n,
                                  transposed_convs="subpixel")
    with open(subpixel, "wb") as f:
      f.write(model.SerializeToString())
    int8.quantize(subpixel, tmp, calib)
    q = int8.judge(report.path, tmp, held)
    int8.set_metadata(tmp, {"precision": "int8", "int8_lpips": f"{q['lpips']:.5f}",
                            "int8_psnr": f"{q['psnr']:.2f}"})
    figures = (f"LPIPS(int8, fp32) {q['lpips']:.4f}, PSNR {q['psnr']:.2f} dB, SSIM "
               f"{q['ssim']:.4f}, max |diff| {q['max_abs_u8']}/255 on {q['frames']} held-out "
               "frames")
    if q["lpips"] < int8.MAX_LPIPS or args.force_int8:
      os.replace(tmp, out)
      print(f"wrote {out}: INT8; {figures}")
      return 0
    print(f"int8: not written: {figures}; the bar is LPIPS < {int8.MAX_LPIPS} "
          "(--force-int8 writes it anyway)")
    return 1
  finally:
    for path in (tmp, subpixel):
      if os.path.exists(path):
        os.remove(path)


def main(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  problem = _quick_check(args)
  if problem:
    print(f"error: {problem}", file=sys.stderr)
    return 2
  try:
    export.require_onnxruntime()
    from lipsync_jax import checkpoint  # pylint: disable=import-outside-toplevel
    from lipsync_jax import models  # pylint: disable=import-outside-toplevel
    loaded = checkpoint.load_model(args.checkpoint, expected_arch=models.ALL_GENERATORS)
    report = export.export_onnx(loaded.module, loaded.variables, loaded.arch, args.out,
                                batch_size=args.batch_size, tolerance=args.tolerance,
                                log=lambda m: print(m, file=sys.stderr))
  except (ValueError, OSError) as e:
    return _error(e)
  print(f"wrote {report.path}: {report.arch}, {report.face_size} px faces, batch "
        f"{report.batch_size}, {report.nodes} nodes, {report.megabytes:.1f} MB; vs JAX: relative "
        f"error {report.relative_error:.2g}, max abs {report.max_abs_error:.2g}; "
        f"{report.seconds:.1f} s")
  if not args.int8:
    return 0
  try:
    return _write_int8(args, report, loaded)
  except (ValueError, OSError) as e:
    return _error(e)


if __name__ == "__main__":
  sys.exit(main())
