"""Orbax checkpoints of a training run: state, data-iterator state and meta.

Layout: WORKDIR/checkpoints/<step>/{state,data,meta}/. Orbax writes each
checkpoint into a temporary folder and renames it when complete, so a
checkpoint is either whole or absent (a killed save leaves only a
`*.orbax-checkpoint-tmp-*` folder, which `latest_step` ignores and the next
start deletes).

Kept: the last `keep_last` checkpoints plus the best one by eval metric
(checkpoints saved with eval metrics compete for "best"; the loop saves one
whenever the eval metric improves).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as cm

import grain

PyTree = Any


class Checkpointer:
  """Thin wrapper over `ocp.CheckpointManager` for our three items.

  Args:
    directory: where step folders go (created).
    keep_last: K latest checkpoints kept.
    best_metric: key of the eval metrics that ranks checkpoints (lower is
      better); None keeps only the latest K.
  """

  def __init__(self, directory: str | os.PathLike, keep_last: int = 3,
               best_metric: str | None = "loss"):
    self.directory = os.path.abspath(os.fspath(directory))
    policies: list[Any] = [cm.LatestN(n=max(1, int(keep_last)))]
    if best_metric:
      # Ascending sort keeps the *last* n, so sort descending for "lower is
      # better" (orbax's own best_mode="min" does the same).
      policies.append(cm.BestN(get_metric_fn=lambda m: m[best_metric],
                               reverse=True, n=1,
                               keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=cm.AnyPreservationPolicy(policies),
        enable_async_checkpointing=False,
        cleanup_tmp_directories=True,
        create=True,
    )
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=("state", "data", "meta"), options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, trainable: PyTree, data_iter: Any | None,
           meta: dict[str, Any], metrics: dict[str, float] | None = None) -> str:
    """Writes checkpoint `step` (synchronously) and returns its folder."""
    items = {"state": ocp.args.StandardSave(trainable),
             "meta": ocp.args.JsonSave(meta)}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                      force=True)
    self.manager.wait_until_finished()
    return self.step_dir(step)

  def restore(self, step: int, trainable_template: PyTree,
              data_iter: Any | None) -> tuple[PyTree, dict[str, Any]]:
    """Restores checkpoint `step` into the template's shapes and shardings.

    The data iterator (if given) is restored in place.
    Returns (trainable, meta).
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct,
                                      trainable_template)
    items = {"state": ocp.args.StandardRestore(abstract),
             "meta": ocp.args.JsonRestore()}
    if data_iter is not None:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"], dict(restored["meta"])

  def close(self) -> None:
    self.manager.wait_until_finished()
    # The manager cleans old temporary folders in a background thread started
    # by its constructor, which its close() does not join (orbax 0.12); a run
    # that stops early (bad data) would leave it running into interpreter
    # shutdown, where it fails with "cannot schedule new futures" on stderr.
    cleanup = getattr(self.manager, "_cleanup_tmp_directory_future", None)
    if cleanup is not None:
      cleanup.result()
    self.manager.close()
