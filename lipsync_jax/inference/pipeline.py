"""The thread pipeline of a run: stages joined by bounded queues, stage timers."""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from typing import Callable
from lipsync_jax.inference.options import STAGES




class Timer:
  """Thread-safe per-stage wall-clock accumulator: every stage of `STAGES`,
  and any other stage timed (the two-stage model's "adapt")."""

  def __init__(self):
    self.totals = {s: 0.0 for s in STAGES}
    self._lock = threading.Lock()

  @contextlib.contextmanager
  def __call__(self, stage: str):
    t0 = time.perf_counter()
    try:
      yield
    finally:
      dt = time.perf_counter() - t0
      with self._lock:
        self.totals[stage] = self.totals.get(stage, 0.0) + dt


@contextlib.contextmanager
def quiet_native_stderr():
  """Silences C-level writes to fd 2 (native libraries' log lines)."""
  import sys
  try:
    fd = sys.stderr.fileno()
  except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured)
    yield
    return
  sys.stderr.flush()
  saved = os.dup(fd)
  try:
    with open(os.devnull, "w") as devnull:
      os.dup2(devnull.fileno(), fd)
      yield
  finally:
    os.dup2(saved, fd)
    os.close(saved)


class Stop(Exception):
  """Raised inside a pipeline thread when another stage failed."""


class Pipe:
  """Bounded queue whose put/get give up when the pipeline is aborted."""

  def __init__(self, size: int, abort: threading.Event):
    self.q: queue.Queue = queue.Queue(maxsize=size)
    self.abort = abort

  def put(self, item) -> None:
    while True:
      if self.abort.is_set():
        raise Stop()
      try:
        self.q.put(item, timeout=0.1)
        return
      except queue.Full:
        continue

  def get(self):
    while True:
      if self.abort.is_set():
        raise Stop()
      try:
        return self.q.get(timeout=0.1)
      except queue.Empty:
        continue


END = object()


class StageThread(threading.Thread):
  """Runs `fn`; records its exception and aborts the pipeline on failure."""

  def __init__(self, fn: Callable[[], None], abort: threading.Event, name: str):
    super().__init__(name=name, daemon=True)
    self.fn = fn
    self.abort = abort
    self.error: BaseException | None = None

  def run(self):
    try:
      self.fn()
    except Stop:
      pass
    except BaseException as e:  # re-raised by the main thread
      self.error = e
      self.abort.set()

