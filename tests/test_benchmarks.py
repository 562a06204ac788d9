"""benchmarks/throughput.py runs on a CPU and prints its schema (no timing is asserted).

The smoke run is the smallest super-network (C=4, N=1) on a few hundred images. A
busy machine can make it slow without anything being wrong: when only its time
limit runs out the test skips, saying so; a non-zero exit or a wrong schema fails.
"""
import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

REPO = Path(__file__).resolve().parents[1]

COMMON = {'device', 'platform', 'jax', 'commit', 'size', 'seeds', 'precision', 'batch_size',
          'scan_cells', 'benchmark', 'path', 'peak_memory_gb'}
STAGES = {'trace_s', 'lower_s', 'compile_s'}
TRAIN_FAST = COMMON | STAGES | {'seed_mode', 'sampling', 'uniform_ops',
                                'steps_per_dispatch', 'seeds_in_parallel', 'images_per_s'}
TRAIN_REFERENCE = COMMON | {'steps_per_dispatch', 'seeds_in_parallel', 'images_per_s',
                            'compile_s'}
EVAL = COMMON | {'archs', 'val_images', 'eval_batch_size', 'groups_per_call', 'archs_per_s',
                 'first_call_s'}
SMOKE_LIMIT_S = 900  # ~80 s on an idle 2-core machine


def _run_throughput(*flags, timeout=SMOKE_LIMIT_S):
  """The benchmark with XLA:CPU's quick pipeline (conftest.FAST_COMPILE); skips on timeout."""
  env = dict(os.environ, XLA_FLAGS=' '.join(filter(None, (
      os.environ.get('XLA_FLAGS'), '--xla_backend_optimization_level=0',
      '--xla_llvm_disable_expensive_passes=true'))))
  command = [sys.executable, str(REPO / 'benchmarks/throughput.py'), *flags]
  try:
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
  except subprocess.TimeoutExpired:
    pytest.skip(f'throughput.py did not finish in {timeout} s (a busy machine?); '
                'its schema was not checked')


@pytest.mark.slow
def test_throughput_benchmark_prints_one_json_line_per_measurement():
  common = ('--size=micro', '--seeds=2', '--train_images=200', '--val_images=40',
            '--batch_size=8', '--eval_archs=2', '--reference_eval_archs=1',
            '--groups_per_call=1', '--eval_batch_size=20', '--min_seconds=0.05',
            '--steps_per_dispatch=1', '--precision=fp32')
  result = _run_throughput(
      *common, '--seed_modes=parallel,sequential,unrolled,single', '--samplings=fair',
      '--only=train_fast,train_reference,eval_fast,eval_reference,eval_sparse')
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines()]
  # Uniform sampling in one seed mode: the seed modes' code paths are the ones above.
  uniform = _run_throughput(*common, '--seed_modes=single', '--samplings=uniform_all',
                            '--only=train_fast')
  assert uniform.returncode == 0, uniform.stderr[-3000:]
  uniform = [json.loads(line) for line in uniform.stdout.splitlines()]
  assert [(r['seed_mode'], r['sampling'], r['uniform_ops']) for r in uniform] == [
      ('single', 'uniform', 'all')]
  assert all(set(r) == TRAIN_FAST and r['images_per_s'] > 0 for r in uniform), uniform
  modes = ('parallel', 'sequential', 'unrolled', 'single')
  assert [(r['benchmark'], r['path'], r.get('seed_mode'), r.get('sampling'),
           r.get('uniform_ops')) for r in records] == (
      [('train', 'fast', m, 'fair', 'drawn') for m in modes]
      + [('train', 'reference') + (None,) * 3, ('eval', 'fast') + (None,) * 3,
         ('eval', 'reference') + (None,) * 3, ('eval', 'sparse') + (None,) * 3,
         ('eval', 'sparse') + (None,) * 3])
  schema = [TRAIN_FAST] * 4 + [TRAIN_REFERENCE, EVAL | STAGES, EVAL] + [EVAL | {'packing'}] * 2
  for r, keys in zip(records, schema):
    assert set(r) == keys, r
    assert r['platform'] == 'cpu' and r['size'] == 'micro'
    rate = r['images_per_s'] if r['benchmark'] == 'train' else r['archs_per_s']
    assert rate > 0, r
    assert all(r[k] >= 0 for k in STAGES & set(r)), r
  # The seed modes: 2 seeds vmapped, the same 2 in a loop and unrolled, 1 seed.
  assert [(r['seeds'], r['seeds_in_parallel']) for r in records[:4]] == [
      (2, True), (2, False), (2, False), (1, True)]
  # eval/fast scores the whole cosets of its sampled archs, as full-space scoring does;
  # eval/sparse the sampled archs themselves, once per packing.
  assert records[5]['archs'] in (5, 10) and records[6]['archs'] == 1
  assert [(r['archs'], r['packing']) for r in records[7:]] == [
      (2, 'fair_groups'), (2, 'single_path')]
  assert all(r['val_images'] == 40 and r['eval_batch_size'] == 20 for r in records[5:])


def test_unknown_seed_mode_is_one_line_naming_the_choices():
  result = _run_throughput('--seed_modes=parallel,serial', '--only=none', timeout=300)
  assert result.returncode == 2
  last = result.stderr.strip().splitlines()[-1]
  assert 'serial' in last and 'parallel,sequential,unrolled,single' in last, result.stderr
