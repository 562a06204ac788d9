"""The paper's experiment grid as named runs, for the sweep files (docs/method.md,
'Experiment grid').

A run is (name, size, overrides): `size` is a key of the sweep's `sizes` (base config
files), `overrides` a flat dict of config keys applied on top of it. Names read
size-variant-subset and are stable, so that sweeps sharing a --root share runs:

  s-all                          small, all ops, the baseline training
  m-mask_none+avg_pool_3x3       medium, Zero and Pool masked
  s-lt_skip-mask_none            small, Linear Transformer on skip, Zero masked
  s-uniform-all-seed3            one seed of a run (launch.sweep --split_seeds)
  s-fewshot_e0-all               small, few-shot sub-networks split on edge 0
  s-proxies-mask_none            small, zero-cost proxies at init, Zero masked
  m-shared_every-all             medium, the shared layers step after every micro-batch

Subsets are tuples of masked op names (spos_jax.space.OPS); () masks nothing.
"""
from __future__ import annotations

from typing import Iterable, NamedTuple, Sequence

import ml_collections

from spos_jax import space

# Base config of each size, relative to configs/sweeps/ (docs/method.md, 'Network and sizes').
SIZE_CONFIGS = {'s': '../small.py', 'm': '../medium.py', 'w': '../wide.py'}

ALL_OPS = ()  # the full search space: nothing masked

# Training variations (docs/method.md, 'Operations', 'Path sampling', 'Training');
# '' is the baseline.
VARIANTS = {
    '': {},
    'lt_skip': {'model.lt_skip': True},
    'lt_skip_pool': {'model.lt_skip': True, 'model.lt_pool': True},
    'unshared': {'sampling.topology': 'unshared'},
    'uniform': {'sampling.method': 'uniform'},
    'warmup': {'train.warmup_epochs': 5.0},
    'clip': {'train.clip_norm': 5.0},
    'autoaug_ls': {'train.augment': 'autoaugment', 'train.label_smoothing': 0.1},
    # Beyond the paper: zero-cost proxies at init over the whole (masked) space, and
    # few-shot super-networks split on edge E (fewshot.epochs more epochs each).
    'proxies': {'method': 'proxies', 'eval.scope': 'all', 'train.precision': 'fp32'},
    **{f'fewshot_e{edge}': {'fewshot.split_edge': edge} for edge in range(space.NUM_EDGES)},
    # The paper's open question: the layers every path shares (train.SHARED_LAYERS) on
    # the mean of the |O| micro-batch gradients, or stepping after every micro-batch.
    'shared_mean': {'train.shared_layers': 'mean'},
    'shared_every': {'train.shared_layers': 'every_micro_step'},
}


def sweep_config(figure: str, title: str, sizes: Iterable[str],
                 metrics: Sequence[str] = ('kendall_tau', 'mean_supernet_acc')):
  """A sweep file's get_config(): its figure, base config per size, reported metrics."""
  config = ml_collections.ConfigDict()
  config.figure = figure
  config.title = title
  config.sizes = {size: SIZE_CONFIGS[size] for size in sizes}
  config.metrics = tuple(metrics)
  return config


class Run(NamedTuple):
  name: str
  size: str
  overrides: dict


def masked(*ops: str) -> tuple[str, ...]:
  """A subset in canonical form: the masked ops' NB201 names in OPS order."""
  return tuple(space.OPS[i] for i in space.parse_op_list(ops))


def with_each(base: Sequence[str], others: Iterable[str]) -> list[tuple[str, ...]]:
  """Subsets `base` + X for each X of `others`: with_each([ZERO], [SKIP, POOL])."""
  return [masked(*base, x) for x in others]


def unique(subsets: Iterable[Sequence[str]]) -> list[tuple[str, ...]]:
  """Canonical subsets without repeats, in first-seen order."""
  return list(dict.fromkeys(masked(*s) for s in subsets))


def subset_name(subset: Sequence[str]) -> str:
  """'all' or 'mask_none+avg_pool_3x3'."""
  subset = masked(*subset)
  return 'mask_' + '+'.join(subset) if subset else 'all'


def subset_overrides(subset: Sequence[str]) -> dict:
  subset = masked(*subset)
  return {'space.masked_ops': ','.join(subset)} if subset else {}


def run(size: str, subset: Sequence[str] = ALL_OPS, variant: str = '') -> Run:
  """One named run of the grid."""
  name = '-'.join(part for part in (size, variant, subset_name(subset)) if part)
  return Run(name, size, {**subset_overrides(subset), **VARIANTS[variant]})


def product(sizes: Iterable[str], subsets: Iterable[Sequence[str]],
            variants: Iterable[str] = ('',)) -> list[Run]:
  """Every size x variant x subset, in that nesting order."""
  subsets, variants = list(subsets), list(variants)
  return [run(size, subset, variant)
          for size in sizes for variant in variants for subset in subsets]


def split_seeds(one_run: Run, seeds: Iterable[int]) -> list[Run]:
  """One run per seed: name suffix '-seed3', override seeds=(3,)."""
  return [Run(f'{one_run.name}-seed{seed}', one_run.size, {**one_run.overrides, 'seeds': (seed,)})
          for seed in seeds]
