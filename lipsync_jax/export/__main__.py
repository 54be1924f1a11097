"""`python -m lipsync_jax.export`: a generator checkpoint -> an ONNX file.

Exit status: 0 written, 2 bad input or a failed self-check (nothing written).
"""

from __future__ import annotations

import argparse
import os
import sys

from lipsync_jax import export


def _parser() -> argparse.ArgumentParser:
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
  p.add_argument("--tolerance", type=float, default=1e-4,
                 help="largest relative error ||onnxruntime - JAX|| / ||JAX|| on the "
                      "self-check batch (default 1e-4)")
  return p


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if not os.path.exists(args.checkpoint):
    print(f"error: checkpoint not found: {args.checkpoint}", file=sys.stderr)
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
    text = str(e).strip()
    print(f"error: {text.splitlines()[0] if text else type(e).__name__}", file=sys.stderr)
    return 2
  print(f"wrote {report.path}: {report.arch}, {report.face_size} px faces, batch "
        f"{report.batch_size}, {report.nodes} nodes, {report.megabytes:.1f} MB; vs JAX: relative "
        f"error {report.relative_error:.2g}, max abs {report.max_abs_error:.2g}; "
        f"{report.seconds:.1f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
