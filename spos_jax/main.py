"""Train a SPOS super-network on NAS-Bench-201 and rank the bench's archs with it.

  python -m spos_jax.main --config=configs/small.py --workdir=runs/small
  python -m spos_jax.main --config=configs/tiny.py --workdir=/tmp/run
      --config.data.path=cifar10.npz --config.train.epochs=3
  python -m spos_jax.main --config=configs/small.py --print_config   # every field

--config is a get_config() file (configs/small.py, medium.py, wide.py, tiny.py,
small_cifar100.py); any field can be overridden with --config.SECTION.KEY=VALUE
(e.g. --config.space.masked_ops=none,avg_pool_3x3 --config.seeds='(0,1)'). Rerunning
the same command resumes from the newest checkpoint; a finished run only prints its
results. The run folder holds config.json, run_info.json, checkpoints/, tb/ and
results/<name>/{predictions.csv,metrics.json}. All logic lives in run.py (and the
modules it uses); this file only parses flags.
"""
from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from spos_jax import cli
from spos_jax import fewshot
from spos_jax import run
from spos_jax import train
from spos_jax import workdir as workdir_lib

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs and results.')
config_flags.DEFINE_config_file('config', None, 'A get_config() file.', lock_config=True)
cli.define_compilation_cache_flag()
cli.define_print_config_flag()
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.print_config:
    print(cli.config_listing(FLAGS.config))
    return
  if not FLAGS.workdir:
    raise workdir_lib.WorkdirError('--workdir=DIR is required: the folder of the run')
  cli.apply_compilation_cache()
  logging.info('JAX devices: %s', jax.devices())
  run.train_and_evaluate(FLAGS.config, FLAGS.workdir)


def _kept() -> str:
  return workdir_lib.kept_text(FLAGS.workdir) if FLAGS.workdir else 'nothing was started'


if __name__ == '__main__':
  app.run(cli.stopping_in_one_line(cli.reporting_user_errors(
      main, (train.DivergenceError, run.EvaluationError, fewshot.FewShotError)), _kept),
          flags_parser=cli.parse_flags)
