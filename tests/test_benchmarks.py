"""benchmarks/throughput.py runs on a CPU and prints its schema (no timing is asserted)."""
import json
import os
from pathlib import Path
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]

COMMON = {'device', 'platform', 'jax', 'commit', 'size', 'seeds', 'precision', 'batch_size',
          'scan_cells', 'benchmark', 'path', 'peak_memory_gb'}
TRAIN = COMMON | {'steps_per_dispatch', 'seeds_in_parallel', 'images_per_s', 'compile_s'}
EVAL = COMMON | {'archs', 'val_images', 'archs_per_s', 'first_call_s'}


def test_throughput_benchmark_prints_one_json_line_per_measurement():
  command = [sys.executable, str(REPO / 'benchmarks/throughput.py'), '--size=tiny',
             '--train_images=400', '--val_images=50', '--batch_size=8', '--eval_archs=2',
             '--reference_eval_archs=2', '--groups_per_call=2', '--min_seconds=0.1',
             '--steps_per_dispatch=1', '--precision=fp32']
  # The quick XLA:CPU pipeline of conftest.FAST_COMPILE: no figure is checked here.
  env = dict(os.environ, XLA_FLAGS=' '.join(filter(None, (
      os.environ.get('XLA_FLAGS'), '--xla_backend_optimization_level=0',
      '--xla_llvm_disable_expensive_passes=true'))))
  result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert [(r['benchmark'], r['path']) for r in records] == [
      ('train', 'fast'), ('train', 'reference'), ('eval', 'fast'), ('eval', 'reference')]
  for r in records:
    assert set(r) == (TRAIN if r['benchmark'] == 'train' else EVAL), r
    assert r['platform'] == 'cpu' and r['size'] == 'tiny'
    rate = r['images_per_s'] if r['benchmark'] == 'train' else r['archs_per_s']
    assert rate > 0, r
  # eval/fast scores the whole cosets of its sampled archs, as full-space scoring does.
  assert records[2]['archs'] in (5, 10) and records[3]['archs'] == 2
  assert all(r['val_images'] == 50 for r in records[2:])
