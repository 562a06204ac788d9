"""Orbax checkpoints of the train state (all seeds) in WORKDIR/checkpoints.

Orbax writes each step into a temporary folder and renames it when complete, so a
crash during a save never leaves a newest checkpoint that looks finished; the
leftover temporary folder is removed when the checkpoints are next opened.
"""
from __future__ import annotations

import os
import shutil
import time

from absl import logging
import flax
import jax
import orbax.checkpoint as ocp


# Orbax names a checkpoint being written '<step>.orbax-checkpoint-tmp[-...]' until the
# save completes and renames it to '<step>'.
ORBAX_TMP_SUFFIX = '.orbax-checkpoint-tmp'


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was needed."""


class Checkpointer:
  """Save every K steps and at the end, keep the newest few, restore the newest."""

  def __init__(self, workdir: str, keep: int):
    self.directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    self.quarantine = os.path.join(os.path.abspath(workdir), 'checkpoints_unreadable')
    self._keep = keep
    self._manager = self._open()

  def _open(self):
    self._remove_temporary_folders()
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(self.directory, options=options)

  def _remove_temporary_folders(self) -> None:
    """Delete what saves cut short by a crash left behind (one process writes a workdir).

    Done here, synchronously: orbax's own cleanup_tmp_directories runs in the
    background and is awaited only by the next save.
    """
    if not os.path.isdir(self.directory):
      return
    for name in os.listdir(self.directory):
      if ORBAX_TMP_SUFFIX in name:
        logging.info('removing %s, left by a save that did not finish', name)
        shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

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
    """The newest readable checkpoint, or `template` itself when there is none yet.

    An unreadable newest checkpoint (truncated, garbled) is reported and the one
    before it is tried; when none can be read the run refuses to start rather
    than train from scratch over the old files.
    """
    steps = sorted(self._manager.all_steps(), reverse=True)
    failures = []
    for step in steps:
      try:
        state = self.restore(step, template)
      except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds
        path = os.path.join(self.directory, str(step))
        logging.warning('checkpoint %s is unreadable (%s: %s); trying an older one',
                        path, type(e).__name__, str(e).splitlines()[0][:200])
        failures.append(path)
        continue
      logging.info('restored %s step %d', self.directory, step)
      if failures:
        self._set_aside(failures)
      return state
    if failures:
      raise CheckpointError(
          f'no readable checkpoint in {self.directory} (unreadable: {", ".join(failures)}); '
          f'refusing to start over them: move them away to train from scratch')
    return template

  def _set_aside(self, paths) -> None:
    """Move unreadable checkpoints out of the way (kept for inspection), so the
    resumed run can save those steps again."""
    self._manager.close()
    os.makedirs(self.quarantine, exist_ok=True)
    for path in paths:
      target = os.path.join(self.quarantine, f'{os.path.basename(path)}-{time.time_ns()}')
      os.replace(path, target)
      logging.warning('moved unreadable checkpoint %s to %s', path, target)
    self._manager = self._open()

  def close(self) -> None:
    self._manager.close()
