"""Tests for common.config."""

import json

import ml_collections
import pytest

from common import config as config_lib
from common.errors import ConfigError


def test_parse_arg_defaults_and_typed_overrides():
  arg = config_lib.parse_arg(
    'smoke,seeds=5,lr=3e-4,env=Pong,steps=1e5',
    smoke=False,
    seeds=1,
    lr=1e-3,
    env='Breakout',
    steps=10,
    extra=None,
  )
  assert arg.smoke is True
  assert arg.seeds == 5 and isinstance(arg.seeds, int)
  assert arg.lr == pytest.approx(3e-4) and isinstance(arg.lr, float)
  assert arg.env == 'Pong'
  assert arg.steps == 100000 and isinstance(arg.steps, int)
  assert arg.extra is None


@pytest.mark.parametrize('arg', [None, '', ' , '])
def test_parse_arg_empty_gives_defaults(arg):
  assert config_lib.parse_arg(arg, smoke=False, seeds=2).to_dict() == {'smoke': False, 'seeds': 2}


@pytest.mark.parametrize('text,value', [('true', True), ('0', False), ('no', False), ('on', True)])
def test_parse_arg_bool_values(text, value):
  assert config_lib.parse_arg(f'flag={text}', flag=not value).flag is value


@pytest.mark.parametrize(
  'text,value', [('7', 7), ('-2.5', -2.5), ('none', None), ('false', False), ('abc', 'abc')]
)
def test_parse_arg_untyped_default_guesses(text, value):
  assert config_lib.parse_arg(f'x={text}', x=None).x == value


def test_unknown_key_names_nearest_valid_keys():
  with pytest.raises(ConfigError) as e:
    config_lib.parse_arg('smok', smoke=False, seeds=1)
  message = str(e.value)
  assert "unknown config argument 'smok'" in message
  assert "did you mean 'smoke'" in message
  assert 'valid: seeds, smoke' in message
  assert '\n' not in message


@pytest.mark.parametrize(
  'arg,fragment',
  [
    ('seeds=abc', "'seeds' expects int"),
    ('seeds=1.5', "'seeds' expects int"),
    ('lr=fast', "'lr' expects float"),
    ('smoke=maybe', "'smoke' expects bool"),
    ('seeds', "'seeds' needs a value"),
    ('seeds=1,seeds=2', 'given twice'),
  ],
)
def test_bad_values_are_one_clear_line(arg, fragment):
  with pytest.raises(ConfigError) as e:
    config_lib.parse_arg(arg, smoke=False, seeds=1, lr=0.1)
  assert fragment in str(e.value)
  assert '\n' not in str(e.value)


def test_config_error_is_key_and_value_error():
  with pytest.raises(KeyError):
    config_lib.parse_arg('nope', a=1)
  with pytest.raises(ValueError):
    config_lib.parse_arg('a=x', a=1)


def test_load_config_file_with_arg(tmp_path):
  path = tmp_path / 'cfg.py'
  path.write_text(
    'from common import config as c\n'
    'def get_config(arg=None):\n'
    '  arg = c.parse_arg(arg, smoke=False)\n'
    '  return c.ml_collections.ConfigDict({"steps": 3 if arg.smoke else 100})\n'
  )
  assert config_lib.load_config(str(path)).steps == 100
  config = config_lib.load_config(f'{path}:smoke')
  assert config.steps == 3
  with pytest.raises(AttributeError):  # Locked: a typo cannot add a key.
    config.stpes = 4
  with pytest.raises(ConfigError, match='does not exist'):
    config_lib.load_config(str(tmp_path / 'missing.py'))


def test_to_dict_flatten_and_diff():
  a = ml_collections.ConfigDict({'lr': 0.1, 'model': {'width': 64, 'depth': 2}, 'name': 'x'})
  b = ml_collections.ConfigDict({'lr': 0.1, 'model': {'width': 128, 'depth': 2}, 'seed': 1, 'name': 'x'})
  da, db = config_lib.to_dict(a), config_lib.to_dict(b)
  assert json.loads(json.dumps(da)) == da
  assert config_lib.flatten(da) == {'lr': 0.1, 'model.depth': 2, 'model.width': 64, 'name': 'x'}
  assert config_lib.diff(da, db) == ['model.width', 'seed']
  assert config_lib.diff(da, da) == []
