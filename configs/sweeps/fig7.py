"""Fig. 7 and Fig. 9: more search-space subsets (paper Appendix C).

Both figures keep Fig. 4's left column (all ops; each op masked alone: 6 subsets) and
add columns:
  Fig. 7 centre: 1x1+X masked, X in zero, skip, 3x3, pool (4)
  Fig. 7 right:  Skip+X masked, X in zero, 1x1, 3x3, pool (4; 1x1+skip is already in
                 the centre column, so 3 new)
  Fig. 9 right:  Zero+Pool+X masked, X in skip, 1x1, 3x3 (3)
  (Fig. 9's centre repeats 1x1+X.)
6 + 4 + 3 + 3 = 16 distinct subsets x 2 sizes = 32 runs. 20 of them are Fig. 4 runs
(the left column and zero+1x1, zero+skip, pool+1x1, pool+skip), trained once under
one --root; 12 are new.

python -m launch.sweep --sweep=configs/sweeps/fig7.py --root=runs/paper
"""
from launch import grid
from spos_jax.space import OPS

ZERO, SKIP, CONV1, CONV3, POOL = OPS
SIZES = ('s', 'm')
SUBSETS = grid.unique([
    grid.ALL_OPS,
    *grid.with_each((), OPS),
    *grid.with_each((CONV1,), (ZERO, SKIP, CONV3, POOL)),
    *grid.with_each((SKIP,), (ZERO, CONV1, CONV3, POOL)),
    *grid.with_each((ZERO, POOL), (SKIP, CONV1, CONV3)),
])


def get_config():
  return grid.sweep_config(
      'Fig. 7, Fig. 9', 'More subsets: 1x1+X, Skip+X and Zero+Pool+X masked', SIZES)


def get_runs():
  return grid.product(SIZES, SUBSETS)
