"""A run for a laptop CPU in under two minutes: C=8, N=1, 1 seed, 2 epochs on 5k images; ranks ~200 archs on 250 images.

Reads CIFAR-10 as any config does (downloaded once), or a local .npz (x_train, y_train,
x_test, y_test), e.g. one converted from the official archive fetched by hand:
python -m spos_jax.data convert --archive=cifar-10-python.tar.gz --out=/tmp/cifar10.npz
python -m spos_jax.main --config=configs/tiny.py --workdir=/tmp/run \
    --config.data.path=/tmp/cifar10.npz
"""
from spos_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.seeds = (0,)
  config.model.channels = 8
  config.model.cells_per_stage = 1
  config.train.epochs = 2
  config.train.batch_size = 64
  config.train.precision = 'fp32'
  config.train.steps_per_dispatch = 1  # XLA:CPU is slow inside loops
  config.train.log_every_steps = 5
  config.train.checkpoint_every_steps = 20
  config.data.train_subset = 5000  # train on the first 5k of the 45k split
  config.data.val_size = 250
  config.eval.batch_size = 250
  config.eval.groups_per_call = 2  # CPU caches favour small calls: 3.9 vs 3.1 archs/s at 8
  config.eval.top_ns = (10, 25, 50, 100)
  config.eval.random_size = 100
  return config
