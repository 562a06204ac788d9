"""Device memory: refuse a compiled program that cannot fit, before it runs.

XLA knows after compilation how many bytes a program's arguments, outputs and
temporaries take; comparing that with the device's limit turns an out-of-memory
crash deep inside XLA into a message that names both numbers. On the CPU the
backend reports no limit, and the program's buffers live in host memory: the limit
there is the host's available memory (MemAvailable), read when the check runs.
"""
from __future__ import annotations

import os

import jax

_MEMINFO = '/proc/meminfo'


class DeviceMemoryError(RuntimeError):
  """The program needs more device memory than the device has."""


def estimate_bytes(compiled) -> int | None:
  """Arguments + outputs + temporaries - donated aliases of a compiled program."""
  try:
    analysis = compiled.memory_analysis()
  except (AttributeError, NotImplementedError, jax.errors.JaxRuntimeError):
    return None
  if analysis is None:
    return None
  return (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
          + analysis.temp_size_in_bytes - analysis.alias_size_in_bytes)


def host_available_bytes(meminfo: str = _MEMINFO) -> int | None:
  """Memory the host can give a new allocation without swapping (Linux MemAvailable);
  free physical pages elsewhere; None when neither can be read."""
  try:
    with open(meminfo) as f:
      for line in f:
        if line.startswith('MemAvailable:'):
          return int(line.split()[1]) * 1024  # the kernel reports kB
  except (OSError, ValueError, IndexError):
    pass
  try:
    return os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE')
  except (ValueError, OSError, AttributeError):
    return None


def on_host(device=None) -> bool:
  """Whether the device's buffers are host memory (the CPU backend)."""
  return (device or jax.devices()[0]).platform == 'cpu'


def device_limit_bytes() -> int | None:
  """The allocator's limit of the first device; on the CPU, the host's available memory."""
  device = jax.devices()[0]
  stats = device.memory_stats()
  if stats and stats.get('bytes_limit'):
    return stats['bytes_limit']
  return host_available_bytes() if on_host(device) else None


def memory_name() -> str:
  """What the limit is of, for messages."""
  device = jax.devices()[0]
  return 'the host (available memory)' if on_host(device) else device.device_kind


def fits(compiled, limit: int | None = None) -> bool:
  """False only when both the estimate and the limit are known and the estimate is over."""
  limit = device_limit_bytes() if limit is None else limit
  need = estimate_bytes(compiled)
  return need is None or limit is None or need <= limit


def check_fits(compiled, what: str, hint: str, limit: int | None = None) -> None:
  """Raise DeviceMemoryError when the estimate exceeds the limit."""
  limit = device_limit_bytes() if limit is None else limit
  if fits(compiled, limit):
    return
  need = estimate_bytes(compiled)
  gib = 2.0 ** 30
  raise DeviceMemoryError(
      f'{what} needs an estimated {need / gib:.1f} GiB of memory, but '
      f'{memory_name()} allows {limit / gib:.1f} GiB; {hint}')


class CheckedJit:
  """jax.jit(fn), compiled once per argument shapes and checked with check_fits.

  `describe(*args)` names the program in the error; `hint` says what to lower.
  """

  def __init__(self, fn, describe, hint: str, limit: int | None = None):
    self._jitted = jax.jit(fn)
    self._describe, self._hint, self._limit = describe, hint, limit
    self._compiled = {}

  @property
  def jitted(self):
    """The unchecked jax.jit function (benchmarks time its trace/lower/compile stages)."""
    return self._jitted

  def __call__(self, *args):
    leaves, tree = jax.tree.flatten(args)
    key = (tree, tuple((leaf.shape, leaf.dtype) for leaf in leaves))
    if key not in self._compiled:
      compiled = self._jitted.lower(*args).compile()
      check_fits(compiled, self._describe(*args), self._hint, self._limit)
      self._compiled[key] = compiled
    return self._compiled[key](*args)
