"""Fig. 5: Linear Transformers (LT) on skip, and on skip and pool (docs/method.md, 'Operations').

Subsets (the figure's columns): all ops; Zero masked; Zero+Pool masked. Variants
(colours): the baseline without LT, LT on skip, LT on skip+pool. 3 subsets x 3
variants x 2 sizes = 18 runs; the 6 baseline runs are Fig. 4 runs (same names, so one
--root trains them once). With Pool masked, LT on skip+pool computes what LT on skip
does; the paper ran both and so does this sweep.

python -m launch.sweep --sweep=configs/sweeps/fig5.py --root=runs/paper
"""
from launch import grid
from spos_jax.space import OPS

ZERO, POOL = OPS[0], OPS[4]
SIZES = ('s', 'm')
SUBSETS = [grid.ALL_OPS, grid.masked(ZERO), grid.masked(ZERO, POOL)]
VARIANTS = ('', 'lt_skip', 'lt_skip_pool')


def get_config():
  return grid.sweep_config('Fig. 5', 'Linear Transformers on skip and on skip+pool', SIZES)


def get_runs():
  return grid.product(SIZES, SUBSETS, VARIANTS)
