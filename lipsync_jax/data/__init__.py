"""Training data: packed ArrayRecord datasets and grain loaders.

Contract (stable API)::

  loader = make_loader(data_dir, split, kind, global_batch_size, seed, *,
                       num_epochs=None, worker_count=0, shard_index=None,
                       shard_count=None, **sample_options)
  it = iter(loader)            # grain DataLoaderIterator
  batch = next(it)             # dict of numpy arrays, see below
  state = it.get_state()       # bytes; store it in the training checkpoint
  it.set_state(state)          # resume: identical batches to an
                               # uninterrupted stream
  eval_loader = make_eval_loader(data_dir, split, kind, global_batch_size,
                                 seed=0, drop_remainder=False)

* ``split``: 'train', 'val', 'test' (``DATA_DIR/splits/*.txt``) or 'all'.
* ``shard_index``/``shard_count`` default to jax.process_index() /
  jax.process_count(); each process yields global_batch_size // shard_count
  samples per batch and sees a disjoint part of every epoch.
* An epoch visits every clip of the split ``windows_per_clip`` (default 1)
  times, in a seeded permutation; the window inside the clip is drawn from a
  generator seeded by (seed, global sample index): deterministic for a seed.
* Batches (host numpy; images BGR uint8, the step divides by 255):
  - kind="syncnet": faces (B,5,S,S,3) uint8 (full 5-frame window; the step
    takes rows S/2: and stacks them to (B,S/2,S,15)), audio (B,80,16,1)
    float32, label (B,) float32 (1 = in sync, balanced by a seeded coin;
    negatives shifted by >= min_offset frames (default 5) within the clip).
  - kind="generator": target (B,5,S,S,3) uint8, reference (B,5,S,S,3) uint8
    (another window of the same clip), audio (B,5,80,16,1) float32 per-frame
    windows, sync_audio (B,80,16,1) float32; context_frames=c adds context
    (B,5+2c,S,S,3) uint8 (frames f-c..f+4+c); with_aus=True adds aus (B,5,K)
    and au_valid (B,5) float32 (labels in DATA_DIR/au_labels, see au_store).
  - with_meta=True adds clip_index and the window starts (int32, (B,)).
* Alignment convention (training AND inference): frame i's per-frame mel
  window is columns [int(80 i / fps), +16) (no upstream -1 shift); the sync
  window of the 5-frame window starting at f is [int(80 f / fps), +16), so
  sync_audio == audio[:, 0]. Windows never span a frame without a face and
  always fit inside the clip's mel.
* Mel is precomputed in the dataset (float16 blocks), never recomputed.

Dataset format: see ``lipsync_jax.data.format``. Writers:
``data_prep/preprocess.py`` (raw videos), ``data_prep/convert_wav2lip_tree.py``
(upstream jpg trees), ``lipsync_jax.data.testing.write_synthetic_dataset``.
"""

from __future__ import annotations

from typing import Any

from lipsync_jax.data.format import ClipMeta
from lipsync_jax.data.format import DatasetFormatError
from lipsync_jax.data.format import DatasetIndex
from lipsync_jax.data.format import KINDS
from lipsync_jax.data.format import load_index

_LAZY = ("make_loader", "make_eval_loader")  # grain is imported on first use


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    from lipsync_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    return getattr(pipeline, name)
  raise AttributeError(f"module 'lipsync_jax.data' has no attribute {name!r}")

__all__ = [
    "ClipMeta", "DatasetFormatError", "DatasetIndex", "KINDS", "load_index",
    "make_eval_loader", "make_loader",
]
