"""Models for the web pages: any checkpoint `infer.py` takes, loaded once."""

from __future__ import annotations

import os
import threading
from typing import Callable

BUILTIN = "builtin"


def checkpoint_problem(checkpoint: str) -> str | None:
  """A one-line reason why `checkpoint` cannot be loaded, found without
  importing jax (a missing path or built-in model), else None. A foreign
  file or folder is found when it is loaded (`load_model`)."""
  if checkpoint != BUILTIN:
    return None if os.path.exists(checkpoint) else f"checkpoint not found: {checkpoint}"
  from lipsync_jax import two_stage_model as two_stage  # pylint: disable=import-outside-toplevel
  if two_stage.is_two_stage(two_stage.builtin_path()):
    return None
  return f"the built-in model is missing from this install ({two_stage.builtin_path()})"


def load_model(checkpoint: str, options=None, streaming: bool = False):
  """The `LipSyncer` of `checkpoint`: "builtin", a model or two-stage
  directory, a training workdir, an upstream `.pth`, or an exported `.onnx`
  (run by onnxruntime; `streaming` turns its spinning threads off, as
  `infer.py --stream` does). Bad checkpoints raise one-line errors."""
  from lipsync_jax import cache, inference  # pylint: disable=import-outside-toplevel
  cache.enable_compilation_cache()  # a restarted server skips the compilation
  if os.path.isfile(checkpoint) and checkpoint.lower().endswith(".onnx"):
    return inference.LipSyncer.from_onnx(checkpoint, options, spinning=not streaming)
  return inference.load_syncer(checkpoint, options)


class ModelCache:
  """Syncers by checkpoint path, each loaded on first use and kept.

  Args:
    load: `load(checkpoint)` -> a `LipSyncer` (default `load_model`).
  """

  def __init__(self, load: Callable[[str], object] = load_model):
    self._load = load
    self._models: dict[str, object] = {}
    self._lock = threading.Lock()

  def __contains__(self, checkpoint: str) -> bool:
    return checkpoint in self._models

  def get(self, checkpoint: str):
    """The loaded syncer of `checkpoint` (loads it the first time; one
    load at a time)."""
    with self._lock:
      if checkpoint not in self._models:
        problem = checkpoint_problem(checkpoint)
        if problem:
          from lipsync_jax.inference import InferenceError  # pylint: disable=import-outside-toplevel
          raise InferenceError(problem)
        self._models[checkpoint] = self._load(checkpoint)
      return self._models[checkpoint]
