"""launch.sweep: local runs end to end, the Slurm array script, a real Slurm submission.

End-to-end runs are tiny main jobs on the CPU (configs/tiny.py shrunk further). They
share one XLA compilation cache, so only the first pays the compile (about a minute
on 2 cores); the others take 10-25 s each.
"""
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

from launch import local
from launch import plan
from spos_jax import config as config_lib

# ml_collections.config_flags loads config files through the deprecated load_module().
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO.parent / 'shared/data/nb201/nb201_table.csv'
TINY_CONFIG = REPO / 'configs/tiny.py'
needs_bench = pytest.mark.skipif(not BENCH.exists(), reason=f'no bench table at {BENCH}')

# C=2, 192 synthetic training images in batches of 16: 12 micro-batches an epoch, so 6
# epochs are 14 fair-group steps, each followed by a checkpoint.
TINY_FLAGS = [
    '--config.data.source=synthetic', '--config.data.synthetic_size=256',
    '--config.data.val_size=64', '--config.data.train_subset=0', '--config.model.channels=2',
    '--config.train.batch_size=16', '--config.train.epochs=6',
    '--config.train.checkpoint_every_steps=1', '--config.eval.batch_size=64',
]
# As run overrides: the sweep's runs may differ in them (the command line's win).
BENCH_OVERRIDES = {'bench.path': str(BENCH), 'eval.top_ns': (10, 25), 'eval.random_size': 20}


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


def wait_until(condition, process, timeout_s):
  deadline = time.time() + timeout_s
  while not condition():
    assert process.poll() is None, f'launcher ended early:\n{process.communicate()[0]}'
    assert time.time() < deadline, 'timed out'
    time.sleep(0.2)


@needs_bench
def test_local_interrupted_run_resumes_then_finished_runs_skip(tmp_path, env):
  """'ranked' ranks the bench (done = results), 'trained' only trains (done = TRAINED)."""
  root = tmp_path / 'runs'
  args = ['--sweep', write_sweep(tmp_path, [('ranked', BENCH_OVERRIDES), ('trained', {})]),
          '--root', root, *TINY_FLAGS]
  first = subprocess.Popen(launch_command(*args), cwd=REPO, env=env, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  wait_until(lambda: finished_checkpoint(root / 'ranked'), first, timeout_s=240)
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


def test_local_failed_run_is_reported_and_the_others_run(tmp_path, env):
  root = tmp_path / 'runs'
  sweep = write_sweep(tmp_path, [('bad', {}), ('good', {})])
  # A folder that holds a checkpoint of another config (the small one): main refuses it.
  (root / 'bad' / 'checkpoints' / '100').mkdir(parents=True)
  foreign = config_lib.flatten(config_lib.base_config())
  (root / 'bad' / 'config.json').write_text(json.dumps(foreign))
  result = launch('--sweep', sweep, '--root', root, *TINY_FLAGS, env=env)  # no bench
  assert result.returncode == 1, result.stdout + result.stderr
  assert re.search(r'failed +bad .*\n.*holds a run of a different config', result.stdout), \
      result.stdout
  assert re.search(r'done +good', result.stdout), result.stdout
  assert (root / 'good' / 'TRAINED').exists()


@pytest.mark.parametrize('args, message', [
    (['--sweep=configs/sweeps/nope.py', '--root={tmp}'],
     "sweep file 'configs/sweeps/nope.py' does not exist"),
    (['--sweep=configs/sweeps/fig4.py', '--root={tmp}', '--only=^x-'],
     'matches no run; the runs are: s-all s-mask_none'),
    (['--sweep=configs/sweeps/fig4.py', '--root={tmp}/file/runs'], 'is not writable'),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, env, args, message):
  (tmp_path / 'file').write_text('')
  result = launch(*(a.format(tmp=tmp_path) for a in args), '--dry_run', env=env, timeout=60)
  assert result.returncode == 2
  assert message in result.stderr
  assert 'Traceback' not in result.stderr


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
  root = tmp_path / 'runs'
  sweep = write_sweep(tmp_path, [('one', {})])
  result = launch('--sweep', sweep, '--root', root, '--backend=slurm', '--wait',
                  '--gpus_per_run=0', *TINY_FLAGS, env=env)
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'summary: 1 done' in result.stdout
  assert (root / 'one' / 'TRAINED').exists()
  assert 'main job exited with status 0' in (root / 'one' / 'log.txt').read_text()
  assert list((root / 'slurm').glob('tiny_sweep-*_0.out'))


def test_finished_means_results_of_this_very_config(tmp_path):
  sweep = plan.load_sweep(str(REPO / 'configs/sweeps/fig2.py'))
  sizes = plan.size_configs(sweep)
  ranked = plan.jobs_for(sweep, str(tmp_path / 'a'), sizes, {'bench.path': 'table.csv'})[0]
  trained = plan.jobs_for(sweep, str(tmp_path / 'b'), sizes, {})[0]
  for job, done_file in ((ranked, 'results/running-groups/metrics.json'), (trained, 'TRAINED')):
    workdir = Path(job.workdir)
    assert not plan.is_finished(job)  # no folder yet
    (workdir / done_file).parent.mkdir(parents=True)
    (workdir / done_file).write_text('{}')
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
