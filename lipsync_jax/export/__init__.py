"""Exporting a trained generator to ONNX, for onnxruntime and other runtimes.

    python -m lipsync_jax.export --checkpoint runs/wav2lip/model --format onnx \\
        --out wav2lip.onnx [--batch-size 32]

The file computes `models.generate_frames` at a fixed batch N:

* inputs `audio` (N, 80, 16, 1) float32 mel windows and `faces` (N, S, S, 6)
  float32 in [0, 1] (masked target + reference, BGR, NHWC), in that order;
* output `frames` (N, S, S, 3) float32 in [0, 1], BGR, NHWC;

S is the checkpoint's face size (96 for upstream models). The file's
metadata (`lipsync_jax.*` keys) names the architecture, the face size and the
batch, so `infer.py --backend onnxruntime` can refuse a file that is not a
generator of ours.

Every export checks itself before it writes: onnxruntime runs the file on a
random batch and the result must match JAX's (the weights passed as jit
arguments, as `LipSyncer` does) to a relative error ||ort - jax|| / ||jax||
of at most `tolerance` (1e-4; seen: 5e-7 for Wav2Lip, 4e-6 to 8e-6 for
LPIPS-AttnWav2Lip). Otherwise nothing is written. The largest single-pixel
difference is reported too; it is not the criterion because LPIPS-AttnWav2Lip
has pixels where float32 itself is unstable: its instance norms divide by
small deviations, and there JAX's own jit and eager runs differ by 1e-4 to
2e-4 (random weights, seen).

`jaxpr_onnx` holds the translator and says why it is ours and what it folds.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any

import numpy as np

FORMATS = ("onnx",)
META_PREFIX = "lipsync_jax."
FORMAT_VERSION = "1"
DEFAULT_BATCH = 32


class ExportError(ValueError):
  """An export that cannot be done; the message is one line meant for users."""


@dataclasses.dataclass
class ExportReport:
  path: str
  arch: str
  face_size: int
  batch_size: int
  nodes: int
  megabytes: float
  max_abs_error: float
  relative_error: float
  seconds: float


def require_onnxruntime():
  """The onnxruntime module, or a one-line ExportError saying how to get it."""
  try:
    import onnx  # pylint: disable=import-outside-toplevel,unused-import
    import onnxruntime  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ExportError("ONNX export and the onnxruntime backend need the [onnx] extra: "
                      "pip install 'lipsync-jax[onnx]'") from None
  return onnxruntime


def session(model: bytes | str | os.PathLike, threads: int = 0, spinning: bool = True):
  """An onnxruntime CPU session with every graph optimisation on. `spinning`
  False: its threads sleep between runs instead of spinning (for runs paced
  by a clock, as in streaming: less CPU, and faster on a busy machine)."""
  ort = require_onnxruntime()
  so = ort.SessionOptions()
  so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  so.intra_op_num_threads = int(threads)
  if not spinning:
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
  so.log_severity_level = 3  # errors only: no notes about pruned initializers
  src = model if isinstance(model, bytes) else os.fspath(model)
  return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def faces_input(crops: np.ndarray) -> np.ndarray:
  """(N, S, S, 3) uint8 face crops -> the file's `faces` input (N, S, S, 6)
  float32 in [0, 1]: the crop with its lower half zeroed, then the crop as
  reference (what `LipSyncer` builds in JAX)."""
  x = np.asarray(crops, np.float32) / 255.0
  masked = x.copy()
  masked[:, x.shape[1] // 2:] = 0.0
  return np.concatenate([masked, x], axis=-1)


def frames_to_u8(frames: np.ndarray) -> np.ndarray:
  """The file's `frames` output, [0, 1] float -> uint8, rounded as `LipSyncer` does."""
  return np.clip(np.round(np.asarray(frames) * 255.0), 0, 255).astype(np.uint8)


def example_batch(batch_size: int, face_size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """A random (mel, faces) batch in the file's input ranges."""
  r = np.random.default_rng(seed)
  mel = r.normal(-1.0, 1.5, (batch_size, 80, 16, 1)).astype(np.float32)
  faces = r.random((batch_size, face_size, face_size, 6)).astype(np.float32)
  faces[:, face_size // 2:, :, :3] = 0.0  # the masked lower half, as in inference
  return mel, faces


def generator_onnx(module, variables, arch: str, batch_size: int = DEFAULT_BATCH,
                   transposed_convs: str = "native"):
  """The ONNX model (`onnx.ModelProto`) of `generate_frames(module, variables)`
  at batch `batch_size`, with our metadata.

  `transposed_convs`: "native" writes the stride-2 transposed convs as ONNX
  ConvTranspose (the fastest fp32 graph under onnxruntime); "subpixel" as the
  conv + depth-to-space that XLA runs, which onnxruntime's INT8 kernels run
  faster (full-size Wav2Lip, batch 32, AVX-512 VNNI: native fp32 44.2 and
  INT8 73.6 frames/s; subpixel fp32 36.6 and INT8 135.6).
  """
  from lipsync_jax import models  # pylint: disable=import-outside-toplevel
  from lipsync_jax.export import jaxpr_onnx  # pylint: disable=import-outside-toplevel
  from lipsync_jax.models import layers  # pylint: disable=import-outside-toplevel
  require_onnxruntime()
  if arch not in models.ALL_GENERATORS:
    raise ExportError(f"only generators export to ONNX; {arch!r} is not one "
                      f"({', '.join(models.ALL_GENERATORS)})")
  if batch_size < 1 or batch_size % models.frames_per_call(module):
    raise ExportError(f"batch size must be a positive multiple of "
                      f"{models.frames_per_call(module)} for {arch}, got {batch_size}")
  size = models.face_size_of(module) or 96
  variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
  fn = lambda mel, faces: models.generate_frames(module, variables, mel, faces)
  try:
    # Transposed convs as lhs-dilated convs: native ConvTranspose in the graph
    # (`layers.conv_transpose_method` says why).
    method = {"native": "dilated", "subpixel": "auto"}[transposed_convs]
    with layers.conv_transpose_method(method):
      return jaxpr_onnx.to_onnx(
          fn, example_batch(batch_size, size), ["audio", "faces"], ["frames"],
          doc=f"lipsync_jax {arch}: audio (N,80,16,1) + faces (N,{size},{size},6) "
              f"[0,1] BGR -> frames (N,{size},{size},3) [0,1] BGR",
          metadata={f"{META_PREFIX}arch": arch, f"{META_PREFIX}face_size": size,
                    f"{META_PREFIX}batch_size": batch_size,
                    f"{META_PREFIX}format_version": FORMAT_VERSION})
  except NotImplementedError as e:
    raise ExportError(f"{arch} cannot be exported yet: {e}") from None


def check(model_bytes: bytes, module, variables, batch_size: int, face_size: int,
          seed: int = 0) -> tuple[float, float]:
  """(max |ort - jax|, ||ort - jax|| / ||jax||) on a random batch, the JAX
  side as `LipSyncer` runs it: jit with the weights as arguments."""
  import jax  # pylint: disable=import-outside-toplevel
  from lipsync_jax import models  # pylint: disable=import-outside-toplevel
  mel, faces = example_batch(batch_size, face_size, seed + 1)
  variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
  ref = jax.jit(lambda v, a, f: models.generate_frames(module, v, a, f))(variables, mel, faces)
  got = np.asarray(session(model_bytes).run(None, {"audio": mel, "faces": faces})[0], np.float64)
  ref = np.asarray(ref, np.float64)
  return (float(np.abs(got - ref).max()),
          float(np.linalg.norm(got - ref) / max(np.linalg.norm(ref), 1e-12)))


def export_onnx(module, variables, arch: str, out: str | os.PathLike,
                batch_size: int = DEFAULT_BATCH, tolerance: float = 1e-4,
                log=print) -> ExportReport:
  """Writes the generator's ONNX file to `out` (atomically) after checking it
  against JAX: relative error <= `tolerance` (see the module docstring).

  Raises:
    ExportError: the model cannot be exported, or the check fails (then
      nothing is written).
  """
  from lipsync_jax import models  # pylint: disable=import-outside-toplevel
  from lipsync_jax.io import files  # pylint: disable=import-outside-toplevel
  t0 = time.perf_counter()
  out = pathlib.Path(out)
  if not out.parent.is_dir():
    raise ExportError(f"output folder does not exist: {out.parent}")
  size = models.face_size_of(module) or 96
  log(f"tracing {arch} ({size} px faces) at batch {batch_size} ...")
  model = generator_onnx(module, variables, arch, batch_size)
  data = model.SerializeToString()
  log(f"checking {len(model.graph.node)} nodes against JAX with onnxruntime ...")
  err, rel = check(data, module, variables, batch_size, size)
  if not rel <= tolerance:
    raise ExportError(f"the ONNX graph differs from JAX: relative error {rel:.3g} > "
                      f"{tolerance:g} (max abs {err:.3g}); nothing written")
  files.atomic_write_bytes(out, data)
  return ExportReport(path=str(out), arch=arch, face_size=size, batch_size=batch_size,
                      nodes=len(model.graph.node), megabytes=len(data) / 2**20,
                      max_abs_error=err, relative_error=rel,
                      seconds=time.perf_counter() - t0)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
  """Our metadata of an exported file: {"arch", "face_size", "batch_size"}.

  Raises:
    ExportError: not an ONNX file, or not a generator exported by us.
  """
  require_onnxruntime()
  import onnx  # pylint: disable=import-outside-toplevel
  try:
    model = onnx.load(os.fspath(path), load_external_data=False)
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f"{path} is not a readable ONNX file ({type(e).__name__})") from None
  meta = {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props
          if p.key.startswith(META_PREFIX)}
  if "arch" not in meta:
    raise ExportError(f"{path} is not a lipsync_jax generator export "
                      "(make one with python -m lipsync_jax.export)")
  return {"arch": meta["arch"], "face_size": int(meta["face_size"]),
          "batch_size": int(meta["batch_size"])}
