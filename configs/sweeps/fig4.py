"""Fig. 4: super-networks in 13 search-space subsets, small and medium.

Subsets: all ops; each op masked alone (5, the figure's left column); Zero+X masked
for X in skip, 1x1, 3x3, pool (4, centre); Pool+X masked for X in skip, 1x1, 3x3
(3, right). 13 subsets x 2 sizes = 26 runs, 5 seeds each.

python -m launch.sweep --sweep=configs/sweeps/fig4.py --root=runs/paper
"""
from launch import grid
from spos_jax.space import OPS

ZERO, SKIP, CONV1, CONV3, POOL = OPS
SIZES = ('s', 'm')
SUBSETS = [
    grid.ALL_OPS,
    *grid.with_each((), OPS),
    *grid.with_each((ZERO,), (SKIP, CONV1, CONV3, POOL)),
    *grid.with_each((POOL,), (SKIP, CONV1, CONV3)),
]


def get_config():
  return grid.sweep_config(
      'Fig. 4', 'Search-space subsets: each op masked, Zero+X and Pool+X masked', SIZES)


def get_runs():
  return grid.product(SIZES, SUBSETS)
