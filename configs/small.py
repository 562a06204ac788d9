"""Small super-network (C=32, N=2) with the defaults of docs/method.md: 250 epochs, 5 seeds,
strictly fair sampling.

CIFAR-10 (downloaded once into ~/.cache/spos_jax), ranked against the packaged
NAS-Bench-201 table's cifar10_test column:
python -m spos_jax.main --config=configs/small.py --workdir=runs/small
"""
from spos_jax import config as config_lib


def get_config():
  return config_lib.base_config()
