"""A background thread that prepares the next batches while the step runs.

With `worker_count=0` grain reads and decodes in the caller's thread, so on a
small machine the train loop alternates between decoding JPEGs and running
the jitted step. `ThreadPrefetchIterator` moves the loader to a thread (JPEG
decode and ArrayRecord reads release the GIL) and keeps checkpointing exact:
`get_state()` is the loader state *after the last batch handed out*, not
after the last batch read ahead, so a resumed run sees the same batches as an
uninterrupted one.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Iterator

_END = object()


class ThreadPrefetchIterator:
  """Wraps a grain loader iterator (get_state/set_state) with read-ahead.

  Args:
    iterator: e.g. `iter(make_loader(...))`; only this wrapper touches it
      from now on.
    buffer_size: batches read ahead (>= 1).
  """

  def __init__(self, iterator: Any, buffer_size: int = 2):
    if buffer_size < 1:
      raise ValueError(f"buffer_size must be >= 1, got {buffer_size}")
    self._it = iterator
    self._size = buffer_size
    self._state = iterator.get_state()
    self._thread: threading.Thread | None = None
    self._queue: queue.Queue = queue.Queue(buffer_size)
    self._stop = threading.Event()

  def _work(self, q: queue.Queue, stop: threading.Event) -> None:
    try:
      while not stop.is_set():
        try:
          batch = next(self._it)
        except StopIteration:
          q.put((_END, None))
          return
        item = (batch, self._it.get_state())
        while not stop.is_set():
          try:
            q.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except BaseException as e:  # handed to the consumer, raised there
      q.put((e, None))

  def start_prefetch(self) -> None:
    if self._thread is None:
      self._stop = threading.Event()
      self._queue = queue.Queue(self._size)
      self._thread = threading.Thread(target=self._work, args=(self._queue, self._stop),
                                      name="batch-prefetch", daemon=True)
      self._thread.start()

  def _halt(self) -> None:
    if self._thread is not None:
      self._stop.set()
      self._thread.join()
      self._thread = None

  def __iter__(self) -> Iterator[Any]:
    return self

  def __next__(self) -> Any:
    self.start_prefetch()
    batch, state = self._queue.get()
    if batch is _END:
      self._halt()
      raise StopIteration
    if isinstance(batch, BaseException):
      self._halt()
      raise batch
    self._state = state
    return batch

  def get_state(self) -> bytes:
    """Loader state after the last batch returned by `next`."""
    return self._state

  def set_state(self, state: bytes) -> None:
    """Drops the read-ahead batches and repositions the loader."""
    self._halt()
    self._it.set_state(state)
    self._state = state

  def close(self) -> None:
    self._halt()
