"""Command-line pieces shared by the programs of the package.

A mistake of the user's (a bad config value, key or file, a bad workdir) ends the
program with one readable line and exit status 2 instead of a traceback. `--compilation_cache`
keeps compiled XLA executables on disk, so a resumed or repeated run (same shapes,
same config) skips most of its compile time.
"""
from __future__ import annotations

import difflib
import functools
import glob
import inspect
import os
import re
import sys

from absl import flags
from absl import logging
import jax

from spos_jax import bench
from spos_jax import checkpoint
from spos_jax import config
from spos_jax import data
from spos_jax import memory
from spos_jax import preemption
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


def stopping_in_one_line(main, kept=lambda: 'run the same command again'):
  """Wrap an absl main so that a stop ends in one line instead of a traceback.

  preemption.Preempted (SIGTERM, SIGUSR1 or a first Ctrl-C, after the train loop's
  checkpoint or with scoring's nothing written) logs its message and exits with
  PREEMPTED_EXIT_CODE; a Ctrl-C where nothing watches for it (loading, restoring,
  writing; a second one in the train loop exits from preemption.py) prints what
  kept() says stays and exits with INTERRUPTED_EXIT_CODE.
  """
  @functools.wraps(main)
  def wrapped(argv):
    try:
      return main(argv)
    except preemption.Preempted as e:
      logging.warning('%s', e)
      sys.exit(preemption.PREEMPTED_EXIT_CODE)
    except KeyboardInterrupt:
      print(f'stopped by SIGINT (Ctrl-C); {kept()}', file=sys.stderr, flush=True)
      sys.exit(preemption.INTERRUPTED_EXIT_CODE)
  return wrapped


def _override_key(arg: str) -> str | None:
  """'train.lr' of '--config.train.lr=0.1' (or '--config.train.lr'); None otherwise."""
  if not arg.startswith('--config.'):
    return None
  return arg[len('--config.'):].split('=', 1)[0]


def _config_file(argv) -> str | None:
  """The file of --config=FILE[:ARG] (or '--config FILE'), None when not given."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg[len('--config='):].split(':', 1)[0]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1].split(':', 1)[0]
  return None


def check_config_arguments(argv) -> None:
  """ConfigError, in one line, for a missing config file or an unknown --config.KEY.

  Every config starts from config.base_config(), so its keys are the valid ones; the
  closest is suggested. Done before absl parses the flags, whose own errors are
  chained tracebacks.
  """
  path = _config_file(argv)
  if path is not None and not os.path.isfile(path):
    found = sorted(glob.glob(os.path.join(os.path.dirname(path) or '.', '*.py')))
    raise config.ConfigError(
        f'--config={path}: no such config file' +
        (f'; configs there: {", ".join(found)}' if found else ''))
  known = config.flatten(config.base_config())
  for arg in argv[1:]:
    key = _override_key(arg)
    if key is None or key in known:
      continue
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if not close:  # e.g. a field given without its section: train_subset -> data.train_subset
      close = [k for k in known if k.rsplit('.', 1)[-1] == key.rsplit('.', 1)[-1]][:1]
    hint = f'; did you mean --config.{close[0]}?' if close else ''
    raise config.ConfigError(f'unknown config key --config.{key}{hint} '
                             f'(--print_config lists every key)')


def parse_flags(argv):
  """absl flags_parser: the checks above, then absl; bad values end in one line (exit 2)."""
  try:
    check_config_arguments(argv)
    return flags.FLAGS(argv)
  except (config.ConfigError, flags.Error) as e:
    _exit_with(e)
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections' override errors (a value of the wrong type, a locked field).
    _exit_with(f'bad --config value: {str(e).splitlines()[-1].strip(chr(39) + chr(34))}')


def _exit_with(message) -> None:
  print(f'error: {message}', file=sys.stderr)
  sys.exit(2)


def define_print_config_flag() -> None:
  flags.DEFINE_bool('print_config', False,
                    'Print every config field with its value and meaning, then exit.')


def config_listing(cfg) -> str:
  """'key = value  # meaning' for every field, meanings from base_config()'s comments."""
  meanings = _field_comments()
  lines = []
  for key, value in config.flatten(cfg).items():
    note = meanings.get(key, '')
    lines.append(f'{key} = {value!r}' + (f'  # {note}' if note else ''))
  return '\n'.join(lines)


def _field_comments() -> dict[str, str]:
  """The trailing comment of each `c.section.key = ...` line of config.base_config."""
  comments = {}
  for line in inspect.getsource(config.base_config).splitlines():
    match = re.match(r'\s*c\.([\w.]+)\s*=.*?#\s*(.*)$', line)
    if match:
      comments[match.group(1)] = match.group(2)
  return comments
