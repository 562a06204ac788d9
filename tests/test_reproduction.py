"""Tests for spos_jax.reproduction: claim verdicts from made-up runs, and the page.

Runs are written by results.write from made-up scores on the archs of the shared
NB201 table, so that their files have the real format. Each run's scores are built
from a target A_N per top-N group: archs of the bench's top 10 get one level, ranks
11-25 another, and so on (the rest, e.g. the random group, a `rest` level), with
seed noise that is zero-mean within each band, so that A_N and hence tau_a are
exactly as designed; a `slope` adds a within-band term that follows the bench
accuracy, for a high Kendall tau inside the groups.
"""
import dataclasses
import difflib
import importlib.util
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

from spos_jax import bench as bench_lib
from spos_jax import config as config_lib
from spos_jax import metrics
from spos_jax import results
from spos_jax import run as run_lib
from spos_jax import trajectory
from spos_jax import workdir
from spos_jax.report import claims
from spos_jax.report import reproduction_page
from spos_jax.report import stats

from conftest import NB201_TABLE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TABLE = str(NB201_TABLE)
PAGE = os.path.join(REPO, 'REPRODUCTION.md')
SEEDS = (0, 1, 2)
TOP_NS = (10, 25, 50, 100)
EPOCHS = 7
MASKS = {  # masked ops of each queue run (launch/grid.py's names)
    's-all': '', 's-mask_none': 'none', 's-mask_avg_pool_3x3': 'avg_pool_3x3',
    's-mask_skip_connect': 'skip_connect', 's-mask_none+avg_pool_3x3': 'none,avg_pool_3x3',
    's-mask_nor_conv_3x3': 'nor_conv_3x3', 's-uniform-all': '', 's-uniform-mask_none': 'none',
    'm-all': '', 'm-mask_none': 'none'}


@dataclasses.dataclass(frozen=True)
class Design:
  a_n: tuple  # target A_N (%) for N in TOP_NS
  rest: float  # level of the archs outside the top-100 (the random group's bulk)
  slope: float = 0.0  # within-band weight of the bench accuracy (high Kendall tau)
  epochs: int = EPOCHS


FLAT = (60.0, 60.4, 59.8, 60.2)  # tau_a 0, A_10 - A_100 = -0.2
FALLING = (70.0, 69.0, 68.0, 67.0)  # tau_a -1
RISING = (50.0, 51.0, 52.0, 53.0)  # tau_a +1

# Every claim holds.
PAPER = {
    's-all': Design(FLAT, 60.0),
    's-mask_none': Design(FALLING, 60.0),
    's-mask_avg_pool_3x3': Design(tuple(a - 4 for a in FALLING), 58.0),
    's-mask_skip_connect': Design(RISING, 55.0),
    's-mask_none+avg_pool_3x3': Design(tuple(a + 2 for a in FALLING), 62.0, slope=0.4),
    's-mask_nor_conv_3x3': Design((55.0, 55.5, 56.0, 56.2), 55.0),
    's-uniform-all': Design((60.5, 60.1, 60.9, 60.3), 65.0),  # tau_a 0
    's-uniform-mask_none': Design((70.0, 70.5, 69.0, 69.5), 66.0),  # tau_a -1/3
    'm-all': Design((10.2, 10.1, 10.3, 10.0), 10.1),
    'm-mask_none': Design((30.0, 29.0, 28.0, 27.0), 25.0),
}
# Every claim fails.
NOT_PAPER = {
    's-all': Design((65.0, 63.0, 61.0, 59.0), 60.0),  # tau_a -1, A_10 - A_100 = 6
    's-mask_none': Design(FALLING, 60.0),
    's-mask_avg_pool_3x3': Design(RISING, 58.0),  # F2: Pool masked +1
    's-mask_skip_connect': Design(FALLING, 55.0),  # F3: -1
    's-mask_none+avg_pool_3x3': Design(RISING, 62.0),  # F5: +1
    's-mask_nor_conv_3x3': Design(FALLING, 55.0),  # F4: -1, not above s-all
    's-uniform-all': Design((60.5, 60.1, 60.9, 60.3), 55.0),  # F6: uniform less accurate
    's-uniform-mask_none': Design(FALLING, 50.0),
    'm-all': Design((40.0, 39.0, 38.0, 37.0), 35.0),  # F8: far above chance
    'm-mask_none': Design(FALLING, 45.0, slope=200.0),  # F7: high Kendall tau
}


@pytest.fixture(scope='module')
def bench(nb201_table):
  return bench_lib.load_bench(str(nb201_table))


def run_config(name, design, seeds=SEEDS, **fields):
  config = config_lib.base_config()
  config.seeds = seeds
  if name.startswith('m-'):
    config.model.channels, config.model.cells_per_stage = 64, 4
  if '-uniform-' in name:
    config.sampling.method = 'uniform'
  config.space.masked_ops = MASKS[name]
  config.train.epochs = design.epochs
  config.data.source = 'npz'
  config.data.path = '/tmp/cifar10_q75.npz'
  config.eval.top_ns = TOP_NS
  config.eval.random_size = 100
  config.bench.path = TABLE
  config.bench.metric = 'cifar10_test'
  for key, value in fields.items():
    config_lib.set_flat(config, key, value)
  return config


def band_scores(design, groups, truth, num_seeds, rng):
  """[S, m] scores whose top-N means are design.a_n (plus a per-seed offset)."""
  band = np.full(len(truth), len(TOP_NS))  # the rest
  for k in reversed(range(len(TOP_NS))):
    band[groups[f'top{TOP_NS[k]}']] = k
  sizes = np.asarray(TOP_NS, np.float64)
  totals = np.asarray(design.a_n) * sizes
  levels = np.diff(totals, prepend=0.0) / np.diff(sizes, prepend=0.0)
  levels = np.append(levels, design.rest)
  scores = np.empty((num_seeds, len(truth)))
  for s in range(num_seeds):
    extra = rng.normal(0, 3, len(truth)) + design.slope * truth
    for k in range(len(levels)):
      members = band == k
      extra[members] -= extra[members].mean()  # the band's mean stays its level
    scores[s] = levels[band] + extra + 0.1 * s
  return scores


def write_run(root, bench, name, design, *, eval_fields=None, seeds=SEEDS, info=None,
              noise_seed=0):
  """One run folder: config.json, run_info.json and one results folder."""
  config = run_config(name, design, seeds, **(eval_fields or {}))
  folder = os.path.join(root, name)
  os.makedirs(folder, exist_ok=True)
  train_config = run_config(name, design)
  workdir.write_json_atomic(os.path.join(folder, 'config.json'),
                            config_lib.flatten(train_config))
  workdir.write_json_atomic(os.path.join(folder, 'run_info.json'), info or {
      'device_kind': 'NVIDIA H200', 'git_commit': 'abc1234', 'packages': {'jax': '0.11.2'}})
  subset = bench_lib.ranked_subset(bench, config_lib.allowed_ops(config),
                                   unique=config.eval.scope == 'unique')
  rows, groups, _ = run_lib.scored_rows(config, subset)
  truth = subset.metric(config.bench.metric)[rows]
  rng = np.random.default_rng(sum(map(ord, name)) + noise_seed)
  scores = band_scores(design, groups, truth, len(seeds), rng)
  results.write(os.path.join(folder, 'results', results.results_name(config.eval)),
                config=config, bench=subset, seeds=seeds, indices=subset.indices[rows],
                arch_strings=subset.arch_strings[rows], scores=scores, truth=truth,
                groups=groups, evaluated_archs_per_second=1.0)
  return scores, truth


def write_runs(root, bench, designs):
  os.makedirs(root, exist_ok=True)
  for name, design in designs.items():
    write_run(root, bench, name, design)
  return root


def verdicts(root):
  return {f.claim.id: f for f in claims.findings(claims.gather(str(root)))}


@pytest.fixture(scope='module')
def paper_root(bench, tmp_path_factory):
  return write_runs(str(tmp_path_factory.mktemp('paper')), bench, PAPER)


# ---------------------------------------------------------------------------
# The queue


def sweep_runs(path):
  spec = importlib.util.spec_from_file_location('sweep_under_test', os.path.join(REPO, path))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return {r[0] for r in module.get_runs()}


def script_sweep_of(name):
  """The sweep file launch/reproduce_queue.sh launches a run from."""
  script = os.path.join(REPO, 'launch', 'reproduce_queue.sh')
  command = f'eval "$(sed -n "/^sweep_of()/,/^}}/p" {script})"; sweep_of {name}'
  return subprocess.run(['bash', '-c', command], capture_output=True, text=True,
                        check=True).stdout.strip()


def test_queue_runs_are_named_as_the_device_script_launches_them():
  assert len(claims.QUEUE) == 10
  assert set(claims.QUEUE) == set(MASKS)
  for name in claims.QUEUE:
    sweep = script_sweep_of(name)
    assert name in sweep_runs(sweep), (name, sweep)


# ---------------------------------------------------------------------------
# Verdicts


def test_every_claim_holds_on_runs_that_show_the_papers_findings(paper_root):
  found = verdicts(paper_root)
  assert {k: f.verdict for k, f in found.items()} == {f'F{i}': 'holds' for i in range(1, 9)}
  assert 'τa +0.00' in found['F1'].ours and 'A_10 60.1 ± 0.1 %' in found['F1'].ours


def test_every_claim_fails_on_runs_that_contradict_them(bench, tmp_path):
  found = verdicts(write_runs(str(tmp_path), bench, NOT_PAPER))
  assert {k: f.verdict for k, f in found.items()} == {
      f'F{i}': 'does not hold' for i in range(1, 9)}
  assert 'high in `m-mask_none`' in found['F7'].ours


def test_tau_a_is_the_designed_one(paper_root):
  evidence = claims.gather(paper_root)
  expected = {'s-all': 0.0, 's-mask_none': -1.0, 's-mask_skip_connect': 1.0,
              's-uniform-mask_none': -1 / 3}
  for name, value in expected.items():
    assert stats.tau_a(evidence.runs[name]) == pytest.approx(value)


def test_claims_wait_for_missing_runs(bench, paper_root, tmp_path):
  root = str(tmp_path)
  for name in ('s-all', 's-mask_none'):
    shutil.copytree(os.path.join(paper_root, name), os.path.join(root, name))
  found = verdicts(root)
  assert found['F1'].verdict == 'holds'
  assert found['F2'].verdict == 'not yet run'
  assert found['F2'].note == 'needs `s-mask_avg_pool_3x3`'
  assert found['F7'].verdict == 'not yet run'  # none high so far, 8 runs missing
  assert '(2 of 10 runs)' in found['F7'].ours
  write_run(root, bench, 'm-mask_none', NOT_PAPER['m-mask_none'])
  assert verdicts(root)['F7'].verdict == 'does not hold'  # one run refutes it


def test_runs_trained_for_other_epochs_are_not_compared(bench, paper_root, tmp_path):
  root = str(tmp_path)
  for name in ('s-all', 's-mask_none', 's-uniform-mask_none'):
    shutil.copytree(os.path.join(paper_root, name), os.path.join(root, name))
  write_run(root, bench, 's-uniform-all', dataclasses.replace(PAPER['s-uniform-all'], epochs=9))
  found = verdicts(root)
  assert found['F6'].verdict == 'not yet run'
  assert 'differ in epochs' in found['F6'].note and '`s-uniform-all` 9' in found['F6'].note


def test_refused_and_failed_runs_are_named(bench, paper_root, tmp_path):
  root = str(tmp_path)
  shutil.copytree(os.path.join(paper_root, 's-all'), os.path.join(root, 's-all'))
  predictions = os.path.join(root, 's-all', 'results', 'running-groups', 'predictions.csv')
  with open(predictions) as f:
    lines = f.readlines()
  with open(predictions, 'w') as f:
    f.writelines(lines[:-1])  # one seed x arch short
  shutil.copytree(os.path.join(paper_root, 'm-mask_none'), os.path.join(root, 'm-mask_none'))
  with open(os.path.join(root, 'm-mask_none', 'results', 'running-groups', 'metrics.json'),
            'w') as f:
    f.write('{"groups": ')  # cut short
  os.makedirs(os.path.join(root, 'm-all'))
  with open(os.path.join(root, 'm-all', 'FAILED'), 'w') as f:
    f.write('NaN loss at step 12, seed 3\n')
  evidence = claims.gather(root)
  assert not evidence.runs
  assert evidence.absent['s-all'].startswith('refused: ')
  assert 'predictions.csv' in evidence.absent['s-all']
  assert evidence.absent['m-all'] == 'FAILED: NaN loss at step 12, seed 3'
  assert evidence.absent['m-mask_none'].startswith('refused: ')
  assert 'metrics.json' in evidence.absent['m-mask_none']
  assert verdicts(root)['F1'].verdict == 'not yet run'


# ---------------------------------------------------------------------------
# The whole-space numbers


def test_one_seed_whole_space_evaluation_is_read_from_its_own_seeds(bench, tmp_path):
  root = str(tmp_path)
  name = 's-mask_none+avg_pool_3x3'
  write_run(root, bench, name, PAPER[name])
  scores, truth = write_run(root, bench, name, PAPER[name], seeds=(0,), eval_fields={
      'eval.scope': 'all', 'eval.name': 'running-all-seed0'})
  evidence = claims.gather(root)
  assert name in evidence.runs  # the 3-seed groups evaluation, not refused
  full = evidence.full_space[name]
  assert (full.eval_name, full.seeds, full.archs) == ('running-all-seed0', ('0',), 729)
  assert full.kendall_tau == (pytest.approx(metrics.kendall_tau(scores[0], truth)), None)
  assert full.spearman[0] == pytest.approx(metrics.spearman(scores[0], truth))


def test_a_groups_evaluation_is_not_whole_space(paper_root):
  assert claims.gather(paper_root).full_space == {}  # nor is its random group a sample


def test_a_random_sample_beside_the_groups_stands_for_the_whole_space(bench, tmp_path):
  root = str(tmp_path)
  write_run(root, bench, 's-all', PAPER['s-all'])
  fields = {'eval.name': 'running-random300', 'eval.random_size': 300}
  scores, truth = write_run(root, bench, 's-all', PAPER['s-all'], eval_fields=fields)
  _, groups, _ = run_lib.scored_rows(run_config('s-all', PAPER['s-all'], **fields), bench)
  sample = groups['random']
  full = claims.gather(root).full_space['s-all']
  assert (full.eval_name, full.archs, full.subset_archs, full.sampled) == (
      'running-random300', 300, 15625, True)
  assert full.archs_text == '300 (random sample of 15625)'
  taus = [metrics.kendall_tau(scores[s][sample], truth[sample]) for s in range(len(SEEDS))]
  assert full.kendall_tau[0] == pytest.approx(np.mean(taus))
  # A whole-subset evaluation, when there is one, is the row.
  write_run(root, bench, 's-all', PAPER['s-all'], seeds=(0,),
            eval_fields={'eval.scope': 'all', 'eval.name': 'running-all-seed0'})
  full = claims.gather(root).full_space['s-all']
  assert (full.eval_name, full.archs, full.sampled) == ('running-all-seed0', 15625, False)


def test_a_rescoring_in_another_bn_mode_is_not_a_sample_of_the_space(bench, tmp_path):
  root = str(tmp_path)
  write_run(root, bench, 's-all', PAPER['s-all'])
  write_run(root, bench, 's-all', PAPER['s-all'], eval_fields={
      'eval.name': 'batch-groups', 'eval.bn_mode': 'batch'})
  write_run(root, bench, 's-all', PAPER['s-all'], seeds=(0,), eval_fields={
      'eval.name': 'batch-all', 'eval.bn_mode': 'batch', 'eval.scope': 'all'})
  assert claims.gather(root).full_space == {}
  write_run(root, bench, 's-all', PAPER['s-all'], eval_fields={
      'eval.name': 'running-random300', 'eval.random_size': 300})
  assert claims.gather(root).full_space['s-all'].eval_name == 'running-random300'


def test_a_unique_ranking_is_tabulated_beside_the_other_protocols(bench, tmp_path):
  """eval.scope=unique: one row per isomorphism class (6466 of 15625), its numbers from
  its own seeds; its random group (classes, not archs) is no sample of the space."""
  root = str(tmp_path)
  write_run(root, bench, 's-all', PAPER['s-all'])
  scores, truth = write_run(root, bench, 's-all', PAPER['s-all'],
                            eval_fields={'eval.scope': 'unique'})
  evidence = claims.gather(root)
  assert evidence.full_space == {}
  unique = evidence.unique['s-all']
  assert (unique.eval_name, unique.archs, unique.subset_archs, unique.sampled) == (
      'running-unique', 6466, 15625, False)
  assert unique.archs_text == '6466 (unique archs of 15625)'
  taus = [metrics.kendall_tau(scores[s], truth) for s in range(len(SEEDS))]
  assert unique.kendall_tau == pytest.approx((np.mean(taus), np.std(taus, ddof=1)))
  write_run(root, bench, 's-all', PAPER['s-all'], eval_fields={
      'eval.name': 'running-random300', 'eval.random_size': 300})
  evidence = claims.gather(root)
  [header, _, row] = reproduction_page.unique_section({'results/cpu': evidence})
  assert header.startswith('| run | folder | evaluation |')
  groups = stats.group_stat(evidence.runs['s-all'], 'all', 'kendall_tau')
  sample = evidence.full_space['s-all'].kendall_tau
  assert row == ('| `s-all` | `results/cpu` | `running-unique` | 3 (0, 1, 2) | 6466 (unique '
                 f'archs of 15625) | {claims.fmt(*unique.kendall_tau, digits=3)} | '
                 f'{claims.fmt(*unique.spearman, digits=3)} | '
                 f'{claims.fmt(*groups, digits=3)} over '
                 f'{int(evidence.runs["s-all"].metrics["groups"]["all"]["n"]["mean"])} | '
                 f'{claims.fmt(*sample, digits=3)} over 300 (random sample of 15625) |')


def test_a_run_trained_again_is_compared_seed_by_seed(bench, tmp_path):
  first, again = str(tmp_path / 'first'), str(tmp_path / 'again')
  info = {'git_commit': 'abc1234', 'packages': {'jax': '0.11.2'}, 'data_sha256': 'd1'}
  first_scores, truth = write_run(first, bench, 's-all', PAPER['s-all'], info=info)
  again_scores, _ = write_run(again, bench, 's-all', PAPER['s-all'], noise_seed=1,
                              info=dict(info, host_cpu='AMD EPYC (family 26, model 2)',
                                        platform='cpu', device_kind='cpu'))
  # A CPU run's device is its host CPU: XLA:CPU compiles for its instruction set.
  assert any('| cpu: AMD EPYC (family 26, model 2), jax 0.11.2 |' in line
             for line in reproduction_page.runs_section(claims.gather(again)))
  lines = reproduction_page.rerun_section(claims.gather(first), claims.gather(again))
  config = run_config('s-all', PAPER['s-all'])
  _, groups, _ = run_lib.scored_rows(config, bench_lib.restrict(bench,
                                                                config_lib.allowed_ops(config)))
  random = groups['random']
  for seed in SEEDS:
    row = next(line for line in lines if line.startswith(f'| `s-all` | {seed} |'))
    taus = [metrics.kendall_tau(s[seed], truth) for s in (first_scores, again_scores)]
    sample = [metrics.kendall_tau(s[seed][random], truth[random])
              for s in (first_scores, again_scores)]
    assert f'{taus[0]:+.3f} → {taus[1]:+.3f} | {sample[0]:+.3f} → {sample[1]:+.3f}' in row
  note = lines[-3]
  assert 'the same: package versions, data contents (sha256), commit;' in note
  assert 'host CPU: not recorded → AMD EPYC (family 26, model 2)' in note
  # A_N as designed, whatever the noise: no verdict moves. A rerun that ranks
  # otherwise moves F1, and the page says so.
  assert lines[-1] == ('With the runs trained again (`s-all`) in place of the first ones, '
                       'every verdict stays.')
  other = str(tmp_path / 'other')
  write_run(other, bench, 's-all', NOT_PAPER['s-all'])
  line = reproduction_page.rerun_section(claims.gather(first), claims.gather(other))[-1]
  assert line.startswith('With the runs trained again (`s-all`) in place of the first ones: '
                         'F1 does not hold (τa '), line
  assert line.endswith('; with the first runs holds). The other verdicts stay.'), line
  assert reproduction_page.rerun_section(claims.gather(first), claims.gather(str(tmp_path))) \
      == ['No run of the queue has been trained again.']
  # Package versions are named where they differ, not listed.
  assert reproduction_page._provenance_text(  # pylint: disable=protected-access
      {'packages': {'jax': '0.1'}, 'git_commit': 'abc'},
      {'packages': {'jax': '0.2'}, 'git_commit': 'abc'}) == (
          'the same: commit; different: package versions.')


def test_a_proxy_ranking_of_the_whole_space_is_not_the_super_networks(bench, tmp_path):
  name = 's-mask_none+avg_pool_3x3'
  write_run(str(tmp_path), bench, name, PAPER[name])
  config = run_config(name, PAPER[name], seeds=(0,), **{'eval.scope': 'all',
                                                        'eval.name': 'synflow-all'})
  subset = bench_lib.restrict(bench, config_lib.allowed_ops(config))
  rows, groups, _ = run_lib.scored_rows(config, subset)
  truth = subset.metric('cifar10_test')[rows]
  results.write(str(tmp_path / name / 'results' / 'synflow-all'), config=config, bench=subset,
                seeds=(0,), indices=subset.indices[rows], arch_strings=subset.arch_strings[rows],
                scores=truth[None] + 1.0, truth=truth, groups=groups,
                evaluated_archs_per_second=1.0, score_column=results.PROXY_COLUMN,
                score_name='synflow')
  assert claims.gather(str(tmp_path)).full_space == {}


# ---------------------------------------------------------------------------
# The page


def outside_markers(text):
  return re.sub(r'(<!-- generated:(\w+) -->\n).*?(<!-- end generated:\2 -->)', r'\1\3', text,
                flags=re.DOTALL)


def test_page_is_regenerated_in_place(bench, paper_root, tmp_path):
  root = str(tmp_path / 'runs')
  shutil.copytree(paper_root, root)
  name = 's-mask_none+avg_pool_3x3'
  write_run(root, bench, name, PAPER[name], seeds=(0,),
            eval_fields={'eval.scope': 'all', 'eval.name': 'running-all-seed0'})
  page = tmp_path / 'REPRODUCTION.md'
  shutil.copy(PAGE, page)
  figures = tmp_path / 'figures'
  found = reproduction_page.write_page(root, str(page), str(figures))
  text = page.read_text()
  assert [f.verdict for f in found] == ['holds'] * 8
  assert outside_markers(text) == outside_markers(open(PAGE).read())  # hand-written parts
  assert '8 holds, 0 does not hold, 0 not yet run.' in text
  assert '10 of 10 runs of the queue have results.' in text
  # Settings come from the runs' files.
  assert '- epochs (`train.epochs`): 7' in text
  assert '- seeds: 3 (0, 1, 2)' in text
  assert '`cifar10_q75.npz` (real CIFAR-10, JPEG q75 copy)' in text
  assert '`cifar10_test`' in text and 'NVIDIA H200, jax 0.11.2' in text and '`abc1234`' in text
  assert f'| `{name}` | `running-all-seed0` | 1 (0) | 729 |' in text
  for stem in ('fig4_accuracy_tau', 'full_space_anchors'):
    assert '![' in text and f'(figures/{stem}.png)' in text
    assert (figures / f'{stem}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  reproduction_page.write_page(root, str(page), str(figures))
  assert page.read_text() == text  # regenerating changes nothing


def test_the_cpu_scale_is_judged_apart_with_its_trajectory(paper_root, tmp_path):
  """CPU-scale runs fill the cpu_ sections and their column of the verdicts; the paper
  scale, without runs, stays 'not yet run': no claim mixes the two."""
  empty = tmp_path / 'paper'
  empty.mkdir()
  cpu_root = str(tmp_path / 'cpu')
  shutil.copytree(paper_root, cpu_root)
  with open(os.path.join(cpu_root, 's-all', 'trajectory.csv'), 'w') as f:
    f.write(','.join(trajectory.COLUMNS) + '\n')
    for epoch, tau in ((1, 0.1), (2, 0.3), (3, 0.35)):
      for seed in SEEDS:
        f.write(f'{epoch}.0000,{epoch * 10},{seed},sample,40,{tau + 0.01 * seed:.6f},'
                f'0.5,,,20.0\n')
  page = tmp_path / 'REPRODUCTION.md'
  shutil.copy(PAGE, page)
  cpu = reproduction_page.cpu_scale(cpu_root, str(tmp_path / 'cpu_figures'))
  found = reproduction_page.write_page(str(empty), str(page), str(tmp_path / 'figures'), cpu)
  text = page.read_text()
  assert [f.verdict for f in found] == ['not yet run'] * 8
  assert '| F2 | Zero masked: τa = -1; Pool masked: τa = -1. | **not yet run** | **holds** |' in text
  assert outside_markers(text) == outside_markers(open(PAGE).read())
  assert ('| `s-all` | sample (40 archs) | 1: +0.110, 2: +0.310, 3: +0.360 | +0.050 | – |'
          in text)
  assert (tmp_path / 'cpu_figures' / 'trajectory.png').is_file()
  assert (tmp_path / 'cpu_figures' / 'fig4_accuracy_tau.png').is_file()


def test_page_without_its_markers_is_refused(tmp_path):
  page = tmp_path / 'page.md'
  page.write_text('# a page\n<!-- generated:runs -->\n<!-- end generated:runs -->\n')
  root = tmp_path / 'runs'
  root.mkdir()
  with pytest.raises(claims.ReproductionError, match='generated:claims'):
    reproduction_page.write_page(str(root), str(page), str(tmp_path / 'figures'))
  assert page.read_text().startswith('# a page')


def test_cli_names_a_missing_root(tmp_path, capsys):
  status = reproduction_page.main([f'--root={tmp_path / "nowhere"}', f'--page={PAGE}'])
  assert status == 2
  assert capsys.readouterr().err.strip().endswith('nowhere: not a directory')


def test_committed_page_matches_the_committed_results(tmp_path):
  """The page can never drift from the data: regenerating it changes no byte."""
  page = tmp_path / 'REPRODUCTION.md'
  shutil.copy(PAGE, page)
  figures = tmp_path / 'results' / 'paper' / 'figures'  # same relative links as the repo's
  cpu = reproduction_page.cpu_scale(os.path.join(REPO, 'results', 'cpu'),
                                    str(tmp_path / 'results' / 'cpu' / 'figures'),
                                    os.path.join(REPO, 'results', 'cpu_rerun'))
  reproduction_page.write_page(os.path.join(REPO, 'results', 'paper'), str(page), str(figures),
                               cpu)
  regenerated, committed = page.read_text(), open(PAGE).read()
  diff = ''.join(difflib.unified_diff(committed.splitlines(True), regenerated.splitlines(True),
                                      'REPRODUCTION.md', 'regenerated', n=1))
  assert page.read_bytes() == open(PAGE, 'rb').read(), (
      'REPRODUCTION.md differs from what results/paper, results/cpu and results/cpu_rerun '
      f'give; run `python -m spos_jax.reproduction --root=results/paper --cpu_root=results/cpu '
      f'--cpu_rerun_root=results/cpu_rerun --page=REPRODUCTION.md`:\n{diff}')


# ---------------------------------------------------------------------------
# The device script's refusals (before anything is decoded or trained)


def run_script(tmp_path, *args, **env):
  data = tmp_path / 'data'
  data.mkdir(exist_ok=True)
  for name in ('cifar10_q75_scans.npz', 'cifar10_q75.py', 'nb201_table.csv'):
    (data / name).touch()
  environment = dict(os.environ, WORK=str(tmp_path / 'work'), WHEELS=str(tmp_path / 'none'),
                     **env)
  return subprocess.run(['bash', os.path.join(REPO, 'launch', 'reproduce_queue.sh'),
                         str(tmp_path / 'out'), '450', str(data), *args],
                        capture_output=True, text=True, env=environment, timeout=120)


def test_device_script_refuses_an_epoch_count_other_than_the_committed_runs(
    bench, paper_root, tmp_path):
  done = run_script(tmp_path, '10', 's-mask_none,s-mask_skip_connect',
                    COMMITTED=str(paper_root))
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      f'error: EPOCHS=10, but the committed run {paper_root}/s-all trained {EPOCHS} epochs; '
      f'the claims compare runs at one count: pass {EPOCHS}')
  assert not (tmp_path / 'work' / 's-mask_none').exists()


def test_device_script_refuses_a_bad_epoch_count(tmp_path):
  done = run_script(tmp_path, 'ten')
  assert done.returncode == 2
  assert done.stderr.strip() == 'error: EPOCHS=ten is not a positive integer'


def test_device_script_refuses_a_run_outside_the_queue(tmp_path):
  done = run_script(tmp_path, '10', 's-all,s-mask_zero')
  assert done.returncode == 2
  assert done.stderr.strip().splitlines()[-1] == (
      'error: RUNS names s-mask_zero, not in the queue: ' + ', '.join(claims.QUEUE))
