"""Runs that survive kills, preemption, corrupt checkpoints and divergence (BUILD.md,
"Crashes, preemption, divergence"), and the records that make a run reproducible.

One tiny run (configs/tiny.py shrunk: C=2, N=1, batch 8, 350 synthetic training
images, 17 fair-group steps, a checkpoint every 2 steps, ~45 archs ranked) is the
reference: it trains and evaluates in-process, uninterrupted. Every fault below must
end with that run's parameters and predictions:

  * `python -m spos_jax.main` killed with SIGKILL after its second checkpoint, then
    the same command again (the only two subprocesses of this file);
  * a crash injected into orbax just before a checkpoint folder is renamed;
  * SIGUSR1/SIGTERM delivered during training;
  * a garbled newest checkpoint (and all of them garbled: refused);
  * a huge learning rate (divergence, FAILED marker) and a failing evaluation.

Everything runs on the CPU with the test run's compilation cache (tests/conftest.py);
the subprocesses share it, so after the reference compiled the programs they load them.
"""
import errno
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from spos_jax import checkpoint
from spos_jax import config as config_lib
from spos_jax import preemption
from spos_jax import results
from spos_jax import run as run_lib
from spos_jax import scoring
from spos_jax import train
from spos_jax import workdir as workdir_lib

from conftest import NB201_TABLE as TABLE, snapshot, train_and_evaluate_capturing

# ml_collections.config_flags loads config files through the deprecated load_module().
pytestmark = pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')

REPO = Path(__file__).resolve().parents[1]
TINY_CONFIG = REPO / 'configs/tiny.py'

# configs/tiny.py shrunk: 400 synthetic images - 50 validation = 350 training images,
# 43 micro-batches of 8 an epoch; 2 epochs = 86 micro-batches = 17 fair groups of 5.
OVERRIDES = {
    'data.source': 'synthetic',
    'data.synthetic_size': 400,
    'data.val_size': 50,
    'data.train_subset': 0,
    'model.channels': 2,
    'train.batch_size': 8,
    'train.epochs': 2,
    'train.checkpoint_every_steps': 2,
    'eval.top_ns': (10, 25),
    'eval.random_size': 20,
    'eval.batch_size': 50,
}
NUM_TRAIN = 350
NUM_STEPS = 17
SLOW_RANDOM_SIZE = 1000  # archs: a scoring of seconds on a CPU, to stop midway
RESULTS = 'running-groups'  # results.results_name of the default eval config
TMP_SUFFIX = '.orbax-checkpoint-tmp'


def load_tiny_config(**fields):
  """configs/tiny.py's get_config() (imported like config_flags does) + OVERRIDES."""
  spec = importlib.util.spec_from_file_location('_tiny_config_for_reliability', TINY_CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  for key, value in dict(OVERRIDES, **{'bench.path': str(TABLE)}, **fields).items():
    config_lib.set_flat(config, key, value)
  config_lib.validate(config)
  return config


def main_flags(workdir) -> list[str]:
  """The command-line form of load_tiny_config() for python -m spos_jax.main."""
  def text(value):
    return '(' + ','.join(map(str, value)) + ')' if isinstance(value, tuple) else str(value)
  return [f'--config={TINY_CONFIG}', f'--workdir={workdir}',
          *(f'--config.{k}={text(v)}' for k, v in OVERRIDES.items()),
          f'--config.bench.path={TABLE}']


# ------------------------------------------------------------------------- helpers


def _leaves(tree):
  return {jax.tree_util.keystr(path): np.asarray(v)
          for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _max_difference(a, b) -> float:
  """Largest absolute difference between two states' leaves (same names required)."""
  la, lb = _leaves(a), _leaves(b)
  assert la.keys() == lb.keys()
  worst = 0.0
  for k in la:
    assert la[k].shape == lb[k].shape, k
    if la[k].size:
      worst = max(worst, float(np.abs(la[k].astype(np.float64) - lb[k].astype(np.float64)).max()))
  return worst


def assert_same_state(got, want, what):
  """Identical params, BN statistics, momentum and step (1e-6 allowed, reported)."""
  assert int(np.asarray(got.step)[0]) == int(np.asarray(want.step)[0]), what
  for field in ('params', 'batch_stats', 'opt_state'):
    diff = _max_difference(getattr(got, field), getattr(want, field))
    assert diff <= 1e-6, f'{what}: {field} differ from the uninterrupted run by up to {diff:g}'


_TEMPLATES = {}


def template_states(config):
  """init_states of the config (cached: every call would trace the init again)."""
  key = json.dumps(config_lib.flatten(config), sort_keys=True, default=str)
  if key not in _TEMPLATES:
    model = train.create_model(config)
    tx = train.create_optimizer(config, NUM_TRAIN)
    _TEMPLATES[key] = train.init_states(model, tx, tuple(config.seeds))
  return _TEMPLATES[key]


def checkpoint_steps(workdir) -> list[int]:
  folder = Path(workdir) / 'checkpoints'
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) \
      if folder.is_dir() else []


def temporary_folders(workdir) -> list[str]:
  folder = Path(workdir) / 'checkpoints'
  return sorted(p.name for p in folder.iterdir() if TMP_SUFFIX in p.name) \
      if folder.is_dir() else []


def restore(config, workdir, step):
  ckpt = checkpoint.Checkpointer(str(workdir), config.train.keep_checkpoints)
  try:
    return ckpt.restore(step, template_states(config))
  finally:
    ckpt.close()


def final_states(config, workdir):
  steps = checkpoint_steps(workdir)
  assert steps and steps[-1] == NUM_STEPS, f'{workdir}: checkpoints {steps}'
  return restore(config, workdir, NUM_STEPS)


def copy_run(reference, tmp_path, name='run', keep_results=True, started=False) -> str:
  """A copy of the reference's workdir, finished or (started=True) at step 0."""
  wd = str(tmp_path / name)
  shutil.copytree(reference['started' if started else 'workdir'], wd)
  if started:
    return wd
  if not keep_results:
    shutil.rmtree(os.path.join(wd, 'results'))
  return wd


def garble(step_folder, how):
  """Damage a checkpoint: every file overwritten with junk ('junk') or cut in half
  ('truncate'), or 8 bytes inverted in the middle of each array data file, its
  metadata left intact ('bitflip': silent corruption on disk)."""
  touched = 0
  for root, _, names in os.walk(step_folder):
    for name in names:
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      if how == 'junk':
        with open(path, 'wb') as f:
          f.write((b'\x8b\x00garbled\xff' * (size // 10 + 2))[:max(size, 16)])
      elif how == 'truncate':
        with open(path, 'r+b') as f:
          f.truncate(size // 2)
      elif os.path.basename(root) == 'd' and size >= 16:  # orbax/OCDBT's data files
        with open(path, 'r+b') as f:
          f.seek(size // 2)
          middle = f.read(8)
          f.seek(size // 2)
          f.write(bytes(b ^ 0xFF for b in middle))
      else:
        continue
      touched += 1
  assert touched, f'{step_folder} holds no files to damage'


def signal_during_step(monkeypatch, at_step: int, signum):
  """Send `signum` to this process, from another thread (as a cluster would), right
  after optimizer step `at_step` ran, so that it lands at a known step boundary."""
  real = train._check_finite  # pylint: disable=protected-access  # runs after every step
  sent = []

  def check_finite(metrics, step_before, *args, **kwargs):
    real(metrics, step_before, *args, **kwargs)
    if step_before + 1 == at_step:
      if signal.getsignal(signum) in (signal.SIG_DFL, signal.SIG_IGN, None):
        return  # nothing would catch it: the signal would end pytest itself
      sender = threading.Thread(target=os.kill, args=(os.getpid(), signum))
      sender.start()
      sender.join()
      sent.append(signum)
  monkeypatch.setattr(train, '_check_finite', check_finite)
  return sent


def start(config, workdir, data=None):
  """train.train up to step 0 (records and a step-0 checkpoint), so that all training
  of the run starts from restored arrays. Restored arrays carry a committed sharding,
  which is part of XLA's compilation-cache key: this way every run of this file, the
  subprocesses included, shares one compiled train step instead of two."""
  train.train(config, str(workdir), data, stop_after_steps=0)


def read(path) -> str:
  with open(path) as f:
    return f.read()


# ------------------------------------------------------------------ the reference


@pytest.fixture(scope='module')
def reference(tmp_path_factory, nb201_table):
  """The uninterrupted run, in-process: train_and_evaluate with the subprocess's config."""
  del nb201_table  # for its skip where the table is absent; TABLE is its path
  config = load_tiny_config()
  folder = tmp_path_factory.mktemp('reference')
  wd = str(folder / 'run')
  start(config, wd)
  started = str(folder / 'started')  # the run at step 0, for the runs below to copy
  shutil.copytree(wd, started)
  trained, data = train_and_evaluate_capturing(config, wd)
  # `trained`: the arrays the evaluation got (re-scoring them reuses its compiled
  # programs); `states`: the final checkpoint, what every other run is compared with.
  return dict(config=config, workdir=wd, started=started, states=final_states(config, wd),
              trained=trained, data=data)


@pytest.fixture(scope='module')
def killed_and_resumed(reference, tmp_path_factory):
  """python -m spos_jax.main, SIGKILLed after its second checkpoint, then run again."""
  folder = tmp_path_factory.mktemp('killed')
  wd = folder / 'run'
  cache = jax.config.jax_compilation_cache_dir or str(folder / 'xla-cache')
  env = {**os.environ,
         'PYTHONPATH': os.pathsep.join(filter(None, (str(REPO), os.environ.get('PYTHONPATH')))),
         'JAX_PLATFORMS': 'cpu', 'CUDA_VISIBLE_DEVICES': '',
         'JAX_COMPILATION_CACHE_DIR': cache,
         'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
         'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}
  command = [sys.executable, '-m', 'spos_jax.main', *main_flags(wd)]
  shutil.copytree(reference['started'], wd)  # as the reference did: a step-0 checkpoint
  out = dict(workdir=str(wd))
  with open(folder / 'killed.log', 'w') as log:
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
      deadline = time.time() + 300
      while len([s for s in checkpoint_steps(wd) if s]) < 2:
        if process.poll() is not None:
          pytest.fail(f'main ended (status {process.returncode}) before its second '
                      f'checkpoint:\n{read(folder / "killed.log")[-3000:]}')
        if time.time() > deadline:
          pytest.fail('no second checkpoint after 300 s')
        time.sleep(0.02)
      os.kill(process.pid, signal.SIGKILL)
      out['killed_status'] = process.wait(timeout=60)
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()
  out['killed_log'] = read(folder / 'killed.log')
  out['steps_after_kill'] = checkpoint_steps(wd)
  out['temporary_after_kill'] = temporary_folders(wd)
  out['trained_after_kill'] = workdir_lib.is_trained(str(wd))
  # Every checkpoint orbax lists after the kill must be readable.
  out['unreadable_after_kill'] = []
  for step in out['steps_after_kill']:
    try:
      restore(reference['config'], wd, step)
    except Exception as e:  # pylint: disable=broad-except
      out['unreadable_after_kill'].append(f'{step}: {type(e).__name__}: {e}')
  resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=400, check=False)
  out.update(resumed_status=resumed.returncode, resumed_log=resumed.stdout + resumed.stderr,
             temporary_after_resume=temporary_folders(wd), steps_after_resume=checkpoint_steps(wd))
  return out


# ------------------------------------------------------------- 1-2: kill -9, resume


def test_killed_and_resumed_main_equals_the_uninterrupted_run(reference, killed_and_resumed):
  """SIGKILL after the second checkpoint, same command again: the reference's weights
  and byte-identical predictions.csv / the same metrics.json numbers."""
  run = killed_and_resumed
  assert run['killed_status'] == -signal.SIGKILL, run['killed_log'][-3000:]
  # The kill really interrupted training.
  assert not run['trained_after_kill'] and run['steps_after_kill'][-1] < NUM_STEPS, run
  assert len(run['steps_after_kill']) >= 2
  assert run['resumed_status'] == 0, run['resumed_log'][-5000:]
  assert f'resumed from step {run["steps_after_kill"][-1]} of {NUM_STEPS}' in run['resumed_log']
  wd, ref = run['workdir'], reference['workdir']
  # The subprocess ran the config of the in-process reference.
  assert json.loads(read(os.path.join(wd, 'config.json'))) == \
      json.loads(read(os.path.join(ref, 'config.json')))
  assert read(os.path.join(wd, workdir_lib.TRAINED_MARKER)).strip() == str(NUM_STEPS)
  assert_same_state(final_states(reference['config'], wd), reference['states'],
                    'killed and resumed main')
  pred = os.path.join('results', RESULTS, results.PREDICTIONS_FILE)
  with open(os.path.join(wd, pred), 'rb') as f, open(os.path.join(ref, pred), 'rb') as g:
    assert f.read() == g.read(), 'predictions.csv differs from the uninterrupted run'
  metrics = [json.loads(read(os.path.join(w, 'results', RESULTS, results.METRICS_FILE)))
             for w in (wd, ref)]
  for m in metrics:
    m.pop('evaluated_archs_per_second')
  assert metrics[0] == metrics[1]


def test_kill_leaves_only_readable_checkpoints_and_no_temporary_folders(killed_and_resumed):
  """After SIGKILL every step orbax lists restores; the resume reports nothing
  unreadable, and no orbax temporary folder survives it (opening the checkpoints
  removes a leftover '<step>.orbax-checkpoint-tmp')."""
  run = killed_and_resumed
  assert run['steps_after_kill'], run
  assert not run['unreadable_after_kill'], run['unreadable_after_kill']
  assert 'unreadable' not in run['resumed_log']
  assert not os.path.isdir(os.path.join(run['workdir'], 'checkpoints_unreadable'))
  assert run['temporary_after_resume'] == [], run
  assert run['steps_after_resume'][-1] == NUM_STEPS


class SimulatedCrash(Exception):
  """Stands for the process dying inside orbax's save."""


def test_crash_before_a_checkpoint_is_renamed_leaves_the_previous_one_newest(
    reference, tmp_path, monkeypatch, caplog):
  """A crash after a checkpoint's files are written but before its folder is renamed:
  the half-saved step is not listed, opening the checkpoints removes its leftover
  temporary folder, the rerun resumes from the step before and ends like the
  uninterrupted run."""
  from orbax.checkpoint._src.path import atomicity  # pylint: disable=g-import-not-at-top
  # A checkpoint every 4 steps (a resumable key): 4, then the crash saving 8.
  config = load_tiny_config(**{'train.checkpoint_every_steps': 4})
  wd = copy_run(reference, tmp_path, started=True)
  crash_step = 8
  real_finalize = atomicity.AtomicRenameTemporaryPath.finalize
  crashed = []

  async def finalize(self):
    if self.get_final().name == str(crash_step):
      crashed.append(str(self.get()))
      raise SimulatedCrash(f'simulated crash before renaming {self.get()}')
    return await real_finalize(self)
  with monkeypatch.context() as patch:
    patch.setattr(atomicity.AtomicRenameTemporaryPath, 'finalize', finalize)
    with pytest.raises(SimulatedCrash):
      train.train(config, wd, reference['data'])
  assert crashed, 'the injected crash did not happen (orbax changed how it saves?)'
  assert checkpoint_steps(wd) == [0, 4]
  assert temporary_folders(wd) == [f'{crash_step}{TMP_SUFFIX}']
  ckpt = checkpoint.Checkpointer(wd, config.train.keep_checkpoints)
  assert ckpt.latest_step() == 4  # the half-saved step does not look finished
  assert temporary_folders(wd) == []  # opening the checkpoints removed the leftover
  ckpt.close()
  assert not workdir_lib.is_trained(wd)
  with caplog.at_level(logging.INFO):
    states = train.train(config, wd, reference['data'])
  messages = '\n'.join(r.getMessage() for r in caplog.records)
  assert f'resumed from step 4 of {NUM_STEPS}' in messages and 'unreadable' not in messages
  assert temporary_folders(wd) == []
  assert checkpoint_steps(wd)[-1] == NUM_STEPS
  assert not os.path.isdir(os.path.join(wd, 'checkpoints_unreadable'))
  assert_same_state(states, reference['states'], 'crashed in a save, then resumed')


# ---------------------------------------------------------------- 3: preemption


def test_stop_signals_checkpoint_at_the_next_step_and_the_run_resumes(reference, tmp_path,
                                                                      monkeypatch):
  """SIGUSR1 during step 5, then (rerun) SIGTERM during step 11: each time Preempted
  names the step after a checkpoint of exactly that step was saved (none is due there
  by checkpoint_every_steps), and the handlers are restored; the third run ends like
  the uninterrupted one."""
  # checkpoint_every_steps may change on resume (config.RESUMABLE_KEYS): only the
  # preemption checkpoints and the final one are written here.
  config = load_tiny_config(**{'train.checkpoint_every_steps': 100})
  wd = copy_run(reference, tmp_path, started=True)
  for signum, step in ((signal.SIGUSR1, 5), (signal.SIGTERM, 11)):
    before = signal.getsignal(signum)
    with monkeypatch.context() as patch:
      sent = signal_during_step(patch, step, signum)
      with pytest.raises(preemption.Preempted) as info:
        train.train(config, wd, reference['data'])
    assert sent == [signum]
    assert info.value.step == step and signal.Signals(signum).name in str(info.value)
    assert signal.getsignal(signum) == before
    assert checkpoint_steps(wd)[-1] == step
    assert int(np.asarray(restore(config, wd, step).step)[0]) == step
    assert not workdir_lib.is_trained(wd)
  assert checkpoint_steps(wd) == [0, 5, 11]
  states = train.train(config, wd, reference['data'])
  assert workdir_lib.is_trained(wd)
  assert_same_state(states, reference['states'], 'stopped by SIGUSR1 and SIGTERM')


def subprocess_env(folder) -> dict:
  """The environment of a `python -m spos_jax.main` child: CPU, the test run's
  compilation cache (or its own under folder)."""
  cache = jax.config.jax_compilation_cache_dir or str(folder / 'xla-cache')
  return {**os.environ,
          'PYTHONPATH': os.pathsep.join(filter(None, (str(REPO), os.environ.get('PYTHONPATH')))),
          'JAX_PLATFORMS': 'cpu', 'CUDA_VISIBLE_DEVICES': '',
          'JAX_COMPILATION_CACHE_DIR': cache,
          'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
          'JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES': '0'}


def signalled_main(command, env, log_path, wait_for: str, signals, *, delay_s: float = 0.0,
                   limit_s: float = 300):
  """Run command until its output holds wait_for, then send signals (0.2 s apart) after
  delay_s; (exit status, output, seconds from the last signal to the exit)."""
  with open(log_path, 'w') as log:
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
      deadline = time.time() + limit_s
      while wait_for not in read(log_path):
        if process.poll() is not None:
          pytest.fail(f'main ended (status {process.returncode}) before {wait_for!r}:\n'
                      f'{read(log_path)[-3000:]}')
        if time.time() > deadline:
          pytest.fail(f'no {wait_for!r} after {limit_s} s:\n{read(log_path)[-3000:]}')
        time.sleep(0.02)
      time.sleep(delay_s)
      for i, signum in enumerate(signals):
        if i:
          time.sleep(0.2)  # a signal sent while the same one is pending would merge with it
        process.send_signal(signum)
      sent = time.time()
      status = process.wait(timeout=limit_s)
      return status, read(log_path), time.time() - sent
    finally:
      if process.poll() is None:
        process.kill()
        process.wait()


def test_ctrl_c_checkpoints_at_the_next_step_and_a_second_one_exits_at_once(reference,
                                                                          tmp_path):
  """python -m spos_jax.main and Ctrl-C (SIGINT) after step 5: as SIGTERM, a checkpoint
  at the next step, one line, exit 3, no traceback. The same command again, Ctrl-C
  pressed twice while it compiles (a cold cache: tens of seconds on a CPU): it ends at
  once with 130 and one line naming the checkpoint kept, saving nothing. The third
  run resumes and ends like the uninterrupted one."""
  wd = copy_run(reference, tmp_path, started=True)
  command = [sys.executable, '-m', 'spos_jax.main', *main_flags(wd),
             '--config.train.checkpoint_every_steps=100']  # only the stops save
  env = subprocess_env(tmp_path)
  status, out, _ = signalled_main(command, env, tmp_path / 'once.log',
                                  f'step 5/{NUM_STEPS}', [signal.SIGINT])
  assert status == preemption.PREEMPTED_EXIT_CODE, out[-3000:]
  assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out[-3000:]
  steps = checkpoint_steps(wd)
  assert len(steps) == 2 and steps[0] == 0 and 5 <= steps[1] < NUM_STEPS, steps
  stopped = steps[1]
  assert (f'stopped by SIGINT at step {stopped} after saving a checkpoint; run the same '
          f'command again to resume') in out
  assert not workdir_lib.is_trained(wd)

  cold = dict(env, JAX_COMPILATION_CACHE_DIR=str(tmp_path / 'cold-cache'))
  status, out, seconds = signalled_main(command, cold, tmp_path / 'twice.log', 'compiling',
                                        [signal.SIGINT, signal.SIGINT])
  assert status == preemption.INTERRUPTED_EXIT_CODE, out[-3000:]
  assert seconds < 5, f'{seconds:.1f} s from the second Ctrl-C to the exit'
  assert out.rstrip().splitlines()[-1] == (
      f'stopped at once by a second SIGINT (Ctrl-C); kept the newest checkpoint '
      f'{os.path.join(wd, "checkpoints", str(stopped))} (step {stopped}), the steps after '
      f'it are lost; run the same command again to resume'), out[-3000:]
  assert 'Traceback' not in out
  assert checkpoint_steps(wd) == [0, stopped] and not workdir_lib.is_trained(wd)

  resumed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=400, check=False)
  assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
  assert f'resumed from step {stopped} of {NUM_STEPS}' in resumed.stderr
  assert_same_state(final_states(reference['config'], wd), reference['states'],
                    'stopped by Ctrl-C, then resumed')


def test_sigterm_while_scoring_stops_cleanly_and_the_rerun_scores(reference, tmp_path):
  """SIGTERM while main scores a trained run: exit 3 and one line, no results that
  look complete (no metrics.json); the same command again scores and completes."""
  wd = copy_run(reference, tmp_path, keep_results=False)
  # eval.* may change on resume: a larger random group makes the scoring last.
  command = [sys.executable, '-m', 'spos_jax.main', *main_flags(wd),
             f'--config.eval.random_size={SLOW_RANDOM_SIZE}']
  env = subprocess_env(tmp_path)
  # The log line is written inside the evaluation's watcher: a signal right after it
  # is caught whether the scoring has started or not.
  status, out, _ = signalled_main(command, env, tmp_path / 'scoring.log', ' seeds of step ',
                                  [signal.SIGTERM])
  assert status == preemption.PREEMPTED_EXIT_CODE, out[-3000:]
  assert ('stopped by SIGTERM while scoring; no results were written; run the same '
          'command again to score again') in out, out[-3000:]
  assert 'Traceback' not in out
  folder = os.path.join(wd, 'results', RESULTS)
  assert not os.path.exists(os.path.join(folder, results.METRICS_FILE))
  assert not os.path.exists(os.path.join(folder, results.PREDICTIONS_FILE))
  rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=600, check=False)
  assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
  metrics = json.loads(read(os.path.join(folder, results.METRICS_FILE)))
  assert metrics['scored_step'] == NUM_STEPS
  assert metrics['evaluation']['eval.random_size'] == SLOW_RANDOM_SIZE


class UnwatchedSignal(Exception):
  """Raised by the test's own SIGTERM handler: the signal reached no watcher."""


def test_sigterm_before_the_scoring_starts_stops_the_evaluation_cleanly(reference, tmp_path,
                                                                      monkeypatch):
  """SIGTERM while the evaluation prepares (bench rows, data, checkpoints to average),
  before the first scoring call: preemption.Stopped, so the CLI exits 3 in one line,
  nothing written, and the evaluation runs to the end afterwards. Without a watcher
  there, the signal would reach the handler in place (here the test's, which raises
  UnwatchedSignal; in a CLI the default one, which ends the process)."""
  config = reference['config']
  wd = copy_run(reference, tmp_path, keep_results=False)
  real = run_lib.scored_rows

  def scored_rows_then_sigterm(*args, **kwargs):
    sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
    sender.start()
    sender.join()
    return real(*args, **kwargs)

  def unwatched(signum, frame):
    raise UnwatchedSignal(signal.Signals(signum).name)
  previous = signal.signal(signal.SIGTERM, unwatched)
  try:
    with monkeypatch.context() as patch:
      patch.setattr(run_lib, 'scored_rows', scored_rows_then_sigterm)
      with pytest.raises(preemption.Stopped, match='stopped by SIGTERM while preparing to '
                         'score; no results were written'):
        run_lib.evaluate_run(config, wd, reference['trained'], reference['data'])
  finally:
    signal.signal(signal.SIGTERM, previous)
  assert not os.path.exists(os.path.join(wd, 'results'))
  run_lib.evaluate_run(config, wd, reference['trained'], reference['data'])
  assert run_lib.results_complete(config, wd)


# ---------------------------------------------------------- 4: corrupt checkpoints


# A failed restore of bit-flipped data leaves tensorstore callbacks for orbax's closed
# event loop ('Event loop is closed', unraisable): noise inside orbax.
@pytest.mark.filterwarnings('ignore::pytest.PytestUnraisableExceptionWarning')
@pytest.mark.parametrize('how', ['junk', 'bitflip'])
def test_garbled_newest_checkpoint_is_set_aside_and_the_run_falls_back(reference, tmp_path,
                                                                       caplog, how):
  """The newest checkpoint overwritten with junk, or with a few bytes of its array data
  inverted: reported with its path, moved to checkpoints_unreadable/, the run resumes
  from the one before and ends like the uninterrupted run."""
  config = reference['config']
  wd = copy_run(reference, tmp_path, keep_results=False)
  steps = checkpoint_steps(wd)
  assert steps == [14, 16, NUM_STEPS]
  newest = os.path.join(wd, 'checkpoints', str(NUM_STEPS))
  garble(newest, how)
  garbled = snapshot(newest)
  with caplog.at_level(logging.INFO):
    states = train.train(config, wd, reference['data'])
  messages = '\n'.join(r.getMessage() for r in caplog.records)
  assert f'checkpoint {newest} is unreadable' in messages
  assert 'resumed from step 16' in messages
  quarantined = os.listdir(os.path.join(wd, 'checkpoints_unreadable'))
  assert len(quarantined) == 1 and quarantined[0].startswith(f'{NUM_STEPS}-')
  assert snapshot(os.path.join(wd, 'checkpoints_unreadable', quarantined[0])) == garbled
  assert checkpoint_steps(wd) == [14, 16, NUM_STEPS]
  assert_same_state(states, reference['states'], 'fell back from a garbled checkpoint')
  assert_same_state(final_states(config, wd), reference['states'], 're-saved checkpoint')


def test_all_checkpoints_unreadable_refuses_to_start_and_touches_nothing(reference, tmp_path,
                                                                        monkeypatch):
  """Every checkpoint cut in half: CheckpointError naming them; nothing trains from
  scratch, no checkpoint is written, moved or deleted, TRAINED stays as it was."""
  config = reference['config']
  wd = copy_run(reference, tmp_path)
  for step in checkpoint_steps(wd):
    garble(os.path.join(wd, 'checkpoints', str(step)), 'truncate')
  before = snapshot(os.path.join(wd, 'checkpoints'))
  trained = read(os.path.join(wd, workdir_lib.TRAINED_MARKER))
  monkeypatch.setattr(train, 'compile_train_chunk',
                      lambda *a, **k: pytest.fail('training started over unreadable checkpoints'))
  with pytest.raises(checkpoint.CheckpointError) as info:
    train.train(config, wd, reference['data'])
  for step in (14, 16, NUM_STEPS):
    assert os.path.join(wd, 'checkpoints', str(step)) in str(info.value)
  assert snapshot(os.path.join(wd, 'checkpoints')) == before
  assert not os.path.exists(os.path.join(wd, 'checkpoints_unreadable'))
  assert read(os.path.join(wd, workdir_lib.TRAINED_MARKER)) == trained


def test_rescoring_a_run_whose_final_checkpoint_is_garbled_names_it(reference, tmp_path):
  """The re-scoring program on a finished run whose final checkpoint was garbled: a
  user error naming that checkpoint (it must not score older weights either)."""
  config = reference['config']
  wd = copy_run(reference, tmp_path)
  newest = os.path.join(wd, 'checkpoints', str(NUM_STEPS))
  garble(newest, 'junk')
  with pytest.raises((checkpoint.CheckpointError, run_lib.EvaluationError)) as info:
    run_lib.restore_trained_states(config, wd)
  assert newest in str(info.value)


# --------------------------------------------------------------- 5: divergence


DIVERGING = {'train.lr': 1e30, 'train.lr_min': 0.0, 'train.weight_decay': 0.0,
             'train.checkpoint_every_steps': 1, 'seeds': (7,), 'data.split_seed': 3}


def test_divergence_names_step_seed_lr_keeps_the_last_good_checkpoint(reference, tmp_path,
                                                                      monkeypatch):
  """lr=1e30: DivergenceError naming the step, the seed and the lr; FAILED holds the
  message; checkpoints up to the step before remain, none of the diverged step. A rerun
  removes FAILED when it starts (then diverges again at the same step)."""
  del reference  # only for the order: the reference compiles the shared programs first
  config = load_tiny_config(**DIVERGING)
  wd = str(tmp_path / 'run')
  start(config, wd)
  with pytest.raises(train.DivergenceError) as info:
    train.train(config, wd)
  message = str(info.value)
  step = int(message.split('optimizer step ')[1].split(',')[0])
  assert 1 <= step <= NUM_STEPS
  assert f'optimizer step {step}, seed 7 ' in message and 'lr=1e+30' in message
  failed = os.path.join(wd, workdir_lib.FAILED_MARKER)
  assert read(failed).strip() == message
  steps = checkpoint_steps(wd)  # the newest keep_checkpoints steps before the diverged one
  assert steps == list(range(max(step - config.train.keep_checkpoints, 0), step)), steps
  assert not workdir_lib.is_trained(wd)
  last_good = restore(config, wd, step - 1)
  assert all(np.isfinite(v).all() for v in _leaves(last_good.params).values())
  assert json.loads(read(os.path.join(wd, workdir_lib.RUN_INFO_FILE)))['data_split_seed'] == 3

  seen = []
  real_restore = checkpoint.Checkpointer.restore_latest

  def restore_latest(self, template):
    seen.append(os.path.exists(failed))  # after workdir.prepare, before training
    return real_restore(self, template)
  monkeypatch.setattr(checkpoint.Checkpointer, 'restore_latest', restore_latest)
  with pytest.raises(train.DivergenceError) as again:
    train.train(config, wd)
  assert seen == [False], 'FAILED was not removed when the rerun started'
  assert str(again.value) == message
  assert read(failed).strip() == message
  assert checkpoint_steps(wd)[-1] == step - 1


# --------------------------------------------------- 6: the reproducibility record


def test_run_records_versions_device_commit_split_config_and_bench_hash(reference):
  """run_info.json: package versions, device kind, git commit, data split seed (the
  divergence test checks a non-default one); config.json: the resolved config;
  metrics.json: the sha256 of the bench table that ranked the archs."""
  wd, config = reference['workdir'], reference['config']
  info = json.loads(read(os.path.join(wd, workdir_lib.RUN_INFO_FILE)))
  import flax  # pylint: disable=g-import-not-at-top
  import optax  # pylint: disable=g-import-not-at-top
  assert info['packages']['jax'] == jax.__version__
  assert info['packages']['flax'] == flax.__version__
  assert info['packages']['optax'] == optax.__version__
  assert info['device_kind'] == jax.devices()[0].device_kind
  assert isinstance(info['git_commit'], str) and info['git_commit']
  git = subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                       check=False)
  if git.returncode == 0:  # '+dirty' marks uncommitted changes to tracked files
    changes = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'],
                             cwd=REPO, capture_output=True, text=True, check=False).stdout
    assert info['git_commit'] == git.stdout.strip() + ('+dirty' if changes.strip() else '')
  assert info['data_split_seed'] == config.data.split_seed
  table_sha256 = hashlib.sha256(TABLE.read_bytes()).hexdigest()
  if 'bench_sha256' in info:  # recorded at the start of the run, too
    assert info['bench_sha256'] == table_sha256
  # config.json holds what 'auto' and '' resolved to (the data source, the bench column).
  assert json.loads(read(os.path.join(wd, workdir_lib.CONFIG_FILE))) == \
      json.loads(json.dumps(config_lib.flatten(config_lib.resolved(config))))
  assert info['data_source'] == config_lib.data_source(config)
  metrics = json.loads(read(os.path.join(wd, 'results', RESULTS, results.METRICS_FILE)))
  assert metrics['bench']['sha256'] == table_sha256
  assert metrics['bench']['path'] == str(TABLE)


# ------------------------------------------------------ 7: integrity of results


class InjectedFailure(OSError):
  """A failure injected into the evaluation."""


def _fail_evaluation(patch, where):
  """Make the evaluation fail after the first seed was scored ('scoring'), while the
  metrics are summarised ('summary') or when metrics.json is put in place, its
  text written ('metrics_write': the rename fails with ENOSPC)."""
  if where == 'scoring':
    real = scoring.score_archs

    def score_archs(*args, **kwargs):
      real(*args, **kwargs)
      raise InjectedFailure('after the first seed')
    patch.setattr(scoring, 'score_archs', score_archs)
  elif where == 'summary':
    patch.setattr(results, 'summarize',
                  lambda *a, **k: (_ for _ in ()).throw(InjectedFailure('summary')))
  else:
    for name in ('replace', 'rename'):
      real_move = getattr(os, name)

      def move(src, dst, *args, _real=real_move, **kwargs):
        if os.path.basename(dst) == results.METRICS_FILE:
          raise InjectedFailure(errno.ENOSPC, f'no space left to put {dst} in place')
        return _real(src, dst, *args, **kwargs)
      patch.setattr(os, name, move)


def test_failed_evaluation_leaves_no_metrics_and_the_rerun_completes(reference, tmp_path,
                                                                     monkeypatch):
  """An evaluation failing at three points of a trained run: never a metrics.json, so
  the run never looks evaluated; the main job again is not refused by what the failed
  attempts left, evaluates and writes the reference's predictions.csv."""
  config = reference['config']
  wd = copy_run(reference, tmp_path, keep_results=False)
  folder = run_lib.results_folder(config, wd)
  left = {}
  for where in ('scoring', 'summary', 'metrics_write'):
    with monkeypatch.context() as patch:
      _fail_evaluation(patch, where)
      with pytest.raises(InjectedFailure):
        run_lib.evaluate_run(config, wd, reference['trained'], reference['data'])
    assert not os.path.exists(os.path.join(folder, results.METRICS_FILE)), where
    assert not run_lib.results_complete(config, wd), where
    left[where] = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
  assert left['scoring'] == []  # nothing written before the scores of every seed exist
  assert left['summary'] == []  # both files are computed before either is written
  assert left['metrics_write'] == [results.PREDICTIONS_FILE]  # no temporary file left
  run_lib.train_and_evaluate(config, wd)
  assert run_lib.results_complete(config, wd)
  ref_folder = run_lib.results_folder(config, reference['workdir'])
  with open(os.path.join(folder, results.PREDICTIONS_FILE), 'rb') as f, \
      open(os.path.join(ref_folder, results.PREDICTIONS_FILE), 'rb') as g:
    assert f.read() == g.read()
  metrics = [json.loads(read(os.path.join(x, results.METRICS_FILE))) for x in (folder, ref_folder)]
  for m in metrics:
    m.pop('evaluated_archs_per_second')
  assert metrics[0] == metrics[1]
  # Nothing else is left behind (no temporary file of the failed metrics.json).
  assert sorted(os.listdir(folder)) == [results.METRICS_FILE, results.PREDICTIONS_FILE]


@pytest.mark.parametrize('where', ['summary', 'metrics_write'])
def test_failed_overwrite_does_not_leave_old_metrics_with_new_predictions(reference, tmp_path,
                                                                          monkeypatch, where):
  """Re-scoring a finished run into its existing results folder (evaluate --overwrite,
  here with another random sample) fails while summarising ('summary': the earlier
  pair stays untouched) or when metrics.json is renamed into place, after the new
  predictions.csv was ('metrics_write'): the folder must never claim a completed
  evaluation (metrics.json present) beside predictions.csv of the failed one."""
  config = reference['config'].copy_and_resolve_references()
  config_lib.set_flat(config, 'eval.random_size', 10)
  wd = copy_run(reference, tmp_path)
  folder = run_lib.results_folder(config, wd)
  before = snapshot(folder)
  old_predictions = read(os.path.join(folder, results.PREDICTIONS_FILE))
  with monkeypatch.context() as patch:
    _fail_evaluation(patch, where)
    with pytest.raises(InjectedFailure):
      run_lib.evaluate_run(config, wd, reference['trained'], reference['data'],
                            overwrite=True)
  new_predictions = read(os.path.join(folder, results.PREDICTIONS_FILE))
  looks_complete = run_lib.results_complete(config, wd)
  assert not (looks_complete and new_predictions != old_predictions), (
      f'{folder}: metrics.json of the old evaluation ({len(old_predictions.splitlines())} '
      f'lines of predictions) next to predictions.csv of the failed one '
      f'({len(new_predictions.splitlines())} lines)')
  if where == 'summary':
    assert snapshot(folder) == before  # nothing was written: the old pair stands
  else:
    assert new_predictions != old_predictions and not looks_complete
    assert sorted(os.listdir(folder)) == [results.PREDICTIONS_FILE]  # no temporary files
