"""Re-score a finished run with other evaluation settings, into its own results folder.

  python -m spos_jax.evaluate --workdir=DIR [--config.eval.bn_mode=batch] [--overwrite]
  python -m spos_jax.evaluate --workdir=DIR --config.eval.average_checkpoints=2
  python -m spos_jax.evaluate --workdir=DIR --config.eval.scope=unique

Only eval.* and bench.* may change; the run's own config.json gives the rest. The
work is done by run.py.
"""
from __future__ import annotations

from spos_jax import cli
from spos_jax import config as config_lib
from spos_jax import preemption
from spos_jax import run


def main(argv):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  if len(argv) > 1:
    raise SystemExit(f'unexpected arguments: {argv[1:]}')
  cli.apply_compilation_cache()
  run.rescore(flags.FLAGS.workdir, config_flags.get_override_values(flags.FLAGS['config']),
              overwrite=flags.FLAGS.overwrite)

if __name__ == '__main__':
  # Flags are defined only when run as a program: spos_jax.main defines its own.
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('workdir', None, 'Folder of a finished run (spos_jax.main).')
  flags.DEFINE_bool('overwrite', False, 'Replace results of the same name.')
  cli.define_compilation_cache_flag()
  config_flags.DEFINE_config_dict('config', config_lib.base_config(), lock_config=True)
  flags.mark_flags_as_required(['workdir'])
  app.run(cli.stopping_in_one_line(cli.reporting_user_errors(main, (run.EvaluationError,)),
                                   lambda: preemption.SCORE_AGAIN))
