"""Launch a sweep (configs/sweeps/*.py): every run a `python -m spos_jax.main` job.

python -m launch.sweep --sweep=configs/sweeps/fig4.py --root=runs/paper \
    [--backend=local|slurm] [--only=REGEX] [--split_seeds] [--dry_run] \
    [--size_config=s=configs/tiny.py,m=configs/tiny.py] [--config.train.epochs=1 ...]

Run NAME trains in ROOT/NAME (checkpoints, results, log.txt, sweep.json) with the
size's base config, the run's overrides, then the command line's --config.* flags.
Finished runs (results present; TRAINED when there is no bench) are skipped;
unfinished ones resume from their checkpoints. Sweeps that share a root share the
runs they both name (e.g. Fig. 4's subsets are Fig. 6's baselines). A run whose
folder cannot hold it (a file in its place, unwritable, an unreadable config.json)
fails with the reason; the others run. Every job's bench.path must be 'builtin',
'' / 'none' or an existing table file, checked before anything starts.

local: runs one after another, or one per GPU (group of --gpus_per_run) in parallel
  when GPUs are visible; a progress line every --progress_s seconds (runs done /
  failed / left, ETA, each running run's epoch and ETA from its log) and a summary
  at the end; exit status 1 when a run failed or was interrupted, 2 for a bad
  sweep, flag, bench path or root.
slurm: writes ROOT/<sweep>.sbatch (one array task per unfinished run) and submits it
  (--dry_run only writes it); see launch/slurm.py for the requeue contract.
"""
from __future__ import annotations

import collections
import importlib.util
import os
import sys

from absl import app
from absl import flags

from launch import local
from launch import plan
from launch import slurm
from spos_jax import cli

FLAGS = flags.FLAGS
flags.DEFINE_string('sweep', None, 'Sweep file, e.g. configs/sweeps/fig4.py.')
flags.DEFINE_string('root', None, 'Folder that holds one run folder per run.')
flags.DEFINE_enum('backend', 'local', ['local', 'slurm'], 'Where the runs run.')
flags.DEFINE_string('only', '', 'Regular expression: launch only runs whose name matches.')
flags.DEFINE_bool('dry_run', False, 'local: print the plan; slurm: write the script, no sbatch.')
flags.DEFINE_bool('split_seeds', False, 'One run per seed (NAME-seedS, seeds=(S,)).')
flags.DEFINE_string('size_config', '', 'Replace base configs of sizes: s=FILE,m=FILE.')
flags.DEFINE_integer('gpus_per_run', 1, 'GPUs of each run (local: parallel slots; slurm: gres).')
flags.DEFINE_integer('cpus_per_run', 0, 'slurm: --cpus-per-task; 0 leaves the default.')
flags.DEFINE_string('time', '24:00:00', 'slurm: time limit of each array task.')
flags.DEFINE_string('partition', '', 'slurm: partition; empty uses the default.')
flags.DEFINE_multi_string('slurm_extra', [], 'slurm: more #SBATCH options, e.g. --account=x.')
flags.DEFINE_integer('signal_lead_s', 120, 'slurm: USR1 this many seconds before the limit.')
flags.DEFINE_integer('max_parallel', 0, 'slurm: most tasks running at once; 0 = no limit.')
flags.DEFINE_bool('wait', False, 'slurm: block until the array finishes, then summarise.')
flags.DEFINE_float('progress_s', local.PROGRESS_S, 'local: seconds between progress lines.')
flags.mark_flags_as_required(['sweep', 'root'])

_CONFIG_OVERRIDES: dict = {}


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags, with --config.KEY=VALUE set aside for the main jobs."""
  rest, overrides = plan.split_config_args(argv)
  _CONFIG_OVERRIDES.update(overrides)
  try:
    return FLAGS(rest)
  except flags.Error as e:
    print(f'error: {e}\nPass --helpshort for the flags.', file=sys.stderr)
    sys.exit(2)


def project_path() -> str:
  """The folder holding the spos_jax package: the main jobs' PYTHONPATH."""
  return os.path.dirname(os.path.dirname(importlib.util.find_spec('spos_jax').origin))


def summary(outcomes: list[local.Outcome], skipped: list[plan.Job]) -> str:
  """Counts, then one line per run with its log (and why, unless done or skipped)."""
  outcomes = outcomes + [local.Outcome(job, 'skipped') for job in skipped]
  counts = collections.Counter(o.status for o in outcomes)
  lines = ['summary: ' + ', '.join(f'{counts[s]} {s}' for s in local.STATUSES if counts[s])]
  for o in outcomes:
    lines.append(f'  {o.status:<11} {o.job.name:<40} {o.job.log}')
    if o.message:
      lines.append(f'      {o.message}')
  return '\n'.join(lines)


def run_local(jobs, skipped, broken) -> int:
  slots = local.gpu_slots(local.visible_gpus(), FLAGS.gpus_per_run)
  if FLAGS.dry_run:
    for job in jobs:
      print(' '.join(job.command()))
    for outcome in broken:
      print(f'cannot run {outcome.job.name}: {outcome.message}')
    print(f'dry run: {len(jobs)} to run on {len(slots)} slot(s) {slots}, {len(skipped)} finished'
          + (f', {len(broken)} cannot run' if broken else ''))
    return 1 if broken else 0
  for outcome in broken:
    print(f'failed {outcome.job.name}: {outcome.message}', flush=True)
  outcomes = broken + local.run_jobs(jobs, slots, project_path(), FLAGS.progress_s)
  print(summary(outcomes, skipped))
  return 0 if all(o.status == 'done' for o in outcomes) else 1


def run_slurm(sweep, root, jobs, skipped, broken) -> int:
  if not jobs:
    print(summary(broken, skipped) + '\nnothing to submit: '
          + ('no run left that can run' if broken else 'every run has finished'))
    return 1 if broken else 0
  if broken:  # left out of the array: their folders would fail them on the cluster
    print(summary(broken, []))
  resources = slurm.Resources(
      gpus_per_run=FLAGS.gpus_per_run, cpus_per_run=FLAGS.cpus_per_run, time=FLAGS.time,
      partition=FLAGS.partition, signal_lead_s=FLAGS.signal_lead_s,
      max_parallel=FLAGS.max_parallel, extra=tuple(FLAGS.slurm_extra))
  script = slurm.write(sweep, root, jobs, resources, project_path(), sys.executable)
  print(f'wrote {script} ({len(jobs)} array tasks; {len(skipped)} runs finished before)')
  if FLAGS.dry_run:
    print(f'dry run: submit with `sbatch {script}`')
    return 1 if broken else 0
  job_id = slurm.submit(script)
  print(f'submitted array job {job_id}; watch it with `squeue -j {job_id}`; '
        f'logs in {root}/<run>/log.txt and {root}/slurm/')
  if not FLAGS.wait:
    return 1 if broken else 0
  slurm.wait_for(job_id)
  outcomes = broken + [local.Outcome(j, 'done') if plan.is_finished(j)
                       else local.Outcome(j, 'failed', plan.failure_message(j)) for j in jobs]
  print(summary(outcomes, skipped))
  return 0 if all(o.status == 'done' for o in outcomes) else 1


def usable_run_folders(sweep, jobs, write: bool):
  """(jobs whose folders can hold them, failed Outcomes of the others with the reason).

  write: create each folder and write its sweep.json (not for a local dry run).
  """
  usable, broken = [], []
  for job in jobs:
    try:
      plan.check_run_folder(job, create=write)
      if write:
        plan.write_record(sweep, job)
    except plan.RunFolderError as e:
      broken.append(local.Outcome(job, 'failed', str(e)))
      continue
    usable.append(job)
  return usable, broken


def main(argv) -> int:
  if len(argv) > 1:
    raise plan.SweepError(f'unexpected arguments: {" ".join(argv[1:])}')
  sweep = plan.load_sweep(FLAGS.sweep)
  sizes = plan.size_configs(sweep, FLAGS.size_config)
  # Every job's config and bench path is checked before the root is created.
  jobs = plan.select(plan.jobs_for(sweep, os.path.abspath(FLAGS.root), sizes, _CONFIG_OVERRIDES,
                                   FLAGS.split_seeds), FLAGS.only)
  root = plan.prepare_root(FLAGS.root)
  usable, broken = usable_run_folders(sweep, jobs,
                                      write=not FLAGS.dry_run or FLAGS.backend == 'slurm')
  done = {job.name for job in usable if plan.is_finished(job)}
  finished = [job for job in usable if job.name in done]
  todo = [job for job in usable if job.name not in done]
  print(f'{sweep.name} ({sweep.config.figure}): {len(jobs)} runs, {len(todo)} to run, '
        f'{len(finished)} finished' + (f', {len(broken)} cannot run' if broken else '')
        + f'; root {root}', flush=True)
  if FLAGS.backend == 'local':
    return run_local(todo, finished, broken)
  return run_slurm(sweep, root, todo, finished, broken)


if __name__ == '__main__':
  app.run(cli.reporting_user_errors(lambda argv: sys.exit(main(argv)), (plan.SweepError,)),
          flags_parser=parse_flags)
