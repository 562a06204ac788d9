"""Tests for spos_jax.report on a synthetic sweep written by results.write.

The sweep: a synthetic full bench table (all 15625 archs, a made-up accuracy), three
runs (small: all ops and Zero masked; medium: Zero masked) of three seeds each, scored
by a noisy function of the bench accuracy, and one run folder without results.
"""
import csv
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from spos_jax import bench as bench_lib
from spos_jax import config as config_lib
from spos_jax import evaluate
from spos_jax import metrics
from spos_jax import report
from spos_jax import results
from spos_jax import space
from spos_jax import workdir

SEEDS = (0, 1, 2)
RANDOM_SIZE = 200
RUNS = {  # name: (channels, cells per stage, masked ops)
    's-all': (32, 2, ''),
    's-mask_none': (32, 2, 'none'),
    'm-mask_none': (64, 4, 'none'),
}
MISSING = 'm-uniform'
SIZES = ('s', 'm')
FIGURE_STEMS = ['fig3_op_usage'] + [
    f'{kind}_{size}' for kind in ('fig2_scatter', 'fig4_accuracy_tau', 'fig11_scc_pcc')
    for size in SIZES]


def write_bench_table(path):
  """All archs with a shuffled NB201 index and an accuracy that favours conv3x3."""
  rng = np.random.default_rng(0)
  archs = space.all_archs()
  acc = (70 + 4 * (archs == 3).sum(1) + 1.5 * (archs == 1).sum(1)
         - 2 * (archs == 4).sum(1) + rng.normal(0, 2, len(archs)))
  acc[space.is_dead(archs)] = 10.0
  index = rng.permutation(len(archs))
  with open(path, 'w') as f:
    f.write('index,arch,cifar10_test\n')
    for i, arch, a in zip(index, archs, acc):
      f.write(f'{i},{space.arch_to_string(arch)},{a:.4f}\n')


def run_config(channels, cells, masked, table, **fields):
  config = config_lib.base_config()
  config.seeds = SEEDS
  config.model.channels = channels
  config.model.cells_per_stage = cells
  config.space.masked_ops = masked
  config.eval.random_size = RANDOM_SIZE
  config.bench.path = str(table)
  for key, value in fields.items():
    config_lib.set_flat(config, key, value)
  return config


def synthetic_scores(truth, seed):
  """Per-seed super-net accuracies: noisy, in steps of 0.02 % (k / 5000 images)."""
  rng = np.random.default_rng(seed)
  raw = 0.5 * truth + rng.normal(0, 4, (len(SEEDS), len(truth)))
  return np.round(raw / 0.02) * 0.02


def write_run(root, name, table, bench, spec=None, **fields):
  channels, cells, masked = spec or RUNS[name]
  config = run_config(channels, cells, masked, table, **fields)
  folder = root / name
  folder.mkdir()
  workdir.write_json_atomic(str(folder / 'config.json'), config_lib.flatten(config))
  subset = bench_lib.restrict(bench, config_lib.allowed_ops(config))
  rows, groups, _ = evaluate.scored_rows(config, subset)
  truth = subset.metric(config.bench.metric)[rows]
  scores = synthetic_scores(truth, seed=sum(map(ord, name)))
  results.write(str(folder / 'results' / results.results_name(config.eval)), config=config,
                bench=subset, seeds=SEEDS, indices=subset.indices[rows],
                arch_strings=subset.arch_strings[rows], scores=scores, truth=truth,
                groups=groups, evaluated_archs_per_second=1.0)
  return {'scores': scores, 'truth': truth, 'groups': groups,
          'indices': subset.indices[rows]}


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  """(root, bench table path, {run: scores/truth/groups}) of the synthetic sweep."""
  base = tmp_path_factory.mktemp('sweep')
  table = base / 'table.csv'
  write_bench_table(table)
  bench = bench_lib.load_bench(table)
  root = base / 'runs'
  root.mkdir()
  written = {name: write_run(root, name, table, bench) for name in RUNS}
  missing = root / MISSING
  missing.mkdir()
  config = run_config(64, 4, '', table)
  workdir.write_json_atomic(str(missing / 'config.json'), config_lib.flatten(config))
  (missing / 'TRAINED').write_text('10\n')
  return root, table, written


@pytest.fixture(scope='module')
def built(sweep, tmp_path_factory):
  """The report of the sweep, with --bench: (out folder, main's exit status)."""
  root, table, _ = sweep
  out = tmp_path_factory.mktemp('report')
  status = report.main([f'--root={root}', f'--out={out}', f'--bench={table}'])
  return out, status


def read_csv(path):
  with open(path, newline='') as f:
    return list(csv.DictReader(f))


def load_metrics(root, name):
  with open(root / name / 'results' / 'running-groups' / 'metrics.json') as f:
    return json.load(f)


def copy_runs(sweep_root, dest, names):
  dest.mkdir()
  for name in names:
    shutil.copytree(sweep_root / name, dest / name)
  return dest


# ---------------------------------------------------------------------------
# The whole report


def test_every_file_is_written(built):
  out, status = built
  assert status == 0
  for name in ('summary.csv', 'summary_run.csv', 'op_usage.csv', 'report.md'):
    assert (out / name).stat().st_size > 0, name
  for stem in FIGURE_STEMS:
    png = out / 'figures' / f'{stem}.png'
    pdf = out / 'figures' / f'{stem}.pdf'
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', png
    assert pdf.read_bytes()[:5] == b'%PDF-', pdf


def test_summary_means_and_stds_match_numpy(sweep, built):
  root, _, _ = sweep
  out, _ = built
  rows = read_csv(out / 'summary.csv')
  assert {r['run'] for r in rows} == set(RUNS)
  for name in RUNS:
    groups = load_metrics(root, name)['groups']
    mine = {r['group']: r for r in rows if r['run'] == name}
    assert set(mine) == set(groups)
    for group, entry in groups.items():
      row = mine[group]
      assert row['n_seeds'] == str(len(SEEDS))
      for field in results.GROUP_METRICS:
        values = [entry['per_seed'][str(s)][field] for s in SEEDS]
        assert float(row[f'{field}_mean']) == pytest.approx(np.mean(values), rel=1e-12)
        assert float(row[f'{field}_std']) == pytest.approx(np.std(values, ddof=1), rel=1e-12)


def test_summary_kendall_tau_from_the_scores(sweep, built):
  """End to end: the top-50 KT of summary.csv from the synthetic arrays themselves."""
  _, _, written = sweep
  out, _ = built
  rows = read_csv(out / 'summary.csv')
  for name, data in written.items():
    pos = data['groups']['top50']
    taus = [metrics.kendall_tau(data['scores'][i, pos], data['truth'][pos])
            for i in range(len(SEEDS))]
    row = next(r for r in rows if r['run'] == name and r['group'] == 'top50')
    assert float(row['kendall_tau_mean']) == pytest.approx(np.mean(taus), rel=1e-12)
    assert float(row['kendall_tau_std']) == pytest.approx(np.std(taus, ddof=1), rel=1e-12)


def test_summary_run_matches_metrics_json(sweep, built):
  root, _, _ = sweep
  out, _ = built
  rows = {r['run']: r for r in read_csv(out / 'summary_run.csv')}
  assert set(rows) == set(RUNS)
  for name, row in rows.items():
    saved = load_metrics(root, name)
    assert (row['size'], row['variant']) == tuple(name.split('-', 1))
    assert float(row['tau_a']) == pytest.approx(saved['tau_a']['value'])
    for k in ('10', '50', '100'):
      values = list(saved['precision_at_k'][k]['per_seed'].values())
      assert float(row[f'precision_at_{k}_mean']) == pytest.approx(np.mean(values))
      assert float(row[f'precision_at_{k}_std']) == pytest.approx(np.std(values, ddof=1))
    regrets = [v['regret'] for v in saved['top1']['per_seed'].values()]
    assert float(row['top1_regret_mean']) == pytest.approx(np.mean(regrets))


def test_report_md_names_every_run_and_the_missing_one(built):
  out, _ = built
  text = (out / 'report.md').read_text()
  for name in RUNS:
    assert f'`{name}`' in text
  missing = text.split('## Missing runs', 1)[1]
  assert f'`{MISSING}`' in missing and 'not evaluated' in missing
  assert MISSING not in text.split('## Missing runs', 1)[0]
  linked = re.findall(r'\]\((figures/[^)]+)\)', text)
  assert {f'figures/{stem}.{ext}' for stem in FIGURE_STEMS for ext in ('png', 'pdf')} <= set(
      linked)
  assert all((out / path).is_file() for path in linked)


# ---------------------------------------------------------------------------
# Groups of archs


def test_random_group_is_redrawn_from_the_bench(sweep):
  root, table, written = sweep
  bench = bench_lib.load_bench(table)
  run = report.load_run(str(root / 's-mask_none'), 'running-groups')
  data = written['s-mask_none']
  chosen = run.predictions.indices  # positions below index these NB201 indices
  pos, label = report.group_positions(run, 'random', bench)
  assert label == 'random' and len(pos) == RANDOM_SIZE
  np.testing.assert_array_equal(np.sort(chosen[pos]),
                                np.sort(data['indices'][data['groups']['random']]))
  top, label = report.group_positions(run, 'top50', bench)
  assert label == 'top50'
  np.testing.assert_array_equal(chosen[top], data['indices'][data['groups']['top50']])
  # Without the table the panel falls back to every scored arch, and says so.
  pos, label = report.group_positions(run, 'random', None)
  assert label == 'all scored' and len(pos) == len(run.predictions.indices)


def test_random_group_is_redrawn_from_predictions_of_a_whole_subset(sweep, tmp_path):
  """A run that scored all of its subset needs no bench table to redraw the group."""
  _, table, _ = sweep
  bench = bench_lib.load_bench(table)
  data = write_run(tmp_path, 's-zero_pool', table, bench, (32, 2, 'none,avg_pool_3x3'),
                   **{'eval.scope': 'all'})
  run = report.load_run(str(tmp_path / 's-zero_pool'), 'running-all')
  pos, label = report.group_positions(run, 'random', None)
  assert label == 'random' and len(pos) == RANDOM_SIZE < len(run.predictions.indices)
  np.testing.assert_array_equal(run.predictions.indices[pos],
                                np.sort(data['indices'][data['groups']['random']]))


def test_run_names_give_size_and_variant():
  assert report.size_and_variant('s-mask_none+avg_pool_3x3', {}) == (
      's', 'mask_none+avg_pool_3x3')
  assert report.size_and_variant('m-uniform', {}) == ('m', 'uniform')
  wide = {'model.channels': 96, 'model.cells_per_stage': 2}
  assert report.size_and_variant('baseline', wide) == ('w', 'baseline')
  assert report.size_and_variant('odd', {'model.channels': 8}) == ('other', 'odd')


def test_figure_flag_keeps_one_sweep(sweep, tmp_path):
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all', 's-mask_none'])
  (runs / 's-all' / 'SWEEP').write_text('fig4\n')
  (runs / 's-mask_none' / 'sweep.json').write_text(json.dumps({'figure': 'fig6'}))
  found = report.collect(str(runs), sweep='fig4')
  assert [r.name for r in found.runs] == ['s-all'] and found.runs[0].sweep == 'fig4'


# ---------------------------------------------------------------------------
# Refusals and errors


def test_predictions_lacking_a_seed_is_refused(sweep, tmp_path, capsys):
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all', 's-mask_none'])
  path = runs / 's-all' / 'results' / 'running-groups' / 'predictions.csv'
  lines = path.read_text().splitlines()
  path.write_text('\n'.join(l for l in lines if not l.startswith('2,')) + '\n')
  out = tmp_path / 'out'
  assert report.main([f'--root={runs}', f'--out={out}']) == 0
  err = capsys.readouterr().err
  assert 'refused run s-all' in err and str(path) in err and 'seed 2' in err
  refused = (out / 'report.md').read_text().split('## Refused runs', 1)[1]
  assert '`s-all`' in refused.split('## Missing runs')[0]
  assert [r['run'] for r in read_csv(out / 'summary_run.csv')] == ['s-mask_none']


def test_metrics_with_other_seed_count_is_refused(sweep, tmp_path):
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all'])
  config_path = runs / 's-all' / 'config.json'
  config = json.loads(config_path.read_text())
  config['seeds'] = [0, 1, 2, 3]
  config_path.write_text(json.dumps(config))
  found = report.collect(str(runs))
  assert not found.runs
  (problem,) = found.refused
  assert 'metrics.json' in problem.reason and '3 seed(s)' in problem.reason
  assert 'lists 4' in problem.reason


def test_several_evaluations_need_a_choice(sweep, tmp_path):
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all'])
  results_dir = runs / 's-all' / 'results'
  shutil.copytree(results_dir / 'running-groups', results_dir / 'batch-groups')
  os.rename(results_dir / 'running-groups', results_dir / 'recalibrate10-groups')
  found = report.collect(str(runs))
  assert not found.runs and '--eval_name' in found.refused[0].reason
  found = report.collect(str(runs), eval_name='batch-groups')
  assert [r.eval_name for r in found.runs] == ['batch-groups']


def test_root_without_results_fails_with_a_message(sweep, tmp_path, capsys):
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', [MISSING])
  assert report.main([f'--root={runs}', f'--out={tmp_path / "out"}']) != 0
  err = capsys.readouterr().err
  assert err.startswith('error: no run under') and MISSING in err
  assert 'Traceback' not in err
  empty = tmp_path / 'empty'
  empty.mkdir()
  assert report.main([f'--root={empty}', f'--out={tmp_path / "out"}']) != 0
  assert 'no run folders' in capsys.readouterr().err


def test_unknown_root_exits_nonzero_without_traceback(tmp_path):
  missing = tmp_path / 'nowhere'
  done = subprocess.run(
      [sys.executable, '-m', 'spos_jax.report', f'--root={missing}', f'--out={tmp_path}/o'],
      capture_output=True, text=True, timeout=120)
  assert done.returncode != 0
  assert 'not a directory' in done.stderr and str(missing) in done.stderr
  assert 'Traceback' not in done.stderr
