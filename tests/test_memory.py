"""Device memory estimates turn an out-of-memory crash into a clear error."""
import jax
import jax.numpy as jnp
import pytest

from spos_jax import memory


@pytest.fixture(scope='module')
def compiled():
  """A program with a 4 MiB argument and a 4 MiB result."""
  return jax.jit(lambda x: x * 2).lower(jnp.zeros((1024, 1024), jnp.float32)).compile()


def test_estimate_counts_arguments_and_outputs(compiled):
  need = memory.estimate_bytes(compiled)
  if need is None:
    pytest.skip('this backend reports no memory analysis')
  assert need >= 2 * 4 * 2**20


def test_too_large_for_the_limit_names_both_numbers(compiled):
  if memory.estimate_bytes(compiled) is None:
    pytest.skip('this backend reports no memory analysis')
  with pytest.raises(memory.DeviceMemoryError, match=r'needs an estimated 0\.0 GiB.*allows 0\.0 GiB; fewer'):
    memory.check_fits(compiled, 'doubling', 'fewer', limit=2**20)
  memory.check_fits(compiled, 'doubling', 'fewer', limit=2**40)  # fits: no error


def test_checked_jit_compiles_once_per_shape_and_refuses_what_cannot_fit():
  traces = []

  def double(x):
    traces.append(x.shape)
    return x * 2

  checked = memory.CheckedJit(double, lambda x: f'doubling {x.shape}', 'use less', limit=2**40)
  assert float(checked(jnp.ones((4,)))[0]) == 2.0
  checked(jnp.zeros((4,)))
  checked(jnp.zeros((8,)))
  assert traces == [(4,), (8,)]  # one compile per shape, reused after
  if memory.estimate_bytes(jax.jit(double).lower(jnp.zeros(4)).compile()) is None:
    pytest.skip('this backend reports no memory analysis')
  tight = memory.CheckedJit(double, lambda x: f'doubling {x.shape}', 'use less', limit=2**20)
  with pytest.raises(memory.DeviceMemoryError,
                     match=r'doubling \(1024, 1024\) needs an estimated .*; use less'):
    tight(jnp.zeros((1024, 1024), jnp.float32))


def test_host_available_memory_is_read_from_meminfo(tmp_path):
  meminfo = tmp_path / 'meminfo'
  meminfo.write_text('MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20480000 kB\n')
  assert memory.host_available_bytes(str(meminfo)) == 20480000 * 1024
  assert memory.host_available_bytes(str(tmp_path / 'absent')) > 0  # sysconf's fallback


def test_the_cpu_limit_is_the_hosts_available_memory(monkeypatch):
  if not memory.on_host():
    pytest.skip('the CPU backend only')
  monkeypatch.setattr(memory, 'host_available_bytes', lambda: 12345 * 2**20)
  assert memory.device_limit_bytes() == 12345 * 2**20
  assert memory.memory_name() == 'the host (available memory)'
