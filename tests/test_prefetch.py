"""The read-ahead thread keeps the loader's batches and resume state exact."""

from __future__ import annotations

import numpy as np
import pytest

from lipsync_jax.data import make_loader
from lipsync_jax.data import testing
from lipsync_jax.data.prefetch import ThreadPrefetchIterator


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return testing.write_synthetic_dataset(tmp_path_factory.mktemp("syn"), num_clips=4,
                                         num_frames=40, img_size=32, seed=0)


def _loader(data_dir):
  return make_loader(data_dir, "train", "syncnet", global_batch_size=2, seed=3)


def _same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_same_batches_and_states_as_the_plain_iterator(data_dir):
  plain = iter(_loader(data_dir))
  wrapped = ThreadPrefetchIterator(iter(_loader(data_dir)), buffer_size=3)
  assert wrapped.get_state() == plain.get_state()
  for _ in range(7):
    _same(next(wrapped), next(plain))
    # The state is that of the consumed batch, not of the read-ahead.
    assert wrapped.get_state() == plain.get_state()
  wrapped.close()


def test_resume_from_state_repeats_the_stream(data_dir):
  it = ThreadPrefetchIterator(iter(_loader(data_dir)))
  for _ in range(3):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(4)]
  fresh = ThreadPrefetchIterator(iter(_loader(data_dir)))
  next(fresh)                      # already reading ahead from elsewhere
  fresh.set_state(state)
  for w in want:
    _same(next(fresh), w)
  it.close()
  fresh.close()


def test_end_and_errors_reach_the_consumer():
  class Finite:
    def __init__(self, items):
      self.items, self.i = items, 0

    def __next__(self):
      if self.i == len(self.items):
        raise StopIteration
      x = self.items[self.i]
      self.i += 1
      if isinstance(x, Exception):
        raise x
      return x

    def get_state(self):
      return str(self.i).encode()

  it = ThreadPrefetchIterator(Finite([1, 2]))
  assert list(it) == [1, 2]
  bad = ThreadPrefetchIterator(Finite([1, OSError("disk gone")]))
  assert next(bad) == 1
  with pytest.raises(OSError, match="disk gone"):
    next(bad)
