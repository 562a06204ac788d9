"""The shared layers under strictly fair accumulation: the paper's open question.

Strictly fair, each cell op gets one micro-batch's gradient per step, but the layers
every path uses (stem, reduction blocks, final BN, classifier: train.SHARED_LAYERS)
get the sum of |O|, which the paper suspects of destructive steps where medium
super-networks fail to generalise. Its two cheap remedies as train.shared_layers:
'mean' (those layers step on the mean of the |O| gradients) and 'every_micro_step'
(they step after each micro-batch; the cell ops still once per group), beside the
baseline ('sum'), uniform sampling and unshared topology, Fig. 6 style.

Subsets: all ops and Zero masked (where the paper saw the medium failures). Runs per
subset: s and m x {baseline, unshared, uniform, shared_mean}, plus m-shared_every
(the medium net is the one in question; the step costs more, BUILD.md). 2 x (2 x 4
+ 1) = 18 runs; the baseline, unshared and uniform ones are Fig. 4's and Fig. 6's
(same names, so one --root trains them once), 6 are new. Each run's TensorBoard
logs train/update_norm/{shared,cells} every step and train/shared_grads/<layer>/
{cosine,step_multiple} at a few fixed steps (train.PROBE_FRACTIONS).

python -m launch.sweep --sweep=configs/sweeps/shared_layers.py --root=runs/paper
"""
from launch import grid

SIZES = ('s', 'm')
SUBSETS = [grid.ALL_OPS, grid.masked('none')]
VARIANTS = ('', 'unshared', 'uniform', 'shared_mean')


def get_config():
  return grid.sweep_config(
      'Shared layers', 'Shared layers under strictly fair accumulation: sum (baseline), '
      'mean, every micro-step; uniform and unshared beside', SIZES)


def get_runs():
  return grid.product(SIZES, SUBSETS, VARIANTS) + grid.product(('m',), SUBSETS,
                                                               ('shared_every',))
