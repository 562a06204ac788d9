"""Small-but-wide super-network (C=96, N=2) of the paper's Appendix D.

python -m spos_jax.main --config=configs/wide.py --workdir=runs/wide
"""
from spos_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.model.channels = 96
  return config
