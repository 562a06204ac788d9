"""Fig. 2: scatter of super-network against bench accuracy, all ops vs Zero masked.

The paper's caption names a small super-network, so this sweep is small only: 2 runs
(all ops; Zero masked), 5 seeds each. The scatter's groups (top-50, top-250, the
random 1000) are part of every run's default eval groups. Both runs are also Fig. 4
runs: with the same --root they are trained once.

python -m launch.sweep --sweep=configs/sweeps/fig2.py --root=runs/paper
"""
from launch import grid
from spos_jax.space import OPS

ZERO = OPS[0]
SIZES = ('s',)
SUBSETS = [grid.ALL_OPS, grid.masked(ZERO)]


def get_config():
  config = grid.sweep_config(
      'Fig. 2', 'Super-network vs bench accuracy, all ops and Zero masked (small)', SIZES,
      metrics=('kendall_tau',))
  config.scatter_groups = ('top50', 'top250', 'random')
  return config


def get_runs():
  return grid.product(SIZES, SUBSETS)
