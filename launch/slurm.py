"""One sbatch array script per sweep: a task per unfinished run, requeued near its limit.

ROOT/<sweep>.sbatch reads its run from ROOT/slurm/<sweep>-<hash>.runs (line i+1 for
array task i: NAME<TAB>COMMAND). The run list's name carries a hash of its content,
so a later submission never changes what a queued or requeued task of an earlier
one runs.

Time limits and preemption (the contract with spos_jax.main, spos_jax/preemption.py):
on SIGUSR1 or SIGTERM the main job saves a checkpoint at the next step boundary and
exits with status 3; the same command in the same workdir resumes from it.
  * `--signal=B:USR1@LEAD` makes Slurm signal the batch shell LEAD seconds before
    the time limit; the trap forwards USR1 to python, waits for it, and requeues the
    task (`scontrol requeue $SLURM_JOB_ID`), which then resumes. Any non-zero status
    after USR1 requeues (a main job killed by it resumes from its last checkpoint).
    Slurm holds a requeued task for a while (BeginTime, about two minutes here).
  * SIGTERM (scancel, preemption, node shutdown) is forwarded too, but the script
    does not requeue: after scancel the user wants the run stopped, and Slurm itself
    requeues a preempted task (PreemptMode=REQUEUE, #SBATCH --requeue).
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import shlex
import shutil
import subprocess
import time

from launch import plan


@dataclasses.dataclass(frozen=True)
class Resources:
  gpus_per_run: int = 1
  cpus_per_run: int = 0  # 0: the cluster's default
  time: str = '24:00:00'
  partition: str = ''
  signal_lead_s: int = 120
  max_parallel: int = 0  # array throttle (%N); 0: no limit
  extra: tuple = ()  # more '#SBATCH' options, e.g. '--account=abc'


def run_list(jobs: list[plan.Job], python: str) -> str:
  """NAME<TAB>COMMAND lines, the command shell-quoted."""
  return ''.join(f'{job.name}\t{shlex.join(job.command(python))}\n' for job in jobs)


def run_list_path(root: str, sweep_name: str, content: str) -> str:
  digest = hashlib.sha256(content.encode()).hexdigest()[:10]
  return os.path.join(root, 'slurm', f'{sweep_name}-{digest}.runs')


def sbatch_options(sweep_name: str, root: str, num_tasks: int, res: Resources) -> list[str]:
  throttle = f'%{res.max_parallel}' if res.max_parallel else ''
  options = [
      f'--job-name={sweep_name}',
      f'--array=0-{num_tasks - 1}{throttle}',
      f'--output={os.path.join(root, "slurm", sweep_name)}-%A_%a.out',
      '--open-mode=append',  # a requeued task appends to its log
      '--requeue',
      f'--signal=B:USR1@{res.signal_lead_s}',
      f'--time={res.time}',
  ]
  if res.gpus_per_run:
    options.append(f'--gres=gpu:{res.gpus_per_run}')
  if res.cpus_per_run:
    options.append(f'--cpus-per-task={res.cpus_per_run}')
  if res.partition:
    options.append(f'--partition={res.partition}')
  return options + list(res.extra)


_BODY = r'''
set -uo pipefail
cd {cwd}
export PYTHONPATH={pythonpath}${{PYTHONPATH:+:$PYTHONPATH}}

line=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {run_list})
name=${{line%%$'\t'*}}
command=${{line#*$'\t'}}
log={root}/$name/{log_file}
mkdir -p "$(dirname "$log")"
task=${{SLURM_ARRAY_JOB_ID}}_$SLURM_ARRAY_TASK_ID
echo "=== $(date '+%F %T') slurm job $SLURM_JOB_ID (task $task," \
  "restart ${{SLURM_RESTART_COUNT:-0}}) on $(hostname): $command" | tee -a "$log"

eval "set -- $command"
"$@" >> "$log" 2>&1 &
child=$!

# Forward USR1 (time limit near) and TERM (scancel, preemption) to python; it
# checkpoints and exits with status 3. Bash runs a trap only between commands, so
# python runs in the background and the script waits on it.
received=''
forward() {{
  received=$1
  echo "$(date '+%F %T') got SIG$1, forwarding it to the main job (pid $child)" | tee -a "$log"
  kill -s "$1" "$child" 2>/dev/null
}}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

while true; do
  wait "$child"
  status=$?
  kill -0 "$child" 2>/dev/null || break  # still running: wait was cut short by a trap
done
echo "$(date '+%F %T') $name: main job exited with status $status" | tee -a "$log"

if [[ $received == USR1 && $status -ne 0 ]]; then
  echo "$(date '+%F %T') requeueing job $SLURM_JOB_ID to resume $name" | tee -a "$log"
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
'''


def script(sweep: plan.Sweep, root: str, jobs: list[plan.Job], run_list_file: str,
           res: Resources, pythonpath: str) -> str:
  """The sbatch array script of the sweep's jobs."""
  header = [
      '#!/bin/bash',
      f'# Written by launch.sweep for {sweep.path} ({sweep.config.figure}):',
      f'# {len(jobs)} array tasks, task i runs line i+1 of {run_list_file}.',
      '# See launch/slurm.py for the signal and requeue contract with spos_jax.main.',
  ] + [f'#SBATCH {option}' for option in sbatch_options(sweep.name, root, len(jobs), res)]
  body = _BODY.format(cwd=shlex.quote(os.getcwd()), pythonpath=shlex.quote(pythonpath),
                      run_list=shlex.quote(run_list_file), root=shlex.quote(root),
                      log_file=plan.LOG_FILE)
  return '\n'.join(header) + '\n' + body


def write(sweep: plan.Sweep, root: str, jobs: list[plan.Job], res: Resources,
          pythonpath: str, python: str) -> str:
  """Write the run list and ROOT/<sweep>.sbatch; returns the script's path."""
  content = run_list(jobs, python)
  list_file = run_list_path(root, sweep.name, content)
  path = os.path.join(root, f'{sweep.name}.sbatch')
  try:
    os.makedirs(os.path.dirname(list_file), exist_ok=True)
    with open(list_file, 'w') as f:
      f.write(content)
    with open(path, 'w') as f:
      f.write(script(sweep, root, jobs, list_file, res, pythonpath))
  except OSError as e:  # e.g. ROOT/slurm is a file
    raise plan.SweepError(f'cannot write the Slurm script {path} or its run list '
                          f'{list_file}: {e}') from None
  return path


def submit(script_path: str) -> str:
  """sbatch the script; returns the array job id."""
  if shutil.which('sbatch') is None:
    raise plan.SweepError(
        'sbatch is not on PATH: --backend=slurm needs a Slurm client here. Pass --dry_run to '
        f'only write {script_path} and submit it elsewhere with `sbatch {script_path}`')
  result = subprocess.run(['sbatch', '--parsable', script_path], capture_output=True,
                          text=True, check=False)
  if result.returncode != 0:
    raise plan.SweepError(f'sbatch {script_path} failed (status {result.returncode}): '
                          f'{result.stderr.strip() or result.stdout.strip()}')
  return result.stdout.strip().split(';')[0]  # 'ID' or 'ID;CLUSTER'


def wait_for(job_id: str, poll_s: float = 2.0) -> None:
  """Block until no task of the array job is pending, running or requeued."""
  while True:
    result = subprocess.run(['squeue', '-h', '-j', job_id, '-o', '%i'], capture_output=True,
                            text=True, check=False)
    # squeue forgets finished jobs after MinJobAge and then calls the id invalid.
    if result.returncode != 0 and 'Invalid job id' not in result.stderr:
      raise plan.SweepError(f'squeue -j {job_id} failed: {result.stderr.strip()}')
    if result.returncode != 0 or not result.stdout.strip():
      return
    time.sleep(poll_s)
