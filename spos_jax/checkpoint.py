"""Orbax checkpoints of the train state (all seeds) in WORKDIR/checkpoints.

Orbax writes each step into a temporary folder and renames it when complete, so a
crash during a save never leaves a newest checkpoint that looks finished.
"""
from __future__ import annotations

import os

from absl import logging
import flax
import jax
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was needed."""


class Checkpointer:
  """Save every K steps and at the end, keep the newest few, restore the newest."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=False)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state) -> None:
    if step in self._manager.all_steps():
      return
    self._manager.save(step, args=ocp.args.StandardSave(flax.serialization.to_state_dict(state)))
    self._manager.wait_until_finished()

  def restore(self, step: int, template):
    """The checkpoint of `step` shaped like `template` (a state of the same config)."""
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          flax.serialization.to_state_dict(template))
    restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
    return flax.serialization.from_state_dict(template, restored)

  def restore_latest(self, template):
    """The newest checkpoint, or `template` itself when there is none yet."""
    step = self.latest_step()
    if step is None:
      return template
    logging.info('restoring %s step %d', self.directory, step)
    return self.restore(step, template)

  def close(self) -> None:
    self._manager.close()
