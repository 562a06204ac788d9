"""Data parallelism: two (faked) CPU devices compute what one device computes."""
import os
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = '''
import sys
import jax
import numpy as np
from spos_jax import config as config_lib, sharding, train
c = config_lib.base_config()
c.seeds = (0, 1)
c.model.channels, c.model.cells_per_stage = 2, 1
c.train.batch_size, c.train.precision, c.train.steps_per_dispatch = 8, 'fp32', 1
c.data.source, c.data.synthetic_size, c.data.val_size = 'synthetic', 300, 50
data = train.load_device_data(c)
model = train.create_model(c)
tx = train.create_optimizer(c, data.num_train)
mesh = sharding.data_mesh()
states, data = sharding.replicate((train.init_states(model, tx, c.seeds), data), mesh)
step = train.make_train_chunk(c, model, tx, 100, 1, mesh)
for _ in range(3):
  states, _ = step(states, data)
leaves = jax.device_get(jax.tree.leaves((states.params, states.batch_stats)))
np.save(sys.argv[1], np.concatenate([np.ravel(x) for x in leaves]))
print('devices', jax.device_count(), 'sharded', mesh is not None)
'''


def _train(tmp_path, devices: int) -> np.ndarray:
  out = tmp_path / f'params_{devices}.npy'
  env = dict(os.environ, PYTHONPATH=str(ROOT),
             XLA_FLAGS=f'{os.environ.get("XLA_FLAGS", "")} '
                       f'--xla_force_host_platform_device_count={devices}')
  proc = subprocess.run([sys.executable, '-c', _SCRIPT, str(out)], env=env, cwd=ROOT,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'devices {devices} sharded {devices > 1}' in proc.stdout
  return np.load(out)


@pytest.mark.slow
def test_two_devices_match_one(tmp_path):
  """Three fair-group steps, batch split over 2 devices == on 1 device (float error)."""
  one = _train(tmp_path, 1)
  two = _train(tmp_path, 2)
  assert one.shape == two.shape
  # Splitting the batch changes the order of the gradient and BN sums; after three
  # steps that is a few 1e-6 on weights of order 0.1 (more under XLA's quick
  # pipeline, which the test suite uses).
  np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-5)


def test_batch_must_divide_over_devices():
  from spos_jax import sharding  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh  # pylint: disable=g-import-not-at-top
  mesh = Mesh(np.asarray(jax.devices() * 1), ('data',))
  sharding.check_batch_size(8, mesh)
  sharding.check_batch_size(7, None)
  fake = type('FakeMesh', (), {'size': 3})()
  with pytest.raises(ValueError, match='divisible by the 3 devices'):
    sharding.check_batch_size(8, fake)
