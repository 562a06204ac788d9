"""Checkpoints that are damaged on disk are never restored as if they were fine.

Every test writes REAL orbax checkpoints with checkpoint.Checkpointer (a tiny state:
a few small arrays of the kinds a TrainState holds, no model) and damages their
files as a disk or a user would: bytes XORed or flipped in the array data, a step
folder emptied, the step's metadata removed, a full disk during a save.
"""
import errno
import json
import logging
import os
import shutil

import jax
import numpy as np
import pytest

from spos_jax import checkpoint
from spos_jax import workdir as workdir_lib

from conftest import snapshot

STEPS = (10, 20, 31)
KEEP = 5

# A failed restore of damaged data can leave tensorstore callbacks for orbax's closed
# event loop ('Event loop is closed', unraisable): noise inside orbax.
pytestmark = pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')


def state_of(step: int) -> dict:
  """A tiny train state whose every value depends on step (so steps differ)."""
  rng = np.random.default_rng(step)
  return {
      'step': np.full((2,), step, np.int32),
      'params': {'conv': {'kernel': rng.normal(size=(2, 3, 3, 4, 4)).astype(np.float32)},
                 'head': {'bias': rng.normal(size=(2, 10)).astype(np.float32)}},
      'opt_state': {'momentum': rng.normal(size=(2, 50)).astype(np.float32)},
      'batch_stats': {'mean': rng.normal(size=(2, 8)).astype(np.float32)},
  }


def template() -> dict:
  return state_of(0)


def save_steps(workdir, steps=STEPS) -> None:
  ckpt = checkpoint.Checkpointer(str(workdir), KEEP)
  for step in steps:
    ckpt.save(step, state_of(step))
  ckpt.close()


def assert_state_equals(got, step):
  """Exactly the arrays saved as step: same tree, dtypes, shapes and values."""
  want = state_of(step)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, g), w in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    g = np.asarray(g)
    assert g.dtype == w.dtype, jax.tree_util.keystr(path)
    np.testing.assert_array_equal(g, w, err_msg=f'{jax.tree_util.keystr(path)}, step {step}')


def data_files(workdir, step) -> list[str]:
  """Orbax/OCDBT's array data files of a step."""
  folder = os.path.join(workdir, 'checkpoints', str(step), 'default', 'ocdbt.process_0', 'd')
  files = [os.path.join(folder, n) for n in sorted(os.listdir(folder))]
  assert files, f'{folder} holds no data files (orbax changed its layout?)'
  return files


def xor_middle(path, num_bytes, mask):
  """XOR num_bytes in the middle of a file with mask (silent damage on disk)."""
  size = os.path.getsize(path)
  with open(path, 'r+b') as f:
    f.seek(max(0, size // 2 - num_bytes // 2))
    middle = f.read(num_bytes)
    f.seek(max(0, size // 2 - num_bytes // 2))
    f.write(bytes(b ^ mask for b in middle))


def restore_latest(workdir):
  ckpt = checkpoint.Checkpointer(str(workdir), KEEP)
  try:
    return ckpt.restore_latest(template())
  finally:
    ckpt.close()


def quarantined(workdir) -> list[str]:
  folder = os.path.join(workdir, 'checkpoints_unreadable')
  return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def steps_on_disk(workdir) -> list[int]:
  folder = os.path.join(workdir, 'checkpoints')
  return sorted(int(n) for n in os.listdir(folder) if n.isdigit())


# -------------------------------------------------------------- saved and restored


def test_save_records_the_checksums_in_the_step_metadata_and_restores_exact_values(tmp_path):
  save_steps(tmp_path)
  with open(tmp_path / 'checkpoints' / '31' / checkpoint.STEP_METADATA_FILE) as f:
    recorded = json.load(f)['custom_metadata'][checkpoint.CHECKSUMS_KEY]
  assert recorded == checkpoint.array_checksums(state_of(31))
  assert_state_equals(restore_latest(tmp_path), 31)
  ckpt = checkpoint.Checkpointer(str(tmp_path), KEEP)
  assert_state_equals(ckpt.restore(20, template()), 20)
  ckpt.close()


def test_checksums_tell_dtype_shape_and_one_bit_apart():
  a = {'x': np.zeros((2, 3), np.float32)}
  assert checkpoint.array_checksums(a) != checkpoint.array_checksums(
      {'x': np.zeros((3, 2), np.float32)})
  assert checkpoint.array_checksums(a) != checkpoint.array_checksums(
      {'x': np.zeros((2, 3), np.int32)})
  flipped = a['x'].copy()
  flipped.reshape(-1).view(np.uint8)[5] ^= 1
  assert checkpoint.array_checksums(a) != checkpoint.array_checksums({'x': flipped})


# ------------------------------------------------ damaged data: set aside, fall back


@pytest.mark.parametrize('num_bytes,mask', [(16, 0xA5), (1, 0x40)],
                         ids=['xor-16-bytes', 'one-flipped-byte'])
def test_garbled_array_data_is_set_aside_and_the_previous_step_restored(tmp_path, caplog,
                                                                         num_bytes, mask):
  """Orbax restores such data without an error (wrong numbers, 3e38, NaN); the
  checksums make it unreadable: reported, moved away, step 20 restored exactly."""
  save_steps(tmp_path)
  for path in data_files(tmp_path, 31):
    xor_middle(path, num_bytes, mask)
  damaged = snapshot(tmp_path / 'checkpoints' / '31')
  with caplog.at_level(logging.WARNING):
    restored = restore_latest(tmp_path)
  assert_state_equals(restored, 20)
  newest = os.path.join(tmp_path, 'checkpoints', '31')
  messages = '\n'.join(r.getMessage() for r in caplog.records)
  assert f'checkpoint {newest} is unreadable' in messages
  assert 'differ from the sha256 recorded' in messages
  assert steps_on_disk(tmp_path) == [10, 20]
  [moved] = quarantined(tmp_path)
  assert moved.startswith('31-')
  assert snapshot(tmp_path / 'checkpoints_unreadable' / moved) == damaged


def test_restore_of_one_named_step_verifies_it_and_sets_nothing_aside(tmp_path):
  save_steps(tmp_path)
  for path in data_files(tmp_path, 31):
    xor_middle(path, 16, 0xA5)
  ckpt = checkpoint.Checkpointer(str(tmp_path), KEEP)
  with pytest.raises(checkpoint.CheckpointError, match='31 is unreadable: .* arrays differ'):
    ckpt.restore(31, template())
  with pytest.raises(checkpoint.CheckpointError, match=r'no checkpoint of step 17 .*10, 20, 31'):
    ckpt.restore(17, template())
  assert_state_equals(ckpt.restore(20, template()), 20)  # the manager still works
  ckpt.close()
  assert steps_on_disk(tmp_path) == [10, 20, 31] and quarantined(tmp_path) == []


def test_emptied_newest_step_folder_falls_back_to_the_previous_step(tmp_path):
  """`rm -rf checkpoints/31/*`: orbax's manager then failed for every step, so the
  run refused to start over two good checkpoints; now step 20 is restored."""
  save_steps(tmp_path)
  newest = tmp_path / 'checkpoints' / '31'
  for entry in newest.iterdir():
    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
  assert_state_equals(restore_latest(tmp_path), 20)
  assert steps_on_disk(tmp_path) == [10, 20]
  assert [n.split('-')[0] for n in quarantined(tmp_path)] == ['31']


def test_step_without_its_metadata_file_is_unreadable(tmp_path):
  """Orbax reads a missing metadata file as 'no custom metadata'; that must not
  pass for a step saved before checksums existed."""
  save_steps(tmp_path)
  os.remove(tmp_path / 'checkpoints' / '31' / checkpoint.STEP_METADATA_FILE)
  for path in data_files(tmp_path, 31):
    xor_middle(path, 16, 0xA5)
  assert_state_equals(restore_latest(tmp_path), 20)


def test_step_saved_before_checksums_existed_is_restored_with_a_warning(tmp_path, caplog):
  save_steps(tmp_path, (10,))
  metadata_path = tmp_path / 'checkpoints' / '10' / checkpoint.STEP_METADATA_FILE
  metadata = json.loads(metadata_path.read_text())
  metadata['custom_metadata'] = {}  # what an older version wrote
  metadata_path.write_text(json.dumps(metadata))
  with caplog.at_level(logging.WARNING):
    assert_state_equals(restore_latest(tmp_path), 10)
  assert 'saved without checksums' in caplog.text


def test_nothing_readable_refuses_and_names_every_step_and_moves_nothing(tmp_path):
  save_steps(tmp_path)
  for step in STEPS:
    for path in data_files(tmp_path, step):
      xor_middle(path, 16, 0xA5)
  before = snapshot(tmp_path / 'checkpoints')
  with pytest.raises(checkpoint.CheckpointError) as info:
    restore_latest(tmp_path)
  message = str(info.value)
  assert '\n' not in message
  for step in STEPS:
    assert os.path.join(tmp_path, 'checkpoints', str(step)) in message
  assert snapshot(tmp_path / 'checkpoints') == before and quarantined(tmp_path) == []


# --------------------------------------------------------------- TRAINED withdrawn


def test_setting_aside_the_step_trained_names_withdraws_trained(tmp_path, caplog):
  """A finished run whose final checkpoint went bad is no longer 'trained': the
  rerun retrains its last steps instead of scoring an earlier checkpoint."""
  save_steps(tmp_path)
  workdir_lib.mark_trained(str(tmp_path), 31)
  assert workdir_lib.trained_step(str(tmp_path)) == 31
  for path in data_files(tmp_path, 31):
    xor_middle(path, 16, 0xA5)
  with caplog.at_level(logging.WARNING):
    assert_state_equals(restore_latest(tmp_path), 20)
  assert workdir_lib.trained_step(str(tmp_path)) is None
  assert not workdir_lib.is_trained(str(tmp_path))
  assert f'removed {os.path.join(tmp_path, workdir_lib.TRAINED_MARKER)}' in caplog.text


def test_trained_stays_when_an_unfinished_newer_step_is_set_aside(tmp_path):
  save_steps(tmp_path)
  workdir_lib.mark_trained(str(tmp_path), 20)
  for path in data_files(tmp_path, 31):
    xor_middle(path, 16, 0xA5)
  assert_state_equals(restore_latest(tmp_path), 20)
  assert workdir_lib.trained_step(str(tmp_path)) == 20


# ---------------------------------------------------------------------- disk full


# What orbax 0.12.8 raised on a real full file system (a 200 KiB tmpfs).
_ORBAX_ENOSPC = ('RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database at local file '
                 '"{path}/ocdbt.process_0/": Failed to write 621276 bytes to file 7: No '
                 "space left on device [os_error_code='28']")


@pytest.mark.parametrize('error', ['orbax-valueerror', 'oserror'])
def test_disk_full_during_a_save_is_one_line_leaves_no_temporary_folder_writes_failed(
    tmp_path, monkeypatch, error):
  """ENOSPC while orbax writes step 31 (after its files exist in the temporary
  folder): DiskFullError naming the step folder and the free space, no temporary
  folder left, the older steps untouched, FAILED written with the same line."""
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  save_steps(tmp_path, (10, 20))
  real_finalize = atomicity.AtomicRenameTemporaryPath.finalize
  seen = []

  async def finalize(self):
    if self.get_final().name == '31':
      seen.append(os.listdir(self.get()))
      if error == 'oserror':
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.get()))
      raise ValueError(_ORBAX_ENOSPC.format(path=self.get()))
    return await real_finalize(self)
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', finalize)
  ckpt = checkpoint.Checkpointer(str(tmp_path), KEEP)
  with pytest.raises(workdir_lib.DiskFullError) as info:
    ckpt.save(31, state_of(31))
  assert seen, 'the injected failure did not happen (orbax changed how it saves?)'
  message = str(info.value)
  assert '\n' not in message
  assert os.path.join(tmp_path, 'checkpoints', '31') in message and ' free' in message
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['10', '20']
  assert (tmp_path / workdir_lib.FAILED_MARKER).read_text().strip() == message
  monkeypatch.undo()
  ckpt.save(31, state_of(31))  # the manager still works once there is space again
  ckpt.close()
  assert_state_equals(restore_latest(tmp_path), 31)


def test_other_save_errors_are_not_reported_as_a_full_disk(tmp_path, monkeypatch):
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top

  async def finalize(self):
    raise OSError(errno.EACCES, os.strerror(errno.EACCES), str(self.get()))
  monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', finalize)
  ckpt = checkpoint.Checkpointer(str(tmp_path), KEEP)
  with pytest.raises(OSError) as info:
    ckpt.save(31, state_of(31))
  assert not isinstance(info.value, workdir_lib.DiskFullError)
  assert not (tmp_path / workdir_lib.FAILED_MARKER).exists()


# ------------------------------------------------------------------------ logging


def test_save_and_restore_log_no_orbax_info_lines(tmp_path, caplog):
  """Orbax logged ~40 INFO lines per checkpoint (88 of a tiny run's 99 lines)."""
  with caplog.at_level(logging.DEBUG):
    save_steps(tmp_path, (10, 20))
    restore_latest(tmp_path)
  orbax_info = [r for r in caplog.records
                if 'orbax' in r.pathname and r.levelno < logging.WARNING]
  assert not orbax_info, f'{len(orbax_info)} orbax INFO lines, e.g. {orbax_info[0].getMessage()}'
  assert any('restored' in r.getMessage() and 'step 20' in r.getMessage()
             for r in caplog.records), 'our own INFO lines must still show'


def test_orbax_warnings_still_show(caplog):
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  record = absl_logging.get_absl_logger().makeRecord(
      'absl', logging.WARNING, atomicity.__file__, 1, 'an orbax warning', (), None)
  with caplog.at_level(logging.DEBUG):
    absl_logging.get_absl_logger().handle(record)
  assert 'an orbax warning' in caplog.text


# ------------------------------------------------- the checkpoints averaged for scoring


@pytest.mark.parametrize('final,saved,every,k,expected', [
    (31, [20, 31], 20, 1, [31]),
    (31, [20, 31], 20, 2, [31, 20]),  # the final step is off the grid: it always counts
    (40, [20, 30, 40], 10, 3, [40, 30, 20]),
    (40, [20, 40], 20, 2, [40, 20]),
    (43, [13, 20, 40, 43], 20, 3, [43, 40, 20]),  # 13: a preemption's, off the grid
    (40, [10, 20, 30, 40, 50], 10, 2, [40, 30]),  # after the final step: not this run's
])
def test_averaged_steps_follow_the_checkpoint_grid(final, saved, every, k, expected):
  assert checkpoint.averaged_steps(final, saved, every, k) == expected


def test_averaged_steps_refuse_a_grid_that_lacks_steps():
  # A preemption at step 13 moved the next save to 33: the grid step 20 was never saved.
  with pytest.raises(checkpoint.CheckpointError,
                     match=r'needs the final step 43 and the 2 newest .* multiples of '
                           r'train.checkpoint_every_steps=20, but only 0 .*13, 33, 43'):
    checkpoint.averaged_steps(43, [13, 33, 43], 20, 3)


def test_saved_steps_lists_finished_step_folders(tmp_path):
  folder = tmp_path / 'checkpoints'
  assert checkpoint.saved_steps(str(folder)) == []
  for name in ('4', '12', '8.orbax-checkpoint-tmp-1', 'notes'):
    (folder / name).mkdir(parents=True)
  (folder / '16').write_text('a file, not a checkpoint')
  assert checkpoint.saved_steps(str(folder)) == [4, 12]
