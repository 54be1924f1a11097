"""The onnxruntime backend: a generator file from `python -m lipsync_jax.export`
run on the CPU in place of the jit-compiled JAX generator.

`OnnxGenerator` has the call contract of `LipSyncer.generate_batch` without
the variables: (N, 80, 16, 1) float32 mels and (N, S, S, 3) uint8 crops ->
(N, S, S, 3) uint8 faces, N being the file's fixed batch.
"""

from __future__ import annotations

import os

import numpy as np

from lipsync_jax.inference.options import InferenceError


class OnnxGenerator:
  """An exported generator in an onnxruntime session.

  Attributes:
    arch, face_size, batch_size: from the file's metadata, checked against
      its input shapes.
  """

  def __init__(self, path: str | os.PathLike, threads: int = 0, spinning: bool = True):
    from lipsync_jax import export  # pylint: disable=import-outside-toplevel
    from lipsync_jax import models  # pylint: disable=import-outside-toplevel
    try:
      meta = export.read_metadata(path)
      self.session = export.session(path, threads, spinning)
    except export.ExportError as e:
      raise InferenceError(str(e)) from None
    except Exception as e:  # pylint: disable=broad-except
      raise InferenceError(f"onnxruntime cannot load {path}: "
                           f"{str(e).strip().splitlines()[0] if str(e).strip() else e!r}") from None
    self.path = os.fspath(path)
    self.arch, self.face_size, self.batch_size = (meta["arch"], meta["face_size"],
                                                  meta["batch_size"])
    if self.arch not in models.ALL_GENERATORS:
      raise InferenceError(f"{path} is a {self.arch} model, expected one of: "
                           f"{', '.join(models.ALL_GENERATORS)}")
    n, s = self.batch_size, self.face_size
    want = {"audio": [n, 80, 16, 1], "faces": [n, s, s, 6]}
    got = {i.name: list(i.shape) for i in self.session.get_inputs()}
    outputs = {o.name: list(o.shape) for o in self.session.get_outputs()}
    if got != want or outputs != {"frames": [n, s, s, 3]}:
      raise InferenceError(f"{path} does not take the inputs its metadata names ({self.arch}, "
                           f"{s} px, batch {n}): inputs {got}, outputs {outputs}")

  def __call__(self, mel: np.ndarray, crops: np.ndarray) -> np.ndarray:
    """(N, 80, 16, 1) f32 mels, (N, S, S, 3) u8 crops -> (N, S, S, 3) u8."""
    from lipsync_jax import export  # pylint: disable=import-outside-toplevel
    out = self.session.run(None, {"audio": np.asarray(mel, np.float32),
                                  "faces": export.faces_input(crops)})[0]
    return export.frames_to_u8(out)
