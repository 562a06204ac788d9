"""Shared fixtures of the space/model/sampling/train/config tests: tiny configs and data.

Everything here is sized for a 2-core CPU: C=4, N=1, batch 8, a few hundred synthetic
images, fp32. Expensive objects (device data, initialised variables) are built once
per test run.

XLA:CPU compiles the super-network slowly (~15 s for an init or a train step), and
`train.train` jits fresh closures on every call, so identical programs are compiled
again. Two settings, made before jax starts and passed to every child process
through the environment, cut that:
- XLA:CPU's quick pipeline (FAST_COMPILE) for every program, the package's too:
  about half the compile time, and the tiny programs run about as fast. Its fused
  kernels come from the LLVM elemental emitters instead of the MLIR fusion emitters
  (xla_cpu_use_fusion_emitters=false): the tiny train step compiles in 2.2 s instead
  of 3.3 s.
  SPOS_TEST_FAST_COMPILE=0 keeps XLA's default pipeline.
- A persistent compilation cache in a temporary folder (this test run only), so the
  second and later compilations of the same program, in this process or a child,
  load the first's result. SPOS_TEST_COMPILE_CACHE=0 turns it off.
XLA:CPU compiles on one thread, so the suite runs in two processes (`pytest -n 2
--dist worksteal`, pytest-xdist: a worker that runs out of tests takes some of the
other's, so one long file does not hold the end of the run); the workers inherit both
settings, and so share the cache: a module fixture built in both workers compiles once.
"""
import atexit
import os
from pathlib import Path
import shutil
import tempfile

# XLA:CPU options: read from XLA_FLAGS when jax starts its backend, so set first
# (once: pytest-xdist's workers inherit them from the process that starts them).
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True,
                'xla_cpu_use_fusion_emitters': False}
_FAST_FLAGS = [f'--{k}={str(v).lower()}' for k, v in FAST_COMPILE.items()]
if (os.environ.get('SPOS_TEST_FAST_COMPILE', '1') != '0'
    and _FAST_FLAGS[0] not in os.environ.get('XLA_FLAGS', '')):
  os.environ['XLA_FLAGS'] = ' '.join(filter(None, [os.environ.get('XLA_FLAGS', '')] + _FAST_FLAGS))
# Workers of `pytest -n N` share one accelerator: none may take most of its memory.
if os.environ.get('PYTEST_XDIST_WORKER'):
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp
import numpy as np
import pytest

from spos_jax import config as config_lib
from spos_jax import model as model_lib
from spos_jax import run as run_lib
from spos_jax import train

def _enable_compilation_cache():
  """A persistent compilation cache for this test run, this process's and its children's
  (jax reads the JAX_* variables when it starts); must run before the first compile."""
  if os.environ.get('SPOS_TEST_COMPILE_CACHE', '1') == '0' or jax.config.jax_compilation_cache_dir:
    return
  folder = tempfile.mkdtemp(prefix='spos-jax-test-xla-cache-')
  atexit.register(shutil.rmtree, folder, ignore_errors=True)
  settings = {'jax_compilation_cache_dir': folder,
              'jax_persistent_cache_min_compile_time_secs': 1.0,
              'jax_persistent_cache_min_entry_size_bytes': 0}
  for name, value in settings.items():
    jax.config.update(name, value)
    os.environ[name.upper()] = str(value)


_enable_compilation_cache()


def fast_jit(fun=None, **kwargs):
  """jax.jit with FAST_COMPILE; usable as @fast_jit or @fast_jit(static_argnums=0)."""
  if fun is None:
    return lambda f: fast_jit(f, **kwargs)
  return jax.jit(fun, compiler_options=FAST_COMPILE, **kwargs)


# A tiny run: 350 train images, batch 8 -> 43 micro-batches an epoch.
TINY = {
    'seeds': (0,),
    'model.channels': 4,
    'model.cells_per_stage': 1,
    'train.batch_size': 8,
    'train.precision': 'fp32',
    'train.epochs': 1,
    'train.steps_per_dispatch': 1,
    'train.log_every_steps': 1,
    'train.checkpoint_every_steps': 4,
    'data.source': 'synthetic',
    'data.synthetic_size': 400,
    'data.val_size': 50,
    'bench.path': 'none',  # ranking only where a test asks for it
}


def set_fields(config, fields):
  """Set dotted keys ('train.lr') on a ConfigDict; returns the config."""
  for key, value in fields.items():
    *parents, leaf = key.split('.')
    node = config
    for p in parents:
      node = node[p]
    node[leaf] = value
  return config


def make_tiny_config(**fields):
  """base_config() shrunk to TINY, then `fields` ('train__lr' or 'train.lr' keys)."""
  config = set_fields(config_lib.base_config(), TINY)
  return set_fields(config, {k.replace('__', '.'): v for k, v in fields.items()})


@pytest.fixture(scope='session')
def tiny_config():
  """Factory: tiny_config(**{'sampling.topology': 'unshared'}) -> a fresh config."""
  return make_tiny_config


@pytest.fixture(scope='session')
def tiny_data():
  """Device data of the tiny config: 350 train and 50 validation synthetic images."""
  return train.load_device_data(make_tiny_config())


@pytest.fixture(scope='session')
def images():
  """Random float images [5, 4, 32, 32, 3]: five micro-batches of four images."""
  rng = np.random.default_rng(0)
  return jnp.asarray(rng.normal(size=(5, 4, 32, 32, 3)), jnp.float32)


def random_variables(net, seed=0):
  """Variables of a SuperNet drawn at random by name, without compiling its init.

  Kernels ~ N(0, 1/fan_in), BN scale ~ 1 + N(0, .1), biases ~ N(0, .1); running means
  ~ N(0, .5), running vars in [.5, 2], so that the running statistics matter.
  """
  path = None if net.fixed_arch is not None else jnp.zeros(6, jnp.int32)
  shapes = jax.eval_shape(lambda: net.init(
      jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32), path, train=True))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      value = rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape)
    elif name == 'scale':
      value = 1 + rng.normal(0, 0.1, leaf.shape)
    elif name in ('bias', 'mean'):
      value = rng.normal(0, 0.1 if name == 'bias' else 0.5, leaf.shape)
    else:
      value = rng.uniform(0.5, 2.0, leaf.shape)
    return jnp.asarray(value, jnp.float32)
  return jax.tree_util.tree_map_with_path(draw, dict(shapes))


@pytest.fixture(scope='session')
def supernet():
  """The tiny super-network over all five ops (C=4, N=1, fp32)."""
  return model_lib.SuperNet(channels=4, cells_per_stage=1)


@pytest.fixture(scope='session')
def supernet_variables(supernet):
  """Random variables of the tiny super-network (params and running statistics)."""
  return random_variables(supernet)


def snapshot(folder) -> dict[str, bytes]:
  """Every file under folder (relative path -> bytes)."""
  files = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        files[os.path.relpath(path, folder)] = f.read()
  return files


def train_and_evaluate_capturing(config, workdir) -> tuple:
  """run.train_and_evaluate; the (states, data) that its evaluation ranked with."""
  seen = {}
  original = run_lib.evaluate_run

  def spy(config_, workdir_, states, data, **kwargs):
    seen.update(states=states, data=data)
    return original(config_, workdir_, states, data, **kwargs)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(run_lib, 'evaluate_run', spy)
    run_lib.train_and_evaluate(config, workdir)
  assert seen, 'train_and_evaluate did not evaluate'
  return seen['states'], seen['data']


# ---------------------------------------------------------------------------
# Test data from outside the package

# A few tests compare against a plain-CSV copy of the NAS-Bench-201 table kept outside
# the package (the package ships the same table gzipped; tests/test_bench.py checks
# that the two hold the same bytes). SPOS_JAX_TEST_DATA names the folder that holds it
# as nb201/nb201_table.csv; without it the tests look in shared/data/ beside the
# repository's folder. Where the file is absent, the tests that need it skip.
TEST_DATA = Path(os.environ.get('SPOS_JAX_TEST_DATA')
                 or Path(__file__).resolve().parents[2] / 'shared' / 'data')
NB201_TABLE = TEST_DATA / 'nb201' / 'nb201_table.csv'


@pytest.fixture(scope='session')
def nb201_table() -> Path:
  """NB201_TABLE, the plain-CSV NB201 table; skips the test where it is absent."""
  if not NB201_TABLE.is_file():
    pytest.skip(f'no NB201 table at {NB201_TABLE} (SPOS_JAX_TEST_DATA names a folder '
                f'holding nb201/nb201_table.csv)')
  return NB201_TABLE
