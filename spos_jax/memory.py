"""Device memory: refuse a compiled program that cannot fit, before it runs.

XLA knows after compilation how many bytes a program's arguments, outputs and
temporaries take; comparing that with the device's limit turns an out-of-memory
crash deep inside XLA into a message that names both numbers.
"""
from __future__ import annotations

import jax


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


def device_limit_bytes() -> int | None:
  """The allocator's limit of the first device; None where the backend has none (CPU)."""
  stats = jax.devices()[0].memory_stats()
  return None if not stats else stats.get('bytes_limit')


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
      f'{what} needs an estimated {need / gib:.1f} GiB of device memory, but '
      f'{jax.devices()[0].device_kind} allows {limit / gib:.1f} GiB; {hint}')


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
