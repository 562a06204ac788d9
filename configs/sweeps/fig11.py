"""Fig. 11-13 (Appendix D): small (C=32) against small-but-wide (C=96), with and
without Linear Transformers; reported with SCC and PCC besides KT (docs/method.md,
'Metrics' and 'Experiment grid').

The paper names no subsets for these figures. It colours their curves as Fig. 4
does (Fig. 13 shows "Figure 12, left, green", green being Zero masked in Fig. 4), so
this sweep uses Fig. 4's left column: all ops and each op masked alone (6 subsets).
"With LT" is LT on skip, the ScarletNAS transformer (the paper found LT on pool not
useful). 6 subsets x 2 variants x 2 sizes (s, w) = 24 runs; the 6 small baseline runs
are Fig. 4 runs and s-lt_skip-all, s-lt_skip-mask_none are Fig. 5 runs (same names,
so one --root trains them once).

python -m launch.sweep --sweep=configs/sweeps/fig11.py --root=runs/paper
"""
from launch import grid
from spos_jax.space import OPS

SIZES = ('s', 'w')
SUBSETS = [grid.ALL_OPS, *grid.with_each((), OPS)]  # Fig. 4's left column
VARIANTS = ('', 'lt_skip')


def get_config():
  return grid.sweep_config(
      'Fig. 11, Fig. 12, Fig. 13',
      'Small (C=32) vs small-but-wide (C=96), with and without LT: KT, SCC, PCC', SIZES,
      metrics=('kendall_tau', 'spearman', 'pearson'))


def get_runs():
  return grid.product(SIZES, SUBSETS, VARIANTS)
