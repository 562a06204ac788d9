"""The run folder's records under faults: a full disk, a second process, markers.

A full disk is the kernel's own ENOSPC: the temporary file's descriptor is swapped
for one of /dev/full, whose every write fails with ENOSPC. The lock is held by a
real second process.
"""
import errno
import hashlib
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap

import pytest

from spos_jax import bench as bench_lib
from spos_jax import config as config_lib
from spos_jax import workdir as workdir_lib

DEV_FULL = '/dev/full'


def disk_full_for(monkeypatch, names=None):
  """Make writes of temporary files fail with the kernel's ENOSPC, for all files or
  (names) only those made in a write of a file called one of names."""
  if not os.path.exists(DEV_FULL):
    pytest.skip(f'{DEV_FULL} is absent')
  real_mkstemp = tempfile.mkstemp
  real_write_temporary = workdir_lib.write_temporary
  current = ['']

  def write_temporary(folder, text, target=None):
    current[:] = [os.path.basename(target or '')]
    return real_write_temporary(folder, text, target)

  def mkstemp(**kwargs):
    fd, path = real_mkstemp(**kwargs)
    if names is None or current[0] in names:
      os.close(fd)
      fd = os.open(DEV_FULL, os.O_WRONLY)
    return fd, path
  monkeypatch.setattr(workdir_lib, 'write_temporary', write_temporary)
  monkeypatch.setattr(workdir_lib.tempfile, 'mkstemp', mkstemp)


def leftovers(folder) -> list[str]:
  return sorted(n for n in os.listdir(folder) if n.startswith('.tmp-'))


# ------------------------------------------------------------------------ disk full


def test_atomic_write_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path,
                                                                         monkeypatch):
  path = tmp_path / 'metrics.json'
  path.write_text('old\n')
  disk_full_for(monkeypatch)
  with pytest.raises(workdir_lib.DiskFullError) as info:
    workdir_lib.write_text_atomic(str(path), 'new\n' * 10000)
  message = str(info.value)
  assert '\n' not in message
  assert message.startswith(f'disk full writing {path} (no space left on the device, ')
  assert ' free)' in message
  assert path.read_text() == 'old\n'
  assert leftovers(tmp_path) == []


def test_a_full_disk_is_a_workdir_error_the_programs_report_in_one_line():
  assert issubclass(workdir_lib.DiskFullError, workdir_lib.WorkdirError)


def test_prepare_on_a_full_disk_writes_failed_when_that_still_fits(tmp_path, monkeypatch):
  disk_full_for(monkeypatch, names={workdir_lib.CONFIG_FILE})
  with pytest.raises(workdir_lib.DiskFullError) as info:
    workdir_lib.prepare(str(tmp_path), config_lib.base_config())
  assert str(tmp_path / workdir_lib.CONFIG_FILE) in str(info.value)
  assert (tmp_path / workdir_lib.FAILED_MARKER).read_text() == f'{info.value}\n'
  assert not (tmp_path / workdir_lib.CONFIG_FILE).exists()
  assert leftovers(tmp_path) == []


def test_when_failed_cannot_be_written_either_the_first_error_is_raised(tmp_path,
                                                                        monkeypatch, caplog):
  disk_full_for(monkeypatch)
  with caplog.at_level(logging.WARNING):
    with pytest.raises(workdir_lib.DiskFullError) as info:
      workdir_lib.mark_trained(str(tmp_path), 17)
  assert str(tmp_path / workdir_lib.TRAINED_MARKER) in str(info.value)
  assert f'could not write {tmp_path / workdir_lib.FAILED_MARKER} either' in caplog.text
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('error,full', [
    (OSError(errno.ENOSPC, 'No space left on device'), True),
    (OSError(errno.EDQUOT, 'Disk quota exceeded'), True),
    (ValueError("RESOURCE_EXHAUSTED: Failed to write 621276 bytes to file 7: No space "
                "left on device [os_error_code='28']"), True),
    (OSError(errno.EACCES, 'Permission denied'), False),
    (ValueError('RESOURCE_EXHAUSTED: out of memory'), False),
])
def test_disk_full_is_told_from_other_errors(error, full):
  assert workdir_lib.is_disk_full(error) is full
  try:
    try:
      raise error
    except Exception as inner:
      raise RuntimeError('wrapped') from inner
  except RuntimeError as outer:
    assert workdir_lib.is_disk_full(outer) is full


def test_check_free_space_refuses_naming_what_and_both_sizes(tmp_path, monkeypatch):
  free = 5 * 2**20
  real = workdir_lib.shutil.disk_usage
  monkeypatch.setattr(workdir_lib.shutil, 'disk_usage',
                      lambda p: real(p)._replace(free=free))
  target = tmp_path / 'results' / 'running-groups'  # not there yet: its parent counts
  workdir_lib.check_free_space(str(target), free, 'the results')
  with pytest.raises(workdir_lib.DiskFullError) as info:
    workdir_lib.check_free_space(str(target), free + 1, 'the results of 15625 archs')
  assert str(info.value) == (f'not enough free space for the results of 15625 archs in '
                             f'{target}: 5.0 MiB free, 5.0 MiB needed; free some space and '
                             f'rerun')


# -------------------------------------------------------------------------- markers


def test_trained_step_is_the_step_mark_trained_wrote(tmp_path):
  assert workdir_lib.trained_step(str(tmp_path)) is None
  workdir_lib.mark_trained(str(tmp_path), 1234)
  assert workdir_lib.trained_step(str(tmp_path)) == 1234
  workdir_lib.withdraw_trained(str(tmp_path), 'a test')
  assert workdir_lib.trained_step(str(tmp_path)) is None
  assert not workdir_lib.is_trained(str(tmp_path))


def test_a_garbled_trained_marker_is_one_line_naming_it(tmp_path):
  (tmp_path / workdir_lib.TRAINED_MARKER).write_text('yes\n')
  with pytest.raises(workdir_lib.WorkdirError, match="TRAINED holds 'yes', not a step"):
    workdir_lib.trained_step(str(tmp_path))


# ----------------------------------------------------------------------------- lock


HOLDER = textwrap.dedent('''
    import sys
    from spos_jax import workdir
    with workdir.lock(sys.argv[1]):
      print('locked', flush=True)
      sys.stdin.read()  # hold it until the test closes stdin (or kills this process)
''')


def hold_lock_in_another_process(workdir):
  proc = subprocess.Popen([sys.executable, '-c', HOLDER, str(workdir)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.stdout.readline().strip() == 'locked'
  return proc


def test_a_second_process_is_refused_naming_the_holder_until_it_is_killed(tmp_path):
  """The holder is killed with SIGKILL: the kernel releases its flock, no stale lock."""
  proc = hold_lock_in_another_process(tmp_path)
  try:
    with pytest.raises(workdir_lib.WorkdirError) as info:
      with workdir_lib.lock(str(tmp_path)):
        pytest.fail('took a lock that another process holds')
    message = str(info.value)
    assert '\n' not in message
    assert message.startswith(f'{tmp_path} is in use by pid {proc.pid} on '
                              f'{socket.gethostname()} since ')
    assert message.endswith('; wait for it to finish or use another --workdir')
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  with workdir_lib.lock(str(tmp_path)):
    pass


def test_the_lock_is_released_on_exit_and_reentrant_in_one_process(tmp_path):
  with workdir_lib.lock(str(tmp_path)):
    with workdir_lib.lock(str(tmp_path)):  # e.g. train() inside train_and_evaluate()
      pass
    assert '"pid": %d' % os.getpid() in (tmp_path / workdir_lib.LOCK_FILE).read_text()
  proc = hold_lock_in_another_process(tmp_path)  # free again for another process
  proc.stdin.close()
  assert proc.wait() == 0


# ------------------------------------------------------------------------- run_info


def test_run_info_records_the_resolved_bench_file_and_its_sha256():
  config = config_lib.base_config()
  config.bench.path = bench_lib.BUILTIN
  info = workdir_lib.run_info(config)
  path = bench_lib.resolve_path(bench_lib.BUILTIN)
  assert info['bench_path'] == path and os.path.isfile(path)
  with open(path, 'rb') as f:
    assert info['bench_sha256'] == hashlib.sha256(f.read()).hexdigest()
  config.bench.path = 'none'
  info = workdir_lib.run_info(config)
  assert info['bench_path'] is None and info['bench_sha256'] is None
  assert info['host_cpu'] and info['host_cpu_count'] == os.cpu_count()


def test_cpu_model_is_the_first_processors_with_family_and_model():
  cpuinfo = ('processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n'
             'model name\t: AMD EPYC\n\nprocessor\t: 1\ncpu family\t: 25\n'
             'model name\t: Other\n')
  assert workdir_lib.cpu_model(cpuinfo) == 'AMD EPYC (family 26, model 2)'
  assert workdir_lib.cpu_model('model name : Neoverse\n') == 'Neoverse'
  assert workdir_lib.cpu_model('CPU implementer : 0x41\n') is None
