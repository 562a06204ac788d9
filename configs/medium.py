"""Medium super-network (C=64, N=4), otherwise the defaults of docs/method.md.

python -m spos_jax.main --config=configs/medium.py --workdir=runs/medium
"""
from spos_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.model.channels = 64
  config.model.cells_per_stage = 4
  return config
