"""Small super-network (C=32, N=2), SPEC defaults: 250 epochs, 5 seeds, strictly fair.

python -m spos_jax.main --config=configs/small.py --workdir=runs/small \
    --config.bench.path=nb201_table.csv
"""
from spos_jax import config as config_lib


def get_config():
  return config_lib.base_config()
