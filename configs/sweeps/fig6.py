"""Fig. 6: training variations against the baseline (docs/method.md, 'Path sampling', 'Training').

Variants: unshared topology in training, uniform sampling, LR warm-up (5 epochs),
gradient clipping (norm 5), AutoAugment + label smoothing 0.1; plus the baseline.

Subsets: the paper does not list them for this figure; this sweep uses Fig. 4's left
column, which the paper's text names: "By masking out each operation individually
(Figure 4, left column)", with the all-ops baseline in red in the same plot; so the
6 subsets all ops and each op masked alone. Its Fig. 6 text ("top left and center-right plots", where
AutoAugment hurts most "with relatively more unparameterized operations") fits that
choice: a conv-masked subset sits centre-right in that order.

6 subsets x 6 variants (5 + baseline) x 2 sizes = 72 runs; the 12 baseline runs are
Fig. 4 runs (same names, so one --root trains them once).

python -m launch.sweep --sweep=configs/sweeps/fig6.py --root=runs/paper
"""
from launch import grid
from spos_jax.space import OPS

SIZES = ('s', 'm')
SUBSETS = [grid.ALL_OPS, *grid.with_each((), OPS)]  # Fig. 4's left column
VARIANTS = ('', 'unshared', 'uniform', 'warmup', 'clip', 'autoaug_ls')


def get_config():
  return grid.sweep_config(
      'Fig. 6', 'Training variations: unshared, uniform, warm-up, clipping, AutoAugment+LS',
      SIZES)


def get_runs():
  return grid.product(SIZES, SUBSETS, VARIANTS)
