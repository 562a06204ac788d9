"""spos_jax.cli and the main program's command line: one line and exit 2 for user errors."""
import json
import os
import re
from pathlib import Path
import subprocess
import sys

import pytest

from spos_jax import cli
from spos_jax import config as config_lib

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('arg,suggestion', [
    ('--config.train.epoch=3', '--config.train.epochs'),
    ('--config.train_subset=3', '--config.data.train_subset'),
    ('--config.eval.bn_mod=batch', '--config.eval.bn_mode'),
])
def test_unknown_config_key_names_the_closest_valid_one(arg, suggestion):
  with pytest.raises(config_lib.ConfigError) as info:
    cli.check_config_arguments(['main', '--config=configs/tiny.py', arg])
  message = str(info.value)
  assert '\n' not in message
  assert f'did you mean {suggestion}?' in message


def test_known_keys_and_other_flags_pass():
  cli.check_config_arguments(['main', f'--config={REPO}/configs/tiny.py', '--workdir=/tmp/x',
                              '--config.train.epochs=3', '--config.seeds=(0,1)'])


def test_missing_config_file_lists_the_configs_beside_it():
  with pytest.raises(config_lib.ConfigError,
                     match='no such config file; configs there: .*small.py'):
    cli.check_config_arguments(['main', f'--config={REPO}/configs/nope.py'])


def test_config_listing_shows_values_and_meanings():
  listing = cli.config_listing(config_lib.base_config()).splitlines()
  assert "train.epochs = 250" in listing
  assert any(line.startswith("sampling.method = 'fair'  # ") for line in listing)
  assert len(listing) == len(config_lib.flatten(config_lib.base_config()))


def _main(*args):
  return subprocess.run([sys.executable, '-m', 'spos_jax.main', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS='cpu'))


@pytest.mark.parametrize('args,expected', [
    (('--config=configs/tiny.py', '--workdir=/tmp/x', '--config.train.epoch=3'),
     'error: unknown config key --config.train.epoch; did you mean --config.train.epochs?'),
    (('--config=configs/nope.py', '--workdir=/tmp/x'),
     'error: --config=configs/nope.py: no such config file'),
    (('--config=configs/tiny.py', '--workdir=/tmp/x', '--config.train.epochs=abc'),
     'error: flag --config.train.epochs=abc'),
    (('--config=configs/tiny.py',), 'error: --workdir=DIR is required'),
])
def test_main_reports_command_line_mistakes_in_one_line(args, expected):
  result = _main(*args)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith(expected), result.stderr[-2000:]


def test_main_print_config_lists_fields_without_a_workdir():
  result = _main('--config=configs/tiny.py', '--print_config')
  assert result.returncode == 0, result.stderr[-2000:]
  assert any(line.startswith('model.channels = 8  # ') for line in result.stdout.splitlines())


def _program(module, *args):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS='cpu'))


def _one_error_line(result) -> str:
  """The program's one line of error (absl's log lines, 'I1205 13:59:30 ...', aside)."""
  lines = [line for line in result.stderr.splitlines()
           if line.strip() and not re.match(r'[IWEF]\d{4} ', line)]
  assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: '), (
      result.returncode, result.stderr[-2000:])
  return lines[0]


@pytest.mark.parametrize('text,problem', [
    ('[1]', 'holds a JSON list'),
    ('{}', 'holds an empty JSON object'),
])
def test_config_json_that_is_no_run_record_is_one_line_naming_the_file(tmp_path, text,
                                                                      problem):
  """Valid JSON that is not a run's record, to both programs that read it."""
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(text)
  for module, args in (('spos_jax.main', ('--config=configs/tiny.py',)),
                       ('spos_jax.evaluate', ())):
    line = _one_error_line(_program(module, f'--workdir={workdir}', *args))
    assert f'{workdir / "config.json"} {problem}, not a config record of a run' in line


@pytest.mark.parametrize('name', ['../../elsewhere', '/tmp/elsewhere-abs'])
def test_evaluate_refuses_an_eval_name_that_is_a_path(tmp_path, name):
  """Results go to WORKDIR/results/<eval.name>: a path would put them elsewhere."""
  workdir = tmp_path / 'a' / 'b' / 'run'
  workdir.mkdir(parents=True)
  record = config_lib.flatten(config_lib.resolved(config_lib.base_config()))
  (workdir / 'config.json').write_text(json.dumps(record))
  line = _one_error_line(_program('spos_jax.evaluate', f'--workdir={workdir}',
                                  f'--config.eval.name={name}', '--overwrite'))
  assert f'eval.name={name!r} must be a plain folder name' in line
  assert sorted(os.listdir(tmp_path)) == ['a'] and not os.path.exists('/tmp/elsewhere-abs')
