"""Train a super-network and rank NAS-Bench-201 archs with it: the command line.

python -m spos_jax.main --config=configs/small.py --workdir=runs/small \
    [--config.train.epochs=10 ...]

All logic lives in train.py (and evaluate.py); this file only parses flags.
"""
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from spos_jax import cli
from spos_jax import preemption
from spos_jax import train

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'Folder for checkpoints, logs and results.')
config_flags.DEFINE_config_file('config', None, 'A get_config() file.', lock_config=True)
cli.define_compilation_cache_flag()
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.apply_compilation_cache()
  logging.info('JAX devices: %s', jax.devices())
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(preemption.PREEMPTED_EXIT_CODE)


if __name__ == '__main__':
  app.run(cli.reporting_user_errors(main, (train.DivergenceError,)))
