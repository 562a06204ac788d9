"""Throughput of training and arch scoring, fast path vs reference, one JSON line each.

python benchmarks/throughput.py --size=small [--seeds=5] [--seed_modes=parallel,sequential,unrolled,single]

Synthetic data (45k train / 5k val images on the device). Measurements:
  train/fast       whole strictly fair groups in one graph (train.make_train_chunk),
                   one row per --seed_modes entry: `parallel` (the --seeds seeds
                   vmapped), `sequential` (the same seeds one after another inside the
                   step, lax.map), `unrolled` (one after another, each seed's step
                   written out: config train.seed_loop='unrolled'), `single` (one seed)
  train/reference  |O| single-path micro-steps (nn.switch) under optax.MultiSteps,
                   scanned in one dispatch per group
  eval/fast        coset-batched scoring (scoring.score_archs), 5000 images per arch
  eval/reference   one arch at a time, single-path forward
  eval/sparse      random archs (as the top-N and random groups are), once per
                   eval.packing: fair groups (packing leaves slots empty) and single
                   paths; only with --only=...,eval_sparse (--eval_archs archs)
images_per_s counts the images of all seeds. train/fast and eval/fast time jax's
stages separately: trace_s (Python tracing to a jaxpr), lower_s (to StableHLO),
compile_s (XLA; from the persistent cache with --compilation_cache); for the other
rows compile_s is the first call minus a steady call. A parallel row whose program
XLA estimates over the device's memory is compiled again one seed at a time, as
train.compile_train_chunk does (seeds_in_parallel says which ran). peak_memory_gb is
the device's peak (None where the backend has none).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top

from spos_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from spos_jax import data as data_lib  # pylint: disable=g-import-not-at-top
from spos_jax import memory  # pylint: disable=g-import-not-at-top
from spos_jax import scoring  # pylint: disable=g-import-not-at-top
from spos_jax import space  # pylint: disable=g-import-not-at-top
from spos_jax import train  # pylint: disable=g-import-not-at-top

# (channels, cells per stage); 'micro' is the CI smoke size.
SIZES = {'micro': (4, 1), 'tiny': (8, 1), 'small': (32, 2), 'medium': (64, 4), 'wide': (96, 2),
         'cpu_small': (8, 1), 'cpu_medium': (16, 2)}
SEED_MODES = ('parallel', 'sequential', 'unrolled', 'single')


def add_size_flags(p: argparse.ArgumentParser) -> None:
  """The flags that size the super-network, the data and the calls (shared with kernel_profile)."""
  p.add_argument('--size', choices=sorted(SIZES), default='small')
  p.add_argument('--seeds', type=int, default=1)
  p.add_argument('--precision', choices=config_lib.PRECISIONS, default='bf16')
  p.add_argument('--batch_size', type=int, default=256)
  p.add_argument('--steps_per_dispatch', type=int, default=10)
  p.add_argument('--groups_per_call', type=int, default=8, help='config eval.groups_per_call')
  p.add_argument('--eval_batch_size', type=int, default=1000,
                 help='config eval.batch_size (at most --val_images)')
  p.add_argument('--scan_cells', action='store_true', help='config model.scan_cells')
  p.add_argument('--train_images', type=int, default=45000)
  p.add_argument('--val_images', type=int, default=5000)
  p.add_argument('--compilation_cache', default='',
                 help='persistent XLA compilation cache folder (as spos_jax.main takes it)')


# --samplings: name -> (sampling.method, train.uniform_ops)
SAMPLINGS = {'fair': ('fair', 'drawn'), 'uniform': ('uniform', 'drawn'),
             'uniform_all': ('uniform', 'all')}


def bench_config(args, seeds: int | None = None, seed_loop: str = 'vmap',
                 sampling: str = 'fair'):
  c = config_lib.base_config()
  c.train.seed_loop = seed_loop
  c.sampling.method, c.train.uniform_ops = SAMPLINGS[sampling]
  c.model.channels, c.model.cells_per_stage = SIZES[args.size]
  c.seeds = tuple(range(args.seeds if seeds is None else seeds))
  c.model.scan_cells = args.scan_cells
  c.train.precision = args.precision
  c.train.batch_size = args.batch_size
  c.train.steps_per_dispatch = args.steps_per_dispatch
  c.data.source = 'synthetic'
  c.data.synthetic_size = args.train_images + args.val_images
  c.data.val_size = args.val_images
  c.eval.batch_size = min(args.eval_batch_size, args.val_images)
  c.eval.groups_per_call = args.groups_per_call
  return c


def synthetic_data(c) -> data_lib.DeviceData:
  arrays = data_lib.load_arrays('synthetic', synthetic_size=c.data.synthetic_size)
  return data_lib.to_device(arrays, c.data.val_size, 0)


def use_compilation_cache(folder: str) -> None:
  """Every compiled program persists in folder; a later process loads it instead."""
  jax.config.update('jax_compilation_cache_dir', folder)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)


def jitted_of(checked: memory.CheckedJit):
  """The jax.jit function inside a memory.CheckedJit."""
  return checked.jitted


def staged_compile(jitted, *args):
  """(compiled, {trace_s, lower_s, compile_s}): jax's three stages timed one by one."""
  t0 = time.perf_counter()
  traced = jitted.trace(*args)
  t1 = time.perf_counter()
  lowered = traced.lower()
  t2 = time.perf_counter()
  compiled = lowered.compile()
  t3 = time.perf_counter()
  return compiled, dict(trace_s=round(t1 - t0, 3), lower_s=round(t2 - t1, 3),
                        compile_s=round(t3 - t2, 3))


def device_record() -> dict:
  device = jax.devices()[0]
  def git(*args):
    return subprocess.run(['git', *args], capture_output=True, text=True,
                          cwd=Path(__file__).parent, timeout=5).stdout.strip()
  try:
    commit = git('rev-parse', '--short', 'HEAD')
    if commit and git('status', '--porcelain', '--untracked-files=no'):
      commit += '+dirty'  # measured with uncommitted changes
  except (OSError, subprocess.SubprocessError):
    commit = ''
  return dict(device=device.device_kind, platform=device.platform, jax=jax.__version__,
              commit=commit or 'unknown')


def peak_memory_gb():
  stats = jax.devices()[0].memory_stats() or {}
  peak = stats.get('peak_bytes_in_use')
  return None if peak is None else round(peak / 2**30, 2)


def timed(fn, *args):
  start = time.perf_counter()
  out = fn(*args)
  jax.block_until_ready(out)
  return out, time.perf_counter() - start


def emit(record: dict) -> None:
  print(json.dumps(record), flush=True)


def steady_seconds(run, states, data, min_seconds):
  """(first call minus a steady call: the compile, seconds per call) of a donating step."""
  (states, _), first = timed(run, states, data)
  (states, _), steady = timed(run, states, data)
  repeats = max(1, int(np.ceil(min_seconds / max(steady, 1e-6))))
  start = time.perf_counter()
  for _ in range(repeats):
    states, _ = run(states, data)
  jax.block_until_ready(states)
  return first - steady, (time.perf_counter() - start) / repeats


def compile_train_fast(c, model, tx, states, data, parallel: bool):
  """(compiled chunk, stage seconds, seeds_in_parallel) as train.compile_train_chunk
  decides it: a parallel program over the device's memory is redone one seed at a time."""
  def staged(in_parallel):
    jitted = train.make_train_chunk(c, model, tx, 10**9, c.train.steps_per_dispatch,
                                    seeds_in_parallel=in_parallel)
    return staged_compile(jitted, states, data)
  compiled, seconds = staged(parallel)
  if parallel and len(c.seeds) > 1 and not memory.fits(compiled):
    compiled, seconds = staged(False)
    parallel = False
  return compiled, seconds, parallel


def measure_train_fast(c, data, base, min_seconds, seed_mode: str):
  """One train/fast row: the --seeds seeds vmapped or one after another, or one seed."""
  model = train.create_model(c)
  tx = train.create_optimizer(c, data.num_train)
  states = train.init_states(model, tx, c.seeds)
  chunk = c.train.steps_per_dispatch
  run, stages, parallel = compile_train_fast(c, model, tx, states, data,
                                             parallel=seed_mode != 'sequential')
  _, per_call = steady_seconds(run, states, data, min_seconds)
  images = len(c.seeds) * config_lib.group_size(c) * c.train.batch_size * chunk
  emit(dict(base, seeds=len(c.seeds), benchmark='train', path='fast', seed_mode=seed_mode,
            sampling=c.sampling.method, uniform_ops=c.train.uniform_ops,
            steps_per_dispatch=chunk, seeds_in_parallel=parallel and seed_mode != 'unrolled',
            images_per_s=round(images / per_call, 1), **stages,
            peak_memory_gb=peak_memory_gb()))


def measure_train_reference(c, data, base, min_seconds):
  model = train.create_model(c)
  k = config_lib.group_size(c)
  tx = optax.MultiSteps(train.create_optimizer(c, data.num_train), k, use_grad_mean=False)
  states = train.init_states(model, tx, c.seeds)

  def group(states, data):
    def micro(states, member):
      return jax.vmap(lambda s: train.reference_micro_step(c, model, tx, s, data, member))(states)
    return jax.lax.scan(micro, states, jnp.arange(k))

  compile_s, per_call = steady_seconds(jax.jit(group, donate_argnums=0), states, data,
                                       min_seconds)
  images = len(c.seeds) * k * c.train.batch_size
  emit(dict(base, benchmark='train', path='reference', steps_per_dispatch=1,
            seeds_in_parallel=len(c.seeds) > 1, images_per_s=round(images / per_call, 1),
            compile_s=round(compile_s, 2), peak_memory_gb=peak_memory_gb()))


def measure_eval(c, data, base, fast: bool, num_archs: int):
  model = train.create_model(c)
  tx = train.create_optimizer(c, data.num_train)
  states = train.init_states(model, tx, (0,))
  params, batch_stats = scoring.seed_variables(states, 0)
  rng = np.random.default_rng(0)
  archs = space.all_archs()[rng.choice(space.NUM_ARCHS, num_archs, replace=False)]
  stages = {}
  if fast:  # whole cosets, as full-space scoring runs them
    bases = np.unique(space.coset_base(archs, tuple(range(5))), axis=0)
    archs = space.coset_members(bases, tuple(range(5))).reshape(-1, 6)
    # The scorer's stages, timed before its first call compiles it (then cached).
    paths = jnp.zeros((c.eval.groups_per_call, 5, 6), jnp.int32)
    x = jnp.zeros((c.eval.batch_size, 32, 32, 3), jnp.float32)
    labels = jnp.zeros((c.eval.batch_size,), jnp.int32)
    _, stages = staged_compile(jitted_of(scoring.make_group_scorer(model, c.eval.bn_mode)),
                               params, batch_stats, paths, x, labels)
  score = scoring.score_archs if fast else scoring.score_archs_one_by_one
  warm = archs[:5] if not fast else archs[:5 * c.eval.groups_per_call]
  _, first = timed(lambda: score(c, model, params, batch_stats, warm, data))
  _, elapsed = timed(lambda: score(c, model, params, batch_stats, archs, data))
  emit(dict(base, seeds=1, benchmark='eval', path='fast' if fast else 'reference',
            archs=len(archs), val_images=data.num_val, eval_batch_size=c.eval.batch_size,
            groups_per_call=c.eval.groups_per_call,
            archs_per_s=round(len(archs) / elapsed, 2), first_call_s=round(first, 2),
            **stages, peak_memory_gb=peak_memory_gb()))


def measure_eval_sparse(c, data, base, num_archs: int):
  """scoring.score_archs on random archs, each eval.packing on the same archs."""
  model = train.create_model(c)
  tx = train.create_optimizer(c, data.num_train)
  params, batch_stats = scoring.seed_variables(train.init_states(model, tx, (0,)), 0)
  rng = np.random.default_rng(0)
  archs = space.all_archs()[rng.choice(space.NUM_ARCHS, num_archs, replace=False)]
  for packing in config_lib.EVAL_PACKINGS:
    c_packing = c.copy_and_resolve_references()
    c_packing.eval.packing = packing
    score = lambda a, c_packing=c_packing: scoring.score_archs(c_packing, model, params,
                                                                batch_stats, a, data)
    _, first = timed(lambda: score(archs[:5 * c.eval.groups_per_call]))
    _, elapsed = timed(lambda: score(archs))
    emit(dict(base, seeds=1, benchmark='eval', path='sparse', packing=packing,
              archs=len(archs), val_images=data.num_val, eval_batch_size=c.eval.batch_size,
              groups_per_call=c.eval.groups_per_call,
              archs_per_s=round(len(archs) / elapsed, 2), first_call_s=round(first, 2),
              peak_memory_gb=peak_memory_gb()))


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_size_flags(p)
  p.add_argument('--seed_modes', default='parallel',
                 help=f'comma list of {",".join(SEED_MODES)}: one train/fast row each')
  p.add_argument('--samplings', default='fair',
                 help=f'comma list of {",".join(SAMPLINGS)}: train/fast rows for each (a '
                      'uniform step trains one micro-batch on one path, a fair step |O|; '
                      'uniform_all runs every op of an edge, train.uniform_ops=all)')
  p.add_argument('--eval_archs', type=int, default=400, help='archs for eval/fast')
  p.add_argument('--reference_eval_archs', type=int, default=10)
  p.add_argument('--min_seconds', type=float, default=5.0, help='steady-state timing span')
  p.add_argument('--only', default='train_fast,train_reference,eval_fast,eval_reference')
  args = p.parse_args()
  seed_modes = args.seed_modes.split(',')
  unknown = sorted(set(seed_modes) - set(SEED_MODES))
  if unknown:
    p.error(f'--seed_modes={args.seed_modes}: unknown {",".join(unknown)}; '
            f'choose from {",".join(SEED_MODES)}')
  if args.compilation_cache:
    use_compilation_cache(args.compilation_cache)
  c = bench_config(args)
  data = synthetic_data(c)
  base = dict(device_record(), size=args.size, seeds=args.seeds, precision=args.precision,
              batch_size=args.batch_size, scan_cells=args.scan_cells)
  wanted = set(args.only.split(','))
  samplings = args.samplings.split(',')
  if not set(samplings) <= set(SAMPLINGS):
    p.error(f'--samplings={args.samplings}: choose from {",".join(SAMPLINGS)}')
  if 'train_fast' in wanted:
    for sampling in samplings:
      for mode in seed_modes:
        c_mode = bench_config(args, 1 if mode == 'single' else None,
                              'unrolled' if mode == 'unrolled' else 'vmap', sampling)
        measure_train_fast(c_mode, data, base, args.min_seconds, mode)
  if 'train_reference' in wanted:
    measure_train_reference(c, data, base, args.min_seconds)
  if 'eval_fast' in wanted:
    measure_eval(c, data, base, True, args.eval_archs)
  if 'eval_reference' in wanted:
    measure_eval(c, data, base, False, args.reference_eval_archs)
  if 'eval_sparse' in wanted:
    measure_eval_sparse(c, data, base, args.eval_archs)


if __name__ == '__main__':
  main()
