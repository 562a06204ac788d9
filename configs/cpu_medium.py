"""CPU-medium: configs/cpu_small.py with twice the channels and twice the cells (C=16, N=2).

The `m-*` runs of the CPU-scale reproduction queue; everything but the network's size
is CPU-small's protocol (see that file's docstring for the data, groups, trajectory
and the command).

The rates of both sizes, measured on the 2-core machine, and the queue's arithmetic
are in configs/cpu_small.py's docstring; the commands in BUILD.md, "CPU scale".
"""
import importlib.util
import os


def _cpu_small():
  """configs/cpu_small.py, loaded from beside this file (config files are not a package)."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'cpu_small.py')
  spec = importlib.util.spec_from_file_location('cpu_small', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def get_config():
  config = _cpu_small().get_config()
  config.model.channels = 16
  config.model.cells_per_stage = 2
  return config
