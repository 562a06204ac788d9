"""Command-line pieces shared by the programs of the package.

A mistake of the user's (a bad config value, file or workdir) ends the program with
one readable line and exit status 2 instead of a traceback. `--compilation_cache`
keeps compiled XLA executables on disk, so a resumed or repeated run (same shapes,
same config) skips most of its compile time.
"""
from __future__ import annotations

import functools
import sys

from absl import flags
import jax

from spos_jax import bench
from spos_jax import checkpoint
from spos_jax import config
from spos_jax import data
from spos_jax import memory
from spos_jax import space
from spos_jax import workdir

USER_ERRORS = (config.ConfigError, workdir.WorkdirError, data.DataError, bench.BenchError,
               space.ArchError, checkpoint.CheckpointError, memory.DeviceMemoryError)


def define_compilation_cache_flag() -> None:
  flags.DEFINE_string(
      'compilation_cache', '',
      "Folder of JAX's persistent compilation cache, shared by runs (launch.sweep uses "
      "ROOT/.jax_cache). '' leaves JAX's own setting (env JAX_COMPILATION_CACHE_DIR).")


def apply_compilation_cache() -> None:
  """Point JAX's persistent cache at --compilation_cache, when it is set."""
  if flags.FLAGS.compilation_cache:
    jax.config.update('jax_compilation_cache_dir', flags.FLAGS.compilation_cache)


def reporting_user_errors(main, extra_errors=()):
  """Wrap an absl main so that USER_ERRORS (and extra_errors) exit with a message."""
  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except USER_ERRORS + tuple(extra_errors) as e:
      print(f'error: {e}', file=sys.stderr)
      sys.exit(2)
  return wrapped
