"""The reproduction queue: the ten runs REPRODUCTION.md judges the paper's claims on.

In order of value: small (all ops; Zero, Pool, Skip, 3x3-conv and Zero+Pool masked),
uniform sampling (all ops, Zero masked), medium (all ops, Zero masked). Subsets of 729
archs or fewer (Zero+Pool masked) are scored whole (eval.scope='all'), as the paper
does; the others on the top-N and random groups.

python -m launch.sweep --sweep=configs/sweeps/queue.py --root=runs/paper
CPU scale (configs/cpu_small.py, docs there):
python -m launch.sweep --sweep=configs/sweeps/queue.py --root=runs/cpu \
    --size_config=s=configs/cpu_small.py,m=configs/cpu_medium.py --config.data.path=cifar10.npz
"""
from launch import grid
from spos_jax import space
from spos_jax.space import OPS

ZERO, SKIP, CONV1, CONV3, POOL = OPS
# Subsets small enough to score every arch of.
WHOLE_SUBSET_ARCHS = 729


def _scored_whole(run: grid.Run) -> grid.Run:
  masked = run.overrides.get('space.masked_ops', '')
  allowed = len(space.allowed_ops_from_mask(masked))
  if allowed ** space.NUM_EDGES > WHOLE_SUBSET_ARCHS:
    return run
  return grid.Run(run.name, run.size, {**run.overrides, 'eval.scope': 'all'})


def get_config():
  return grid.sweep_config('Queue', 'The reproduction queue of REPRODUCTION.md', ('s', 'm'))


def get_runs():
  runs = [grid.run('s', subset) for subset in (
      grid.ALL_OPS, (ZERO,), (POOL,), (SKIP,), (ZERO, POOL), (CONV3,))]
  runs += [grid.run('s', subset, 'uniform') for subset in (grid.ALL_OPS, (ZERO,))]
  runs += [grid.run('m', subset) for subset in (grid.ALL_OPS, (ZERO,))]
  return [_scored_whole(run) for run in runs]
