"""Cost of train.shared_layers: the train step of each mode, and the gradient probe.

python benchmarks/shared_layers_cost.py [--config=configs/tiny.py] [--rounds=3]

One JSON line per row: compile_s (lower + XLA compile) and the median step time
over --rounds rounds of --steps steps, the rows taking turns each round so that a
busy machine slows them alike. Rows: sum, mean, every_micro_step with its micro-steps
unrolled (the CPU's step) and scanned (other devices'), and the probe that compares
the |O| member gradients (train.compile_gradient_probe; 7 calls per run). Synthetic
data in the config's shape; the config's seeds, precision and batch size.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from spos_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from spos_jax import train  # pylint: disable=g-import-not-at-top

# (train.shared_layers, unroll the micro-steps); None: the mode has none.
ROWS = (('sum', None), ('mean', None), ('every_micro_step', True), ('every_micro_step', False))


def load_config(path: str, mode: str):
  spec = importlib.util.spec_from_file_location('config_file', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.train.shared_layers, c.train.steps_per_dispatch = mode, 1
  c.data.source, c.data.path = 'synthetic', ''
  c.data.synthetic_size = (c.data.train_subset or 45000) + c.data.val_size
  c.data.train_subset = 0
  return c


def timed(fn, *args):
  start = time.perf_counter()
  out = jax.block_until_ready(fn(*args))
  return out, time.perf_counter() - start


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--config', default='configs/tiny.py')
  p.add_argument('--rounds', type=int, default=3)
  p.add_argument('--steps', type=int, default=2, help='steps per row and round')
  args = p.parse_args()
  rows = {}
  for mode, unroll in ROWS:
    train.unroll_micro_steps = lambda unroll=unroll: unroll  # read when the step is traced
    c = load_config(args.config, mode)
    data = train.load_device_data(c)
    model, tx = train.create_model(c), train.create_optimizer(c, data.num_train)
    states = train.init_states(model, tx, c.seeds)
    start = time.perf_counter()
    chunk = train.make_train_chunk(c, model, tx, 10**9, 1).lower(states, data).compile()
    compile_s = time.perf_counter() - start
    states = jax.block_until_ready(chunk(states, data)[0])
    name = mode + {None: '', True: ' unrolled', False: ' scanned'}[unroll]
    rows[name] = dict(chunk=chunk, states=states, data=data, compile_s=compile_s, times=[],
                      images=len(c.seeds) * config_lib.group_size(c) * c.train.batch_size)
    if mode == 'sum':  # the probe: a fresh compile, then steady calls
      start = time.perf_counter()
      probe = train.compile_gradient_probe(c, model, states, data)
      probe_compile = time.perf_counter() - start
      timed(probe, states, data)
      calls = [timed(probe, states, data)[1] for _ in range(args.steps)]
      print(json.dumps(dict(row='probe', compile_s=round(probe_compile, 1),
                            call_ms=round(1e3 * float(np.median(calls))))), flush=True)
  for _ in range(args.rounds):
    for row in rows.values():
      start = time.perf_counter()
      for _ in range(args.steps):
        row['states'] = row['chunk'](row['states'], row['data'])[0]
      jax.block_until_ready(row['states'])
      row['times'].append((time.perf_counter() - start) / args.steps)
  for name, row in rows.items():
    step = float(np.median(row['times']))
    print(json.dumps(dict(row=name, compile_s=round(row['compile_s'], 1),
                          step_ms=round(1e3 * step), images_per_s=round(row['images'] / step),
                          device=jax.devices()[0].device_kind)), flush=True)


if __name__ == '__main__':
  main()
