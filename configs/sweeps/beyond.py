"""Beyond the paper: few-shot super-networks and zero-cost proxies beside the one-shot runs.

For the baseline subsets of Fig. 4 (all ops, Zero masked, Zero+Pool masked) on the
small super-network: the one-shot run (shared with Fig. 4), its few-shot version split
on edge 0 (1<-0, as Zhao et al. 2021 split NB201's first edge; fewshot.epochs more
epochs per sub-network) and the four zero-cost proxies at initialisation over the
whole subset. `python -m spos_jax.report` draws them on one figure of Kendall tau
and Spearman against N. 3 subsets x 3 kinds = 9 runs.

python -m launch.sweep --sweep=configs/sweeps/beyond.py --root=runs/paper
"""
from launch import grid

SIZES = ('s',)
SUBSETS = [grid.ALL_OPS, grid.masked('none'), grid.masked('none', 'avg_pool_3x3')]
VARIANTS = ('', 'fewshot_e0', 'proxies')


def get_config():
  return grid.sweep_config(
      'Beyond', 'One-shot, few-shot (split on edge 0) and zero-cost proxies', SIZES)


def get_runs():
  return grid.product(SIZES, SUBSETS, VARIANTS)
