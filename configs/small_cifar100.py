"""The small super-network (C=32, N=2) on CIFAR-100, ranked by the bench's cifar100_test.

Only the data set changes: the model gets 100 classes, and bench.metric ('' = the
data set's column) resolves to cifar100_test.
python -m spos_jax.main --config=configs/small_cifar100.py --workdir=runs/small_cifar100
"""
from spos_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.data.dataset = 'cifar100'
  return config
