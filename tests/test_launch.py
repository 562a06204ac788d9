"""launch.sweep: local runs end to end, the Slurm array script, a real Slurm submission.

End-to-end runs are tiny main jobs on the CPU (configs/tiny.py shrunk further). Every
sweep root's compilation cache is one folder (runs_root), so only the first job pays
the compile (about a minute on 2 cores); the others take 10-25 s each. The progress
and run-folder tests run fake jobs (a few lines of Python) through the local launcher
instead.
"""
import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from launch import grid
from launch import local
from launch import plan
from spos_jax import config as config_lib
from spos_jax import results
from spos_jax import run as run_lib

# ml_collections.config_flags loads config files through the deprecated load_module().
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / 'configs/tiny.py'

# C=2, 192 synthetic training images in batches of 16: 12 micro-batches an epoch, so 6
# epochs are 14 fair-group steps, each followed by a checkpoint.
TINY_FLAGS = [
    '--config.data.source=synthetic', '--config.data.synthetic_size=256',
    '--config.data.val_size=64', '--config.data.train_subset=0', '--config.model.channels=2',
    '--config.train.batch_size=16', '--config.train.epochs=6',
    '--config.train.checkpoint_every_steps=1', '--config.eval.batch_size=64',
]
# As run overrides: the sweep's runs may differ in them (the command line's win).
BENCH_OVERRIDES = {'bench.path': 'builtin', 'eval.top_ns': (10, 25), 'eval.random_size': 20}
NO_BENCH = {'bench.path': 'none'}


@pytest.fixture(scope='module')
def env(tmp_path_factory):
  """CPU only, the repo importable, and one compilation cache for every main job."""
  cache = tmp_path_factory.mktemp('xla-cache')
  return {
      **os.environ,
      'PYTHONPATH': os.pathsep.join(filter(None, (str(REPO), os.environ.get('PYTHONPATH')))),
      'JAX_PLATFORMS': 'cpu', 'CUDA_VISIBLE_DEVICES': '',
      'JAX_COMPILATION_CACHE_DIR': str(cache),
      'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
      'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0',
  }


def runs_root(folder: Path, env) -> Path:
  """folder/runs, its compilation cache (ROOT/.jax_cache, launch/plan.py) a link to the
  module's: the end-to-end tests train the same tiny program, and only the first
  compiles it."""
  root = folder / 'runs'
  root.mkdir()
  (root / plan.COMPILATION_CACHE).symlink_to(env['JAX_COMPILATION_CACHE_DIR'],
                                             target_is_directory=True)
  return root


def write_sweep(folder: Path, runs) -> Path:
  """A sweep file of (name, overrides) runs on configs/tiny.py (size 't')."""
  path = folder / 'tiny_sweep.py'
  path.write_text(textwrap.dedent(f'''\
      import ml_collections
      from launch import grid

      def get_config():
        config = ml_collections.ConfigDict()
        config.figure = 'test'
        config.sizes = {{'t': {str(TINY_CONFIG)!r}}}
        return config

      def get_runs():
        return [grid.Run(name, 't', overrides) for name, overrides in {list(runs)!r}]
      '''))
  return path


def launch_command(*args) -> list[str]:
  return [sys.executable, '-m', 'launch.sweep', *map(str, args)]


def launch(*args, env, timeout=300) -> subprocess.CompletedProcess:
  return subprocess.run(launch_command(*args), cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout, check=False)


def finished_checkpoint(workdir: Path) -> bool:
  return any(p.name.isdigit() for p in (workdir / 'checkpoints').glob('*'))


def wait_until(condition, process, limit_s):
  deadline = time.time() + limit_s
  while not condition():
    assert process.poll() is None, f'launcher ended early:\n{process.communicate()[0]}'
    assert time.time() < deadline, 'timed out'
    time.sleep(0.2)


def test_local_interrupted_run_resumes_then_finished_runs_skip(tmp_path, env):
  """'ranked' ranks the bench (done = results), 'trained' only trains (done = TRAINED)."""
  root = runs_root(tmp_path, env)
  args = ['--sweep', write_sweep(tmp_path, [('ranked', BENCH_OVERRIDES), ('trained', NO_BENCH)]),
          '--root', root, *TINY_FLAGS]
  first = subprocess.Popen(launch_command(*args), cwd=REPO, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  wait_until(lambda: finished_checkpoint(root / 'ranked'), first, limit_s=240)
  first.send_signal(signal.SIGTERM)  # forwarded to the running main job
  out = first.communicate(timeout=120)[0]
  assert first.returncode == 1, out
  # main checkpoints on SIGTERM and exits with status 3 (spos_jax/preemption.py).
  assert re.search(r'interrupted +ranked .*\n +exit status 3; rerun to resume', out), out
  assert re.search(r'not started +trained', out), out
  assert not (root / 'ranked' / 'TRAINED').exists()

  second = launch(*args, env=env)
  assert second.returncode == 0, second.stdout + second.stderr
  assert 'summary: 2 done' in second.stdout
  assert 'resumed from step' in (root / 'ranked' / 'log.txt').read_text()
  assert (root / 'ranked' / 'results' / 'running-groups' / 'metrics.json').exists()
  assert (root / 'trained' / 'TRAINED').exists()
  assert list((root / '.jax_cache').iterdir()), 'the runs left no compiled executables'
  record = json.loads((root / 'ranked' / 'sweep.json').read_text())
  assert (record['run'], record['sweep'], record['figure']) == ('ranked', 'tiny_sweep', 'test')
  assert record['overrides']['eval.top_ns'] == [10, 25]

  third = launch(*args, env=env, timeout=60)
  assert third.returncode == 0, third.stdout + third.stderr
  assert 'summary: 2 skipped' in third.stdout
  assert 'start ' not in third.stdout


def break_run_folders(root: Path) -> dict[str, str]:
  """Run folders that cannot hold their run, each made so in another way: {name: why}."""
  # A folder that holds a checkpoint of another config (the small one): main refuses it.
  (root / 'other_config' / 'checkpoints' / '100').mkdir(parents=True)
  foreign = config_lib.flatten(config_lib.base_config())
  (root / 'other_config' / 'config.json').write_text(json.dumps(foreign))
  (root / 'a_file').write_text('not a folder')
  (root / 'bad_json' / 'config.json').parent.mkdir()
  (root / 'bad_json' / 'config.json').write_text('{"train.lr": 0.1')
  (root / 'list_json' / 'config.json').parent.mkdir()
  (root / 'list_json' / 'config.json').write_text('[1, 2]')
  (root / 'record_dir' / 'sweep.json').mkdir(parents=True)  # sweep.json cannot be written
  return {'other_config': 'holds a run of a different config',
          'a_file': 'is a file, not a folder',
          'bad_json': 'config.json is unreadable',
          'list_json': 'config.json holds a JSON list, not a config',
          'record_dir': 'cannot write'}


def test_local_failed_runs_are_reported_and_the_others_run(tmp_path, env):
  """Every run whose folder cannot hold it fails with the reason; the good one trains."""
  root = runs_root(tmp_path, env)
  broken = break_run_folders(root)
  sweep = write_sweep(tmp_path, [(name, NO_BENCH) for name in [*broken, 'good']])
  result = launch('--sweep', sweep, '--root', root, *TINY_FLAGS, env=env)
  assert result.returncode == 1, result.stdout + result.stderr
  assert 'Traceback' not in result.stdout + result.stderr
  assert f'summary: 1 done, {len(broken)} failed' in result.stdout, result.stdout
  for name, why in broken.items():
    assert re.search(rf'failed +{name} .*\n +.*{why}', result.stdout), (name, result.stdout)
  assert re.search(r'done +good', result.stdout), result.stdout
  assert (root / 'good' / 'TRAINED').exists()
  assert (root / 'a_file').read_text() == 'not a folder'
  # The progress lines read main's real training lines (absl's prefix, train's format).
  log = (root / 'good' / 'log.txt').read_text()
  epoch_lines = [line for line in log.splitlines() if re.search(r'\] epoch .* ETA ', line)]
  assert epoch_lines, log
  phase = local.phase(local.last_log_line(epoch_lines[-1]))
  assert re.fullmatch(r'epoch [\d.]+/6, ETA \d+m\d\ds', phase), phase


def test_slurm_dry_run_leaves_out_runs_whose_folders_cannot_hold_them(tmp_path, env):
  root = tmp_path / 'runs'
  root.mkdir()
  (root / 's-all').write_text('not a folder')
  result = launch('--sweep=configs/sweeps/fig2.py', f'--root={root}', '--backend=slurm',
                  '--dry_run', env=env, timeout=60)
  assert result.returncode == 1, result.stdout + result.stderr
  assert 'Traceback' not in result.stderr
  assert re.search(r'failed +s-all .*\n +run folder .*s-all is a file', result.stdout)
  lines = run_list_of((root / 'fig2.sbatch').read_text()).read_text().splitlines()
  assert [line.split('\t')[0] for line in lines] == ['s-mask_none']
  # The script's own folder blocked: one line, status 2.
  (root / 'fig2.sbatch').unlink()
  shutil.rmtree(root / 'slurm')
  (root / 'slurm').write_text('not a folder')
  result = launch('--sweep=configs/sweeps/fig2.py', f'--root={root}', '--backend=slurm',
                  '--dry_run', '--only=mask_none', env=env, timeout=60)
  assert result.returncode == 2, result.stdout + result.stderr
  assert 'cannot write the Slurm script' in result.stderr and 'Traceback' not in result.stderr


@dataclasses.dataclass(frozen=True)
class FakeJob(plan.Job):
  """A job that runs a few lines of Python instead of spos_jax.main."""
  script: str = ''

  def command(self, python: str = sys.executable) -> list[str]:
    return [python, '-c', self.script]


def fake_job(root: Path, name: str, script: str) -> FakeJob:
  """A training-only job whose folder records its config: TRAINED makes it done."""
  config = config_lib.base_config()
  config.bench.path = 'none'
  workdir = root / name
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps(config_lib.flatten(config)))
  return FakeJob(name, grid.Run(name, 's', {}), {}, str(TINY_CONFIG), {}, config, str(workdir),
                 script=script)


# A fake run: it logs `log_line` as absl would, then waits until the launcher's output
# (the file `out`) shows `expected` (a regular expression), then marks itself trained.
# So the test waits for the launcher's progress lines, not for a number of seconds.
FAKE_RUN = textwrap.dedent('''\
    import os, re, sys, time
    print('I0101 00:00:00.000000 1 {module}] {log_line}', flush=True)
    deadline = time.time() + 120
    while not re.search({expected!r}, open({out!r}).read()):
      if time.time() > deadline:
        sys.exit('the launcher never printed ' + {expected!r})
      time.sleep(0.05)
    open(os.path.join({workdir!r}, 'TRAINED'), 'w').write('1')
    ''')


def test_local_progress_shows_each_runs_phase_and_the_sweeps_eta(tmp_path, monkeypatch):
  root, out = tmp_path / 'runs', tmp_path / 'launcher.out'
  out.write_text('')
  epoch = 'epoch 0.50/2 step 1/4 loss 2.3026 acc 10.0% lr 0.02500 120 img/s ETA 0m07s'
  runs = {
      # Before any run is done: no ETA yet, the run's epoch and ETA from its log.
      'first': ('train.py:348', epoch,
                r'progress: 0 done, 0 failed, 2 left; ETA after the first run is done '
                r'\| first \d+m\d\ds: epoch 0\.50/2, ETA 0m07s'),
      # After one: an ETA from its duration, and another phase shown by its log line.
      'second': ('run.py:99', 'scoring 200 archs of 2 groups',
                 r'progress: 1 done, 0 failed, 1 left; ETA \d+m\d\ds \(mean run \d+m\d\ds\) '
                 r'\| second \d+m\d\ds: scoring 200 archs of 2 groups'),
  }
  jobs = [fake_job(root, name, FAKE_RUN.format(module=module, log_line=line, expected=expected,
                                                out=str(out), workdir=str(root / name)))
          for name, (module, line, expected) in runs.items()]
  monkeypatch.setattr(local, '_POLL_S', 0.05)
  with open(out, 'a', buffering=1) as f, contextlib.redirect_stdout(f):
    outcomes = local.run_jobs(jobs, [None], str(REPO), progress_s=0.05)
  printed = out.read_text()
  assert [(o.job.name, o.status) for o in outcomes] == [('first', 'done'), ('second', 'done')], \
      printed + (root / 'first' / 'log.txt').read_text() + (root / 'second' / 'log.txt').read_text()
  assert all(len(line) < 300 for line in printed.splitlines())  # plain lines, no redraws


def test_sweep_eta_counts_running_and_waiting_runs_over_the_slots():
  assert local.sweep_eta([], [30.0], waiting=2, slots=1) is None
  # Mean 150 s: the running run has 120 s left, two waiting runs 150 s each, on 2 slots.
  assert local.sweep_eta([100.0, 200.0], [30.0], waiting=2, slots=2) == (120 + 300) / 2
  assert local.sweep_eta([100.0], [400.0], waiting=0, slots=1) == 0  # past the mean


def test_last_log_line_is_the_current_attempts_last_absl_line():
  log = textwrap.dedent('''\
      === 2024-01-01 00:00:00 launch.sweep (local): python -m spos_jax.main
      I0101 00:00:01.000000 7 train.py:348] epoch 2.00/2 step 8/8 loss 1.0 ETA 0m00s
      === 2024-01-01 00:10:00 launch.sweep (local): python -m spos_jax.main
      I0101 00:10:01.000000 7 train.py:348] epoch 0.25/2 step 1/8 loss 2.3 ETA 3m30s
        warnings.warn('a library talks')
      ''')
  line = local.last_log_line(log)
  assert line.startswith('epoch 0.25/2 step 1/8')
  assert local.phase(line) == 'epoch 0.25/2, ETA 3m30s'
  assert local.phase(local.last_log_line('=== header\n')) == 'starting'
  assert local.phase('x' * 300, width=20) == 'x' * 17 + '...'


@pytest.mark.parametrize('args, message', [
    (['--sweep=configs/sweeps/nope.py', '--root={tmp}'],
     "sweep file 'configs/sweeps/nope.py' does not exist"),
    (['--sweep=configs/sweeps/fig4.py', '--root={tmp}', '--only=^x-'],
     'matches no run; the runs are: s-all s-mask_none'),
    (['--sweep=configs/sweeps/fig4.py', '--root={tmp}/file/runs'], 'is not writable'),
    (['--sweep=configs/sweeps/fig2.py', '--root={tmp}', '--backend=slurm',
      '--config.bench.path={tmp}/nope.csv'],
     "run s-all: bench.path='{tmp}/nope.csv': no such bench file"),
    (['--sweep=configs/sweeps/fig2.py', '--root={tmp}', '--backend=slurm',
      '--config.bench.path={tmp}'], "run s-all: bench.path='{tmp}' is a directory"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, env, args, message):
  (tmp_path / 'file').write_text('')
  result = launch(*(a.format(tmp=tmp_path) for a in args), '--dry_run', env=env, timeout=60)
  assert result.returncode == 2
  assert message.format(tmp=tmp_path) in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert not list(tmp_path.glob('*.sbatch')), 'a script was written'


@pytest.mark.parametrize('value', ['builtin', '', 'none', 'table.csv'])
def test_bench_paths_that_jobs_accept(tmp_path, monkeypatch, value):
  """The packaged table, no ranking, or an existing file (relative to the launch folder)."""
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'table.csv').write_text('index,arch,cifar10_test\n')
  sweep = plan.load_sweep(str(REPO / 'configs/sweeps/fig2.py'))
  jobs = plan.jobs_for(sweep, str(tmp_path / 'runs'), plan.size_configs(sweep),
                       {'bench.path': value})
  assert [job.config.bench.path for job in jobs] == [value, value]


@pytest.mark.parametrize('overrides, message', [
    ({'train.nope': '1'}, 'unknown config key(s): --config.train.nope'),
    ({'train.epochs': 'abc'}, "invalid literal for int() with base 10: 'abc'"),
    ({'train.epochs': '0'}, 'train.epochs must be >= 1'),
])
def test_bad_config_overrides_name_the_run(tmp_path, overrides, message):
  sweep = plan.load_sweep(str(REPO / 'configs/sweeps/fig4.py'))
  with pytest.raises(plan.SweepError, match=r'^run s-all: ') as error:
    plan.jobs_for(sweep, str(tmp_path), plan.size_configs(sweep), overrides)
  assert message in str(error.value)


def test_split_seeds_jobs(tmp_path):
  sweep = plan.load_sweep(str(REPO / 'configs/sweeps/fig2.py'))
  jobs = plan.jobs_for(sweep, str(tmp_path), plan.size_configs(sweep), {'seeds': '(0,3)'},
                       split_seeds=True)
  assert [j.name for j in jobs] == ['s-all-seed0', 's-all-seed3', 's-mask_none-seed0',
                                    's-mask_none-seed3']
  assert jobs[3].config.seeds == (3,) and jobs[3].config.space.masked_ops == 'none'
  assert jobs[3].overrides == {'space.masked_ops': 'none', 'seeds': (3,)}
  assert '--config.seeds=(3,)' in jobs[3].command()
  # Every run of a root shares one compilation cache (seeds split or not).
  assert {j.compilation_cache for j in jobs} == {str(tmp_path / '.jax_cache')}
  assert f'--compilation_cache={tmp_path / ".jax_cache"}' in jobs[0].command()


def run_list_of(script: str) -> Path:
  """The run list file that an sbatch script reads its task's line from."""
  return Path(re.search(r'^line=.*p" (\S+)\)$', script, re.M).group(1))


def test_slurm_dry_run_script(tmp_path, env):
  root = tmp_path / 'runs'
  result = launch(
      '--sweep=configs/sweeps/fig4.py', f'--root={root}', '--backend=slurm', '--dry_run',
      f'--size_config=s={TINY_CONFIG},m={TINY_CONFIG}', '--only=^(s-mask_none|m-all)$',
      '--gpus_per_run=2', '--time=2:00:00', '--partition=gpu', '--slurm_extra=--account=abc',
      '--config.data.source=synthetic', '--config.train.epochs=1', env=env, timeout=60)
  assert result.returncode == 0, result.stderr
  script = (root / 'fig4.sbatch').read_text()
  for line in ['#SBATCH --array=0-1', '#SBATCH --requeue', '#SBATCH --signal=B:USR1@120',
               '#SBATCH --gres=gpu:2', '#SBATCH --time=2:00:00', '#SBATCH --partition=gpu',
               '#SBATCH --account=abc', '#SBATCH --open-mode=append',
               "trap 'forward USR1' USR1", "trap 'forward TERM' TERM",
               'scontrol requeue "$SLURM_JOB_ID"']:
    assert line in script, line
  lines = run_list_of(script).read_text().splitlines()
  assert [line.split('\t')[0] for line in lines] == ['s-mask_none', 'm-all']
  assert f'--config={TINY_CONFIG}' in lines[0] and '--config.space.masked_ops=none' in lines[0]
  assert '--config.train.epochs=1' in lines[1]
  assert json.loads((root / 'm-all' / 'sweep.json').read_text())['figure'] == 'Fig. 4'


def test_slurm_script_forwards_usr1_then_requeues(tmp_path, env):
  """The script's trap, without Slurm: a fake main job and a fake scontrol."""
  root = tmp_path / 'runs'
  result = launch('--sweep=configs/sweeps/fig2.py', f'--root={root}', '--backend=slurm',
                  '--dry_run', '--only=^s-all$', env=env, timeout=60)
  assert result.returncode == 0, result.stderr
  script = root / 'fig2.sbatch'
  # The contract: on SIGUSR1 the main job checkpoints and exits with status 3.
  fake_main = tmp_path / 'fake_main.sh'
  fake_main.write_text('trap \'echo got-usr1 >> "$1"; exit 3\' USR1\necho started >> "$1"\n'
                       'while true; do sleep 0.1; done\n')
  events = tmp_path / 'events'
  run_list_of(script.read_text()).write_text(f's-all\tbash {fake_main} {events}\n')
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  (bin_dir / 'scontrol').write_text(f'#!/bin/sh\necho "scontrol $*" >> {events}\n')
  (bin_dir / 'scontrol').chmod(0o755)
  task_env = {**env, 'PATH': f'{bin_dir}:{env["PATH"]}', 'SLURM_ARRAY_TASK_ID': '0',
              'SLURM_JOB_ID': '77', 'SLURM_ARRAY_JOB_ID': '76'}
  task = subprocess.Popen(['bash', str(script)], env=task_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  deadline = time.time() + 30
  while not (events.exists() and 'started' in events.read_text()):
    assert time.time() < deadline and task.poll() is None, task.communicate()[0]
    time.sleep(0.1)
  task.send_signal(signal.SIGUSR1)
  out = task.communicate(timeout=30)[0]
  assert task.returncode == 3, out
  assert events.read_text().splitlines() == ['started', 'got-usr1', 'scontrol requeue 77']
  assert 'exited with status 3' in (root / 's-all' / 'log.txt').read_text()


def test_slurm_without_sbatch_suggests_dry_run(tmp_path, env):
  result = launch('--sweep=configs/sweeps/fig2.py', f'--root={tmp_path}', '--backend=slurm',
                  env={**env, 'PATH': str(tmp_path / 'empty')}, timeout=60)
  assert result.returncode == 2
  assert 'sbatch is not on PATH' in result.stderr and '--dry_run' in result.stderr


def slurm_unavailable() -> str:
  """Why a job cannot be submitted here ('' when it can)."""
  if shutil.which('sbatch') is None:
    return 'sbatch is not on PATH (bash .ci/slurm_setup.sh starts a local Slurm)'
  ping = subprocess.run(['scontrol', 'ping'], capture_output=True, text=True, check=False)
  if 'UP' not in ping.stdout:
    return f'the Slurm controller is not up: {ping.stdout.strip() or ping.stderr.strip()}'
  nodes = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True,
                         check=False).stdout.split()
  if not {'idle', 'mixed'} & set(nodes):
    return f'no Slurm node can take a job (node states: {nodes})'
  return ''


def test_real_slurm_submission(tmp_path, env):
  reason = slurm_unavailable()
  if reason:
    pytest.skip(reason)
  root = runs_root(tmp_path, env)
  sweep = write_sweep(tmp_path, [('one', {})])
  result = launch('--sweep', sweep, '--root', root, '--backend=slurm', '--wait',
                  '--gpus_per_run=0', '--config.bench.path=none', *TINY_FLAGS, env=env)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'summary: 1 done' in result.stdout
  assert (root / 'one' / 'TRAINED').exists()
  assert 'main job exited with status 0' in (root / 'one' / 'log.txt').read_text()
  assert list((root / 'slurm').glob('tiny_sweep-*_0.out'))


def test_finished_means_results_of_this_very_config(tmp_path):
  sweep = plan.load_sweep(str(REPO / 'configs/sweeps/fig2.py'))
  sizes = plan.size_configs(sweep)
  ranked = plan.jobs_for(sweep, str(tmp_path / 'a'), sizes, {'bench.path': 'builtin'})[0]
  trained = plan.jobs_for(sweep, str(tmp_path / 'b'), sizes, NO_BENCH)[0]
  bench = run_lib.load_ranking_bench(ranked.config)
  top_ns = run_lib.scored_rows(ranked.config, bench)[2]
  evaluation = {'evaluation': results.evaluation_identity(ranked.config, bench.sha256, top_ns)}
  for job, done_files in (
      (ranked, {'results/running-groups/metrics.json': json.dumps(evaluation), 'TRAINED': '2'}),
      (trained, {'TRAINED': '2'})):
    workdir = Path(job.workdir)
    assert not plan.is_finished(job)  # no folder yet
    for done_file, text in done_files.items():
      (workdir / done_file).parent.mkdir(parents=True, exist_ok=True)
      (workdir / done_file).write_text(text)
    assert not plan.is_finished(job)  # no config.json
    record = config_lib.flatten(job.config)
    (workdir / 'config.json').write_text(json.dumps(record))
    assert plan.is_finished(job)
    # The same folder trained for one epoch (a smoke test) is not this run.
    (workdir / 'config.json').write_text(json.dumps({**record, 'train.epochs': 1}))
    assert not plan.is_finished(job)


def test_gpu_slots():
  assert local.gpu_slots([], 1) == [None]
  assert local.gpu_slots(['0', '1', '2', '3'], 1) == ['0', '1', '2', '3']
  assert local.gpu_slots(['0', '1', '2'], 2) == ['0,1']
  assert local.gpu_slots(['4', '5'], 0) == [None]


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,3')
  assert local.visible_gpus() == ['2', '3']
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
  assert local.visible_gpus() == []


def test_config_args_are_set_aside():
  rest, overrides = plan.split_config_args(
      ['prog', '--only=x', '--config.train.epochs=1', '--config.seeds', '(3,)'])
  assert rest == ['prog', '--only=x']
  assert overrides == {'train.epochs': '1', 'seeds': '(3,)'}
