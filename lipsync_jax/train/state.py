"""Train state: what the jitted step reads and returns.

One pytree holds everything a step needs. Its `params`, `batch_stats`,
`opt_state` (and the discriminator's) are trained and checkpointed; `frozen`
holds constants (the expert's variables, LPIPS weights) that are passed to
the step as arguments, never differentiated, never in the optimiser state and
never checkpointed (they are rebuilt from their source at start-up).
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """State of one training run (both phases).

  Attributes:
    step: int32 scalar, number of optimiser steps taken.
    params, batch_stats: the trained model's variables (batch_stats may be {}).
    opt_state: optax state of `tx`.
    d_params, d_opt_state: discriminator params and optax state, or None.
    sync_weight: float32 scalar, current weight of the expert sync loss
      (generators; 0 for the expert). Part of the state so that the schedule
      resumes exactly and changing it never recompiles the step.
    head: extra trained scalars outside the model (the expert's learned
      cosine scale/bias), {} when unused.
    frozen: constants, not trained and not checkpointed.
  """
  step: jax.Array
  params: PyTree
  batch_stats: PyTree
  opt_state: PyTree
  d_params: PyTree
  d_opt_state: PyTree
  sync_weight: jax.Array
  head: PyTree
  frozen: PyTree
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation | None = flax.struct.field(
      pytree_node=False, default=None)

  def trainable(self) -> dict[str, PyTree]:
    """The checkpointed part: everything but `frozen` (a plain dict)."""
    return {
        "step": self.step, "params": self.params,
        "batch_stats": self.batch_stats, "opt_state": self.opt_state,
        "d_params": self.d_params, "d_opt_state": self.d_opt_state,
        "sync_weight": self.sync_weight, "head": self.head,
    }

  def replace_trainable(self, tree: dict[str, PyTree]) -> "TrainState":
    return self.replace(**tree)


def make_optimizer(learning_rate: float, b1: float, b2: float,
                   warmup_steps: int = 0,
                   grad_clip_norm: float = 0.0,
                   name: str = "adam",
                   schedule: str = "constant",
                   decay_steps: int = 0) -> optax.GradientTransformation:
  """Adam (upstream; or plain SGD) with an optional global-norm clip.

  The learning rate rises linearly from 0 over `warmup_steps`, then stays
  constant (`schedule="constant"`, upstream) or follows a cosine down to 0 at
  step `decay_steps` (`schedule="cosine"`, for short fixed-length runs).
  """
  lr: float | Callable[[int], float] = learning_rate
  if schedule == "cosine":
    if decay_steps <= warmup_steps:
      raise ValueError(f"a cosine schedule needs decay_steps ({decay_steps}) > "
                       f"warmup_steps ({warmup_steps})")
    lr = optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps,
                                            decay_steps)
  elif schedule != "constant":
    raise ValueError(f"optimizer.schedule must be 'constant' or 'cosine', got {schedule!r}")
  elif warmup_steps > 0:
    lr = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  if name == "adam":
    tx = optax.adam(lr, b1=b1, b2=b2)
  elif name == "sgd":
    tx = optax.sgd(lr)
  else:
    raise ValueError(f"optimizer.name must be 'adam' or 'sgd', got {name!r}")
  if grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx


def create_state(params: PyTree, batch_stats: PyTree,
                 tx: optax.GradientTransformation, *,
                 d_params: PyTree = None,
                 d_tx: optax.GradientTransformation | None = None,
                 head: PyTree | None = None, sync_weight: float = 0.0,
                 frozen: PyTree | None = None) -> TrainState:
  """A fresh state at step 0 (the optimiser covers params and head)."""
  head = {} if head is None else head
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats=batch_stats or {},
      opt_state=tx.init({"model": params, "head": head}),
      d_params=d_params,
      d_opt_state=None if d_params is None else d_tx.init(d_params),
      sync_weight=jnp.asarray(sync_weight, jnp.float32),
      head=head,
      frozen={} if frozen is None else frozen,
      tx=tx,
      d_tx=d_tx,
  )
