"""Device mesh and shardings for data-parallel (+ optional model-axis) training.

The mesh has two axes, ("data", "model"). Batches are sharded over "data"
(leading axis); parameters and optimiser state are replicated, except that
with a "model" axis of size > 1 large parameter arrays are split over it on
their last (output-channel) axis. `jax.jit` then inserts the gradient
all-reduce itself, and BatchNorm sees the global batch, so a step on N
devices computes the same function as on one.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

PyTree = Any
DATA, MODEL = "data", "model"


def make_mesh(num_devices: int | None = None, model_axis: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ("data", "model") mesh over the first `num_devices` devices.

  Raises:
    ValueError: when the devices cannot be split into `model_axis` columns.
  """
  devs = list(jax.devices() if devices is None else devices)
  if num_devices is not None:
    if num_devices > len(devs):
      raise ValueError(f"asked for {num_devices} devices, only {len(devs)} exist")
    devs = devs[:num_devices]
  if model_axis < 1 or len(devs) % model_axis:
    raise ValueError(f"cannot split {len(devs)} devices into a model axis of "
                     f"{model_axis}")
  grid = np.asarray(devs, dtype=object).reshape(len(devs) // model_axis, model_axis)
  return Mesh(grid, (DATA, MODEL))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over "data", the rest replicated."""
  return NamedSharding(mesh, P(DATA))


def param_shardings(tree: PyTree, mesh: Mesh,
                    min_size: int = 2**18) -> PyTree:
  """Per-leaf shardings: replicated, or the last axis over "model".

  A leaf is split when the model axis is > 1, the leaf has at least
  `min_size` elements and its last dimension divides evenly.
  """
  n = mesh.shape[MODEL]

  def one(x):
    shape = getattr(x, "shape", ())
    if (n > 1 and len(shape) >= 1 and int(np.prod(shape)) >= min_size
        and shape[-1] % n == 0):
      return NamedSharding(mesh, P(*([None] * (len(shape) - 1)), MODEL))
    return replicated(mesh)

  return jax.tree_util.tree_map(one, tree)


def check_batch_size(global_batch: int, mesh: Mesh) -> None:
  n = mesh.shape[DATA]
  if global_batch % n:
    raise ValueError(f"batch_size {global_batch} is not divisible by the "
                     f"{n} data-parallel devices")
  if global_batch % jax.process_count():
    raise ValueError(f"batch_size {global_batch} is not divisible by the "
                     f"{jax.process_count()} processes")


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host batch (this process's share of the global batch) -> global arrays.

  Each process passes its local rows; `jax.make_array_from_process_local_data`
  assembles the global array sharded over "data" (on one process the local
  batch is the global batch).
  """
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def put_replicated(tree: PyTree, shardings: PyTree) -> PyTree:
  """Places a host/device pytree onto the mesh with the given shardings."""
  return jax.device_put(tree, shardings)
