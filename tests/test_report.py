"""Tests for spos_jax.report on a synthetic sweep written by results.write.

The sweep: a synthetic full bench table (all 15625 archs, a made-up accuracy), three
runs (small: all ops and Zero masked; medium: Zero masked) of three seeds each, scored
by a noisy function of the bench accuracy, and one run folder without results.
"""
import csv
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from launch import plan
from spos_jax import bench as bench_lib
from spos_jax import config as config_lib
from spos_jax import metrics
from spos_jax import results
from spos_jax import run as run_lib
from spos_jax import space
from spos_jax import workdir
from spos_jax.report import cli
from spos_jax.report import figures
from spos_jax.report import page
from spos_jax.report import runs as runs_lib
from spos_jax.report import stats

SEEDS = (0, 1, 2)
RANDOM_SIZE = 200
RUNS = {  # name: (channels, cells per stage, masked ops)
    's-all': (32, 2, ''),
    's-mask_none': (32, 2, 'none'),
    'm-mask_none': (64, 4, 'none'),
}
MISSING = 'm-uniform'
SIZES = ('s', 'm')
FIGURE_STEMS = ['fig3_op_usage', 'fig4_accuracy_tau'] + [
    f'{kind}_{size}' for kind in ('fig2_scatter', 'fig11_scc_pcc') for size in SIZES]


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
  config.bench.metric = 'cifar10_test'
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
  subset = bench_lib.ranked_subset(bench, config_lib.allowed_ops(config),
                                   config.eval.scope == 'unique')
  rows, groups, _ = run_lib.scored_rows(config, subset)
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
  status = cli.main([f'--root={root}', f'--out={out}', f'--bench={table}'])
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
  run = runs_lib.load_run(str(root / 's-mask_none'), 'running-groups')
  data = written['s-mask_none']
  chosen = run.predictions.indices  # positions below index these NB201 indices
  pos, label = stats.group_positions(run, 'random', bench)
  assert label == 'random' and len(pos) == RANDOM_SIZE
  np.testing.assert_array_equal(np.sort(chosen[pos]),
                                np.sort(data['indices'][data['groups']['random']]))
  top, label = stats.group_positions(run, 'top50', bench)
  assert label == 'top50'
  np.testing.assert_array_equal(chosen[top], data['indices'][data['groups']['top50']])
  # Without the table the panel falls back to every scored arch, and says so.
  pos, label = stats.group_positions(run, 'random', None)
  assert label == 'all scored' and len(pos) == len(run.predictions.indices)


def test_random_group_is_redrawn_from_predictions_of_a_whole_subset(sweep, tmp_path):
  """A run that scored all of its subset needs no bench table to redraw the group."""
  _, table, _ = sweep
  bench = bench_lib.load_bench(table)
  data = write_run(tmp_path, 's-zero_pool', table, bench, (32, 2, 'none,avg_pool_3x3'),
                   **{'eval.scope': 'all'})
  run = runs_lib.load_run(str(tmp_path / 's-zero_pool'), 'running-all')
  pos, label = stats.group_positions(run, 'random', None)
  assert label == 'random' and len(pos) == RANDOM_SIZE < len(run.predictions.indices)
  np.testing.assert_array_equal(run.predictions.indices[pos],
                                np.sort(data['indices'][data['groups']['random']]))


def test_random_group_of_a_unique_evaluation_is_redrawn_from_its_classes(sweep, tmp_path):
  """eval.scope=unique draws the random group from the subset's isomorphism classes;
  the report redraws it from the bench table the same way, and reads the class columns."""
  _, table, _ = sweep
  bench = bench_lib.load_bench(table)
  data = write_run(tmp_path, 's-unique', table, bench, (32, 2, 'none,avg_pool_3x3'),
                   **{'eval.scope': 'unique', 'eval.top_ns': (10, 25, 50, 100)})
  run = runs_lib.load_run(str(tmp_path / 's-unique'), 'running-unique')
  assert len(run.predictions.indices) == run.metrics['bench']['archs_in_subset'] < 729
  for fallback in (bench, None):  # the table, or the predictions of every class
    pos, label = stats.group_positions(run, 'random', fallback)
    assert label == 'random' and len(pos) == RANDOM_SIZE
    np.testing.assert_array_equal(run.predictions.indices[pos],
                                  np.sort(data['indices'][data['groups']['random']]))


def test_run_names_give_size_and_variant():
  assert runs_lib.size_and_variant('s-mask_none+avg_pool_3x3', {}) == (
      's', 'mask_none+avg_pool_3x3')
  assert runs_lib.size_and_variant('m-uniform', {}) == ('m', 'uniform')
  wide = {'model.channels': 96, 'model.cells_per_stage': 2}
  assert runs_lib.size_and_variant('baseline', wide) == ('w', 'baseline')
  assert runs_lib.size_and_variant('odd', {'model.channels': 8}) == ('other', 'odd')


def test_figure_flag_keeps_one_sweep(sweep, tmp_path):
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all', 's-mask_none'])
  (runs / 's-all' / 'SWEEP').write_text('fig4\n')
  (runs / 's-mask_none' / 'sweep.json').write_text(json.dumps({'figure': 'fig6'}))
  found = runs_lib.collect(str(runs), sweep='fig4')
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
  assert cli.main([f'--root={runs}', f'--out={out}']) == 0
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
  found = runs_lib.collect(str(runs))
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
  found = runs_lib.collect(str(runs))
  assert not found.runs and '--eval_name' in found.refused[0].reason
  found = runs_lib.collect(str(runs), eval_name='batch-groups')
  assert [r.eval_name for r in found.runs] == ['batch-groups']


def test_root_without_results_fails_with_a_message(sweep, tmp_path, capsys):
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', [MISSING])
  assert cli.main([f'--root={runs}', f'--out={tmp_path / "out"}']) != 0
  err = capsys.readouterr().err
  assert err.startswith('error: no run under') and MISSING in err
  assert 'Traceback' not in err
  empty = tmp_path / 'empty'
  empty.mkdir()
  assert cli.main([f'--root={empty}', f'--out={tmp_path / "out"}']) != 0
  assert 'no run folders' in capsys.readouterr().err


def test_unknown_root_exits_nonzero_without_traceback(tmp_path):
  missing = tmp_path / 'nowhere'
  done = subprocess.run(
      [sys.executable, '-m', 'spos_jax.report', f'--root={missing}', f'--out={tmp_path}/o'],
      capture_output=True, text=True, timeout=120)
  assert done.returncode != 0
  assert 'not a directory' in done.stderr and str(missing) in done.stderr
  assert 'Traceback' not in done.stderr


# ---------------------------------------------------------------------------
# Friction of a first report, single runs, proxies


def write_sweep_record(folder, *figures):
  """sweep.json as launch.plan writes it: every sweep that names the run, last one on top."""
  entries = [{'sweep': f'fig{f.split()[-1]}', 'sweep_file': f'configs/sweeps/fig{f[-1]}.py',
              'figure': f} for f in figures]
  (folder / 'sweep.json').write_text(json.dumps(dict(sweeps=entries, **entries[-1])))


def test_runs_shared_by_two_figures_appear_in_both_sections(sweep, tmp_path):
  """s-all and s-mask_none belong to Fig. 4 and Fig. 2; Fig. 2 was launched last."""
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all', 's-mask_none'])
  for name in ('s-all', 's-mask_none'):
    write_sweep_record(runs / name, 'Fig. 4', 'Fig. 2')
  out = tmp_path / 'out'
  assert cli.main([f'--root={runs}', f'--out={out}']) == 0
  text = (out / 'report.md').read_text()
  fig2, fig4 = text.split('## Fig. 2', 1)[1].split('## Fig. 4', 1)
  for section in (fig2, fig4):
    assert '`s-all`' in section and '`s-mask_none`' in section
  assert (out / 'figures' / 'fig4_accuracy_tau_Fig._4.png').is_file()
  assert (out / 'figures' / 'fig4_accuracy_tau_Fig._2.png').is_file()
  # summary_run.csv keeps one row per run, naming both sweeps.
  rows = read_csv(out / 'summary_run.csv')
  assert sorted(r['run'] for r in rows) == ['s-all', 's-mask_none']
  assert {r['sweep'] for r in rows} == {'Fig. 4;Fig. 2'}


def test_figure_names_match_loosely_and_an_unknown_one_lists_the_names(sweep, tmp_path,
                                                                        capsys):
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all', 's-mask_none'])
  write_sweep_record(runs / 's-all', 'Fig. 4', 'Fig. 2')
  write_sweep_record(runs / 's-mask_none', 'Fig. 4')
  found = runs_lib.collect(str(runs), sweep='fig 4')
  assert [r.sweep for r in found.runs] == ['Fig. 4', 'Fig. 4']
  assert cli.main([f'--root={runs}', f'--out={tmp_path / "o"}', '--figure=Fig 9']) == 2
  err = capsys.readouterr().err
  assert err.strip() == (f"error: --figure='Fig 9' names no run under {runs}; sweeps there: "
                         "'Fig. 2', 'Fig. 4'")


def test_fig4_grid_has_a_column_per_subset_family_and_rows_per_size(sweep):
  """The paper's Fig. 4: single op / Zero+X / Pool+X columns; small and medium rows."""
  root, _, _ = sweep
  fig4 = plan.load_sweep(os.path.join(os.path.dirname(__file__), '..', 'configs', 'sweeps',
                                      'fig4.py'))
  families = {}
  for one in fig4.runs:
    families.setdefault(figures.family_title(figures.mask_family(
        one.overrides.get('space.masked_ops', ''))), set()).add(one.name)
  assert sorted(families) == ['Pool+X masked', 'Zero+X masked', 'single op masked (or none)']
  assert [len(v) for _, v in sorted(families.items())] == [6, 8, 12]
  base = runs_lib.load_run(str(root / 's-all'), 'running-groups')
  medium = runs_lib.load_run(str(root / 'm-mask_none'), 'running-groups')
  zero_skip = {**base.config, 'space.masked_ops': 'none,skip_connect'}
  runs = [base, dataclasses.replace(base, name='s-mask_none+skip_connect', config=zero_skip),
          dataclasses.replace(base, name='s-mask_skip_connect+avg_pool_3x3',
                              config={**base.config,
                                      'space.masked_ops': 'avg_pool_3x3,skip_connect'}),
          medium]
  figure = figures.subset_grid_figure(runs, 'Fig. 4')
  axes = np.asarray(figure.axes[:12]).reshape(4, 3)
  assert [ax.get_title() for ax in axes[0]] == [
      'single op masked (or none)', 'Zero+X masked', 'Pool+X masked']
  assert [ax.get_ylabel() for ax in axes[:, 0]] == [
      'small: A_N (%)', 'small: Kendall tau', 'medium: A_N (%)', 'medium: Kendall tau']
  assert [len(ax.get_lines()) > 0 for ax in axes[2]] == [True, False, False]  # medium
  assert all(len(ax.get_lines()) > 0 for ax in axes[0])


def test_scatter_leaves_out_groups_without_data(sweep):
  root, _, _ = sweep
  run = runs_lib.load_run(str(root / 's-all'), 'running-groups')
  groups = {k: v for k, v in run.metrics['groups'].items() if k not in ('random', 'top250')}
  partial = dataclasses.replace(run, metrics={**run.metrics, 'groups': groups})
  figure = figures.scatter_figure([partial], None, 'x')
  assert [ax.get_title().split('\n')[0] for ax in figure.axes] == ['s-all: top50 (n=50)']
  assert 'not evaluated' not in ' '.join(t.get_text() for ax in figure.axes for t in ax.texts)
  lacking = {k: v for k, v in run.metrics['groups'].items() if k not in figures.SCATTER_GROUPS}
  assert figures.scatter_figure(
      [dataclasses.replace(run, metrics={**run.metrics, 'groups': lacking})], None, 'x') is None


def test_one_seed_titles_say_so_and_ranks_are_integers(sweep):
  root, _, _ = sweep
  run = runs_lib.load_run(str(root / 's-all'), 'running-groups')
  one = dataclasses.replace(run, seeds=('1',))
  figure = figures.lines_figure([one], (('spearman', 'SCC'),), 'T', with_tau_a=False)
  assert figure.get_suptitle() == 'T: one seed (no std)'
  assert '±' not in figures.scatter_figure([one], None, 'T').get_suptitle()
  assert figures.lines_figure([run], (('spearman', 'SCC'),), 'T', False).get_suptitle() == (
      'T: mean ± std over 3 seeds')
  rank = run.metrics['top1']['per_seed']['1']['bench_rank']
  assert stats.run_row(one)['top1_bench_rank_mean'] == rank
  row = page.kt_table([one])[2].split(' | ')
  assert row[-2] == str(rank)
  assert stats.format_rank(86.0, None) == '86'
  assert stats.format_rank(86.4, 2.25) == '86.4 ± 2.2'


def test_single_run_folder_prints_its_summary(sweep, tmp_path, capsys):
  root, _, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all'])
  folder = runs / 's-all'
  for flag in (f'--run={folder}', f'--root={folder}'):
    assert cli.main([flag]) == 0
    printed = capsys.readouterr().out
    summary = load_metrics(runs, 's-all')
    assert printed.startswith(results.format_summary(
        summary, str(folder / 'results' / 'running-groups')))
    assert (folder / 'report' / 'report.md').is_file()
    shutil.rmtree(folder / 'report')


def test_best_prints_the_top_archs_by_mean_score(sweep, capsys):
  root, _, written = sweep
  assert cli.main([f'--run={root / "s-all"}', '--best=4']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0].startswith('s-all (running-groups): best 4 archs by super-net accuracy')
  data = written['s-all']
  mean = data['scores'].mean(0)
  order = np.lexsort((data['indices'], -mean))[:4]
  for line, position in zip(lines[2:], order):
    fields = line.split()
    assert int(fields[1]) == data['indices'][position]
    rank = 1 + np.count_nonzero(data['truth'] > data['truth'][position])
    assert fields[2] == (str(rank) if rank <= 500 else '>500')
    assert fields[3] == f"{data['truth'][position]:.2f}"
    assert fields[4] == f'{mean[position]:.2f}' and fields[5] == '+-'
    assert fields[-1].startswith('|') and fields[-1].count('~') == 6
  assert cli.main([f'--root={root}', '--best=4']) == 2
  assert '--best needs one run folder' in capsys.readouterr().err


def test_proxies_are_reported_beside_the_supernet_runs(sweep, tmp_path):
  """results/proxy-<name>/ of a run folder: own rows, own table, one figure with the runs."""
  root, table, written = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all', 's-mask_none'])
  config = run_config(32, 2, 'none', table)
  config.seeds = (0,)
  bench = bench_lib.restrict(bench_lib.load_bench(table), config_lib.allowed_ops(config))
  rows, groups, _ = run_lib.scored_rows(config, bench)
  truth = bench.metric('cifar10_test')[rows]
  scores = (1e-3 * truth + np.random.default_rng(5).normal(0, 1e-3, len(truth)))[None]
  results.write(str(runs / 's-mask_none' / 'results' / 'proxy-synflow'), config=config,
                bench=bench, seeds=(0,), indices=bench.indices[rows],
                arch_strings=bench.arch_strings[rows], scores=scores, truth=truth,
                groups=groups, evaluated_archs_per_second=1.0, score_column='proxy_score',
                score_name='synflow')
  found = runs_lib.collect(str(runs))
  assert [r.eval_name for r in found.runs] == ['running-groups', 'running-groups']
  (proxy,) = found.proxies
  assert proxy.is_proxy and proxy.seeds == ('0',) and proxy.label == 's-mask_none: proxy synflow'
  # Sorted by NB201 index, and read back exactly (proxy scores are written with repr).
  assert list(proxy.predictions.scores[0]) == list(scores[0][np.argsort(bench.indices[rows])])
  out = tmp_path / 'out'
  assert cli.main([f'--root={runs}', f'--out={out}']) == 0
  text = (out / 'report.md').read_text()
  section = text.split('## Zero-cost proxies and super-networks', 1)[1]
  assert '`s-mask_none: proxy synflow`' in section
  assert (out / 'figures' / 'proxies_kt_scc_masked_none.png').is_file()
  figure = figures.proxy_figure([found.runs[1]], [proxy], 'x')
  labels = [t.get_text() for t in figure.legends[0].get_texts()]
  assert labels[:2] == ['s-mask_none', 's-mask_none: proxy synflow']
  # A proxy's folder is known by metrics.json's score record, whatever its name.
  os.rename(runs / 's-mask_none' / 'results' / 'proxy-synflow',
            runs / 's-mask_none' / 'results' / 'synflow-all')
  assert [p.eval_name for p in runs_lib.collect(str(runs)).proxies] == ['synflow-all']
  rows_out = {(r['run'], r['score_kind']) for r in read_csv(out / 'summary_run.csv')}
  assert rows_out == {('s-all', 'supernet'), ('s-mask_none', 'supernet'),
                      ('s-mask_none', 'proxy')}


# ---------------------------------------------------------------------------
# The bench table the runs recorded


def test_without_bench_the_report_uses_the_table_the_runs_recorded(sweep, tmp_path):
  root, table, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all', 's-mask_none'])
  out = tmp_path / 'out'
  assert cli.main([f'--root={runs}', f'--out={out}']) == 0
  text = (out / 'report.md').read_text()
  assert f'`{table}` (the table the runs recorded)' in text
  assert (out / 'op_usage.csv').stat().st_size > 0
  assert (out / 'figures' / 'fig3_op_usage.png').is_file()
  assert 'random group could not be redrawn' not in text  # redrawn from the table too


def test_recorded_builtin_table_is_the_packaged_one(sweep):
  root, table, _ = sweep
  run = runs_lib.load_run(str(root / 's-all'), 'running-groups')
  builtin = dataclasses.replace(run, config={**run.config, 'bench.path': 'builtin'})
  paths = runs_lib.recorded_bench_paths([builtin])
  assert paths[0] == (str(bench_lib.BUILTIN_TABLE), run.metrics['bench']['sha256'])
  assert str(table) in [p for p, _ in paths]
  assert runs_lib.recorded_bench([run]).path == str(table)
  # A file that is no longer the recorded table (other sha256) is not used.
  other = dataclasses.replace(run, metrics={**run.metrics,
                                            'bench': {**run.metrics['bench'], 'sha256': 'f00'}})
  assert runs_lib.recorded_bench([other]) is None


def test_figures_are_saved_with_stable_bytes(tmp_path):
  def draw():
    figure = figures.new_figure(3, 2)
    figure.subplots().plot([0, 1], [1, 0])
    return figure
  first = figures.save(draw(), str(tmp_path / 'a'), 'f')
  second = figures.save(draw(), str(tmp_path / 'b'), 'f')
  assert [os.path.basename(p) for p in first] == ['f.png', 'f.pdf']
  for a, b in zip(first, second):
    assert open(a, 'rb').read() == open(b, 'rb').read()
  assert b'matplotlib' not in open(first[0], 'rb').read()


# ---------------------------------------------------------------------------
# The ranking during training (trajectory.csv)


TRAJECTORY_HEADER = ('epoch,step,seed,group,n,kendall_tau,spearman,tau_a,precision_at_10,'
                     'mean_supernet_acc')


def write_trajectory(folder, rows):
  """rows: (epoch, seed, group, kendall_tau, spearman, tau_a); None is an empty cell."""
  lines = [TRAJECTORY_HEADER]
  for epoch, seed, group, kt, scc, tau in rows:
    cells = [kt, scc, tau]
    kt, scc, tau = ('' if v is None else f'{v:.6f}' for v in cells)
    n = 50 if group != 'top10' else 10
    lines.append(f'{epoch:.4f},{epoch * 10},{seed},{group},{n},{kt},{scc},{tau},0.5,60.0')
  (folder / 'trajectory.csv').write_text('\n'.join(lines) + '\n')


TWO_SEEDS = [  # epoch, seed, group, Kendall tau, Spearman, tau_a
    (5, 0, 'top10', 0.9, 0.9, -0.2), (5, 0, 'all', 0.1, 0.2, -0.2),
    (5, 1, 'top10', 0.9, 0.9, 0.4), (5, 1, 'all', 0.3, 0.4, 0.4),
    (10, 0, 'top10', 0.9, 0.9, None), (10, 0, 'all', 0.5, None, None),
    (10, 1, 'top10', 0.9, 0.9, -1.0), (10, 1, 'all', 0.7, None, -1.0),
]


def test_trajectory_series_are_mean_min_max_over_seeds(tmp_path):
  write_trajectory(tmp_path, TWO_SEEDS)
  trajectory = runs_lib.read_trajectory(str(tmp_path))
  assert len(trajectory) == 8 and stats.trajectory_group(trajectory) == 'all'
  kt = stats.trajectory_series(trajectory, 'kendall_tau')
  assert kt.group == 'all'
  np.testing.assert_allclose(kt.epochs, [5, 10])
  np.testing.assert_allclose(kt.mean, [0.2, 0.6])
  np.testing.assert_allclose(kt.low, [0.1, 0.5])
  np.testing.assert_allclose(kt.high, [0.3, 0.7])
  spearman = stats.trajectory_series(trajectory, 'spearman')
  assert spearman.mean[0] == pytest.approx(0.3) and np.isnan(spearman.mean[1])
  tau = stats.trajectory_series(trajectory, 'tau_a')  # one value per epoch and seed
  np.testing.assert_allclose(tau.mean, [0.1, -1.0])  # an undefined seed is left out
  np.testing.assert_allclose(tau.low, [-0.2, -1.0])
  np.testing.assert_allclose(tau.high, [0.4, -1.0])


def test_trajectory_of_a_fixed_sample_stands_in_for_all(tmp_path):
  write_trajectory(tmp_path, [(2, 0, 'sample', 0.4, 0.5, 0.1), (4, 0, 'sample', 0.6, 0.7, 0.0)])
  trajectory = runs_lib.read_trajectory(str(tmp_path))
  series = stats.trajectory_series(trajectory, 'spearman')
  assert series.group == 'sample'
  np.testing.assert_allclose(series.mean, [0.5, 0.7])
  assert series.low.tolist() == series.high.tolist() == series.mean.tolist()  # one seed


def test_trajectory_reader_skips_absent_files_and_names_bad_lines(tmp_path):
  assert runs_lib.read_trajectory(str(tmp_path)) is None
  (tmp_path / 'trajectory.csv').write_text(TRAJECTORY_HEADER + '\n')
  assert runs_lib.read_trajectory(str(tmp_path)) is None  # no evaluation yet
  (tmp_path / 'trajectory.csv').write_text(TRAJECTORY_HEADER + '\n1,10,0,all,50,x,,,,\n')
  with pytest.raises(runs_lib.RunError, match=r'trajectory.csv, line 2: kendall_tau'):
    runs_lib.read_trajectory(str(tmp_path))
  (tmp_path / 'trajectory.csv').write_text('epoch,step\n1,10\n')
  with pytest.raises(runs_lib.RunError, match='no column seed'):
    runs_lib.read_trajectory(str(tmp_path))


def test_report_draws_the_trajectory_of_the_runs_that_have_one(sweep, tmp_path):
  root, table, _ = sweep
  runs = copy_runs(root, tmp_path / 'runs', ['s-all', 's-mask_none', 'm-mask_none'])
  write_trajectory(runs / 's-all', TWO_SEEDS)
  write_trajectory(runs / 's-mask_none', [(5, 0, 'sample', 0.2, 0.3, 0.0),
                                          (10, 0, 'sample', 0.4, 0.5, -0.5)])
  out = tmp_path / 'out'
  assert cli.main([f'--root={runs}', f'--out={out}', f'--bench={table}']) == 0
  text = (out / 'report.md').read_text()
  assert '](figures/trajectory_s.png)' in text and '(figures/trajectory_s.pdf)' in text
  assert 'Ranking during training' in text and 'Runs drawn: `s-all`, `s-mask_none`;' in text
  assert (out / 'figures' / 'trajectory_s.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  assert not (out / 'figures' / 'trajectory_m.png').exists()  # m-mask_none has none
  found = runs_lib.collect(str(runs))
  drawn = [(r, runs_lib.read_trajectory(r.folder)) for r in found.runs if r.size == 's']
  figure = figures.trajectory_figure(drawn, 'T')
  axes = figure.axes[:3]
  assert [ax.get_ylabel() for ax in axes] == ['Kendall tau', 'Spearman', 'τa (N against A_N)']
  assert all(len(ax.get_lines()) == 2 and len(ax.collections) == 2 for ax in axes)
  np.testing.assert_allclose(axes[0].get_lines()[0].get_ydata(), [0.2, 0.6])
  labels = [t.get_text() for t in figure.legends[0].get_texts()]
  assert labels == ['all', 'mask_none (sample)']
  # An unreadable trajectory is named, and its run is still reported.
  (runs / 's-mask_none' / 'trajectory.csv').write_text('epoch\n1\n')
  assert cli.main([f'--root={runs}', f'--out={out}', f'--bench={table}']) == 0
  text = (out / 'report.md').read_text()
  assert 'Runs drawn: `s-all`;' in text
  assert 'Trajectories that cannot be read' in text and 'no column step' in text


# ---------------------------------------------------------------------------
# Wall time from a run's log


def test_wall_time_sums_each_launch_and_skips_the_wait_between(tmp_path):
  log = '\n'.join([
      '=== 2026-12-31 23:50:00 launch.sweep (local): python -m spos_jax.main',
      'I1231 23:50:03.000001 1401 main.py:10] compiling',
      'I1231 23:59:30.000001 1401 train.py:99] epoch 1.00/4 step 35/140',
      'Traceback (most recent call last):',  # a preemption: no timestamp, not counted
      '=== 2027-01-01 02:00:00 launch.sweep (local): python -m spos_jax.main',
      'I0101 02:00:05.000001 1402 main.py:10] resuming at step 35',
      'W0101 02:20:00.500000 1402 run.py:139] scoring seed 0',
      '',
  ])
  assert runs_lib.log_wall_seconds(log) == 9 * 60 + 30 + 20 * 60  # across the new year
  assert runs_lib.log_wall_seconds('I1231 23:50:03.000001 1401 main.py:10] no header') is None
  (tmp_path / workdir.LOG_FILE).write_text(log)
  assert runs_lib.read_log_wall_seconds(str(tmp_path)) == 1770.0
  assert runs_lib.read_log_wall_seconds(str(tmp_path / 'absent')) is None
  assert plan.LOG_FILE == workdir.LOG_FILE
