"""Launching the paper's sweeps (configs/sweeps/) as spos_jax.main jobs.

grid.py    run names and overrides of the experiment grid (docs/method.md, 'Experiment grid')
plan.py    sweep file -> jobs: resolved configs, commands, finished or not, sweep.json
local.py   run jobs here, one per GPU (group) in parallel
slurm.py   one sbatch array script per sweep, requeued before its time limit
sweep.py   the command line: python -m launch.sweep --sweep=... --root=...
"""
