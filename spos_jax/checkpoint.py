"""Orbax checkpoints of the train state (all seeds) in WORKDIR/checkpoints.

The few-shot phase (fewshot.py) keeps its own in WORKDIR/checkpoints_fewshot, with
its own marker (FEWSHOT_TRAINED) and quarantine folder, under the same rules.

Orbax writes each step into a temporary folder and renames it when complete, so a
crash during a save never leaves a newest checkpoint that looks finished; the
leftover temporary folder is removed when the checkpoints are next opened.

Orbax notices only some damage: bytes flipped in array data restore as wrong
numbers without an error. So every save records the sha256 of each array (dtype,
shape, bytes) in the step's own orbax metadata (custom_metadata, written inside the
temporary folder and renamed with the arrays: a finished step always has them), and
every restore recomputes and compares them. A step whose arrays do not match is
unreadable: restore_latest sets it aside and falls back to the one before.

Orbax logs ~40 INFO lines per save or restore; they are dropped (WARNING and above
still show).
"""
from __future__ import annotations

import hashlib
import json
import logging as python_logging
import os
import shutil
import time

from absl import logging
import flax
import jax
import numpy as np
import orbax.checkpoint as ocp

from spos_jax import workdir as workdir_lib


# Orbax names a checkpoint being written '<step>.orbax-checkpoint-tmp[-...]' until the
# save completes and renames it to '<step>'.
ORBAX_TMP_SUFFIX = '.orbax-checkpoint-tmp'
# Key of the per-array sha256 in a step's orbax custom_metadata, and the file orbax
# keeps that in (read directly: orbax reads a missing or garbled file as {}).
CHECKSUMS_KEY = 'spos_jax_array_sha256'
STEP_METADATA_FILE = '_CHECKPOINT_METADATA'
_ORBAX_FOLDER = os.path.dirname(os.path.dirname(os.path.abspath(ocp.__file__)))


class CheckpointError(RuntimeError):
  """No usable checkpoint where one was needed."""


class _DropOrbaxInfo(python_logging.Filter):
  """Drop orbax's records below WARNING (it logs through absl's and the root logger)."""

  def filter(self, record):
    return (record.levelno >= python_logging.WARNING
            or not os.path.abspath(record.pathname).startswith(_ORBAX_FOLDER))


def quiet_orbax_info_logs() -> None:
  for logger in (logging.get_absl_logger(), python_logging.getLogger()):
    if not any(isinstance(f, _DropOrbaxInfo) for f in logger.filters):
      logger.addFilter(_DropOrbaxInfo())


quiet_orbax_info_logs()


def array_checksums(tree) -> dict[str, str]:
  """sha256 of every array's dtype, shape and bytes, keyed by its path in tree."""
  checksums = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    array = np.ascontiguousarray(np.asarray(leaf))
    digest = hashlib.sha256(f'{array.dtype.name}{array.shape}'.encode())
    digest.update(array.tobytes())
    checksums[jax.tree_util.keystr(path)] = digest.hexdigest()
  return checksums


def checksum_mismatch(recorded: dict[str, str], restored: dict[str, str]) -> str | None:
  """How restored arrays differ from the recorded checksums; None when they match."""
  if recorded.keys() != restored.keys():
    return (f'it holds other arrays than were saved ({len(restored)} restored, '
            f'{len(recorded)} recorded)')
  wrong = [key for key in recorded if recorded[key] != restored[key]]
  if wrong:
    return (f'{len(wrong)} of {len(recorded)} arrays differ from the sha256 recorded when '
            f'it was saved (first: {wrong[0]})')
  return None


def saved_steps(directory: str) -> list[int]:
  """Steps of the finished checkpoints in a checkpoints folder (its step-named
  subfolders; temporary ones excluded), ascending; [] when there is none. Reads the
  folder only: no orbax manager, which would clean up temporary folders."""
  try:
    names = os.listdir(directory)
  except OSError:
    return []
  return sorted(int(n) for n in names
                if n.isdigit() and os.path.isdir(os.path.join(directory, n)))


def averaged_steps(final_step: int, saved: list[int], every: int, k: int) -> list[int]:
  """The k checkpoints whose scores are averaged, newest first (eval.average_checkpoints).

  The rule: the final step, then the k-1 newest saved steps before it that are
  multiples of `every` (train.checkpoint_every_steps): the trainer's checkpoint grid,
  so the averaged checkpoints lie `every` steps apart (the final one at most that far
  from the one before it). A checkpoint off the grid (one saved when a preemption
  stopped training, or when train.steps_per_dispatch does not divide `every`) is never
  averaged, so a preempted run averages the same steps as one that was not, or
  refuses. CheckpointError, naming the steps there are, when the grid lacks some.
  """
  grid = [s for s in sorted(saved, reverse=True) if s < final_step and s % every == 0]
  if len(grid) < k - 1:
    raise CheckpointError(
        f'averaging {k} checkpoints needs the final step {final_step} and the {k - 1} '
        f'newest checkpoints before it at multiples of train.checkpoint_every_steps='
        f'{every}, but only {len(grid)} of those are kept (checkpoints there: '
        f'{", ".join(map(str, sorted(saved))) or "none"}; a checkpoint off that grid comes '
        f'from a preemption or a train.steps_per_dispatch that does not divide it); '
        f'average fewer (eval.average_checkpoints), or train with a larger '
        f'train.keep_checkpoints (the final and any preemption checkpoint count toward it)')
  return [final_step] + grid[:k - 1]


class Checkpointer:
  """Save every K steps and at the end, keep the newest few, restore the newest.

  folder: the checkpoints' folder in workdir (unreadable ones go to
  '<folder>_unreadable'); marker: the finished marker that names this folder's
  final step (withdrawn when that step is set aside).
  """

  def __init__(self, workdir: str, keep: int, folder: str = workdir_lib.CHECKPOINTS_FOLDER,
               marker: str = workdir_lib.TRAINED_MARKER):
    self.workdir = os.path.abspath(workdir)
    self.directory = os.path.join(self.workdir, folder)
    self.quarantine = os.path.join(self.workdir, f'{folder}_unreadable')
    self.marker = marker
    self._keep = keep
    self._manager = self._open()

  def _open(self):
    self._remove_temporary_folders()
    options = ocp.CheckpointManagerOptions(max_to_keep=self._keep, create=True,
                                           enable_async_checkpointing=False)
    return ocp.CheckpointManager(self.directory, options=options)

  def _reopen(self) -> None:
    """A fresh manager: after a failed restore orbax's manager can fail for every
    other step too (seen with an emptied step folder)."""
    try:
      self._manager.close()
    except Exception as e:  # pylint: disable=broad-except  # it failed already
      logging.warning('closing the checkpoint manager of %s failed: %s', self.directory, e)
    self._manager = self._open()

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

  def step_path(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state) -> None:
    """Save state as `step` with its arrays' checksums. A full disk raises
    workdir.DiskFullError (and writes FAILED if it can), leaving no temporary folder."""
    if step in self._manager.all_steps():
      return
    state_dict = flax.serialization.to_state_dict(state)
    try:
      self._manager.save(step, args=ocp.args.StandardSave(state_dict),
                         custom_metadata={CHECKSUMS_KEY: array_checksums(state_dict)})
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except  # orbax wraps ENOSPC many ways
      if not workdir_lib.is_disk_full(e):
        raise
      self._reopen()  # removes the temporary folder of the failed save
      error = workdir_lib.disk_full_error(self.step_path(step), e)
      workdir_lib.record_failure(self.workdir, error)
      raise error from None

  def _recorded_checksums(self, step: int) -> dict[str, str] | None:
    """The checksums saved with step; None for a step saved before they existed.

    ValueError when the step's metadata file is missing or garbled (orbax writes it
    in every version, so that is damage).
    """
    path = os.path.join(self.step_path(step), STEP_METADATA_FILE)
    try:
      with open(path, 'rb') as f:
        metadata = json.loads(f.read())
    except (OSError, ValueError) as e:
      raise ValueError(f'its metadata file {STEP_METADATA_FILE} is missing or garbled '
                       f'({type(e).__name__})') from None
    custom = (metadata.get('custom_metadata') or {}) if isinstance(metadata, dict) else None
    checksums = custom.get(CHECKSUMS_KEY) if isinstance(custom, dict) else 'garbled'
    if not isinstance(checksums, (dict, type(None))):
      raise ValueError(f'its metadata file {STEP_METADATA_FILE} is garbled')
    return checksums

  def restore(self, step: int, template):
    """Exactly the checkpoint of `step`, shaped like `template` (a state of the same
    config), its arrays verified against the checksums saved with them.

    CheckpointError, in one line, when the step is missing, unreadable or damaged.
    Steps saved before checksums were recorded are restored unverified, with a
    warning: refusing them would strand every run started by an older version.
    """
    path = self.step_path(step)
    if step not in self._manager.all_steps():
      raise CheckpointError(f'no checkpoint of step {step} in {self.directory} '
                            f'(steps there: {self.all_steps() or "none"})')
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct,
                          flax.serialization.to_state_dict(template))
    try:
      restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
      recorded = self._recorded_checksums(step)
    except Exception as e:  # pylint: disable=broad-except  # orbax raises many kinds
      self._reopen()
      reason = (str(e).strip().splitlines() or [''])[0][:200]
      raise CheckpointError(f'checkpoint {path} is unreadable ({type(e).__name__}: '
                            f'{reason})') from None
    if recorded is None:
      logging.warning('checkpoint %s was saved without checksums (by an older version): '
                      'restored without verifying its arrays', path)
    else:
      mismatch = checksum_mismatch(recorded, array_checksums(restored))
      if mismatch:
        raise CheckpointError(f'checkpoint {path} is unreadable: {mismatch}')
    return flax.serialization.from_state_dict(template, restored)

  def restore_latest(self, template):
    """The newest readable checkpoint, or `template` itself when there is none yet.

    An unreadable or damaged checkpoint is reported, and the one before it is tried
    (each with a fresh orbax manager); once one restores, the unreadable newer ones
    are moved to the quarantine folder (checkpoints_unreadable/), and the marker
    (TRAINED) is withdrawn if it named one of them. When none can be read the run
    refuses to start rather than train from scratch over the old files, and moves
    nothing.
    """
    failures = []
    for step in sorted(self._manager.all_steps(), reverse=True):
      try:
        state = self.restore(step, template)
      except CheckpointError as e:
        logging.warning('%s; trying an older one', e)
        failures.append(step)
        continue
      logging.info('restored %s step %d', self.directory, step)
      if failures:
        self._set_aside(failures)
      return state
    if failures:
      paths = ', '.join(self.step_path(s) for s in failures)
      raise CheckpointError(
          f'no readable checkpoint in {self.directory} (unreadable or damaged: {paths}; '
          f'the reasons are logged above); refusing to train from scratch over them: '
          f'move {self.directory} away to start over')
    return template

  def _set_aside(self, steps) -> None:
    """Move unreadable checkpoints out of the way (kept for inspection), so the
    resumed run can save those steps again; withdraw the marker if its step is one."""
    trained = workdir_lib.trained_step(self.workdir, self.marker)
    self._manager.close()
    os.makedirs(self.quarantine, exist_ok=True)
    for step in steps:
      path = self.step_path(step)
      target = os.path.join(self.quarantine, f'{step}-{time.time_ns()}')
      os.replace(path, target)
      logging.warning('moved unreadable checkpoint %s to %s', path, target)
    self._manager = self._open()
    if trained in steps:
      workdir_lib.withdraw_trained(
          self.workdir, f'the final checkpoint of step {trained} was unreadable', self.marker)

  def close(self) -> None:
    self._manager.close()
