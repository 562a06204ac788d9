"""Zero-cost proxies (synflow, jacob_cov, snip, grad_norm) over the whole NB201 space.

Each of the 5 seeds is one initialisation of the small network (C=32, N=2, fp32); every
arch is scored at init on the same 64 training images, without training, and ranked
against the packaged NB201 table, one results folder per proxy (results/proxy-<name>).

python -m spos_jax.main --config=configs/proxies.py --workdir=runs/proxies
# a CPU try-out: a tiny network on the 729 archs without none and avg_pool_3x3
python -m spos_jax.main --config=configs/proxies.py --workdir=/tmp/proxies \
    --config.model.channels=4 --config.model.cells_per_stage=1 --config.seeds='(0,)' \
    --config.space.masked_ops=none,avg_pool_3x3 --config.data.path=cifar10.npz
"""
from spos_jax import config as config_lib


def get_config():
  config = config_lib.base_config()
  config.method = 'proxies'
  config.train.precision = 'fp32'  # the proxies' own definitions are fp32 (synflow float64)
  config.eval.scope = 'all'  # every arch of the (masked) space
  return config
