"""The swept hyper-parameters of DER and DrQ(eps): names, kinds, value grids and each agent's defaults.

A hyper-parameter has one of three kinds, which decides how a sweep runs it:

  * ``traced``: a leaf of ``common.rl.dqn.HParams`` (learning rate, Adam eps, discount, epsilon-train,
    target update period, update period, weight decay, minimum replay history). Every value shares one
    compiled program: the runs are stacked and vmapped.
  * ``masked``: also an ``HParams`` leaf, but it indexes a static size, so the program is compiled for the
    largest value of the grid and smaller values are masks inside it: the update horizon (``n_step`` within
    ``Config.max_n_step``) and the batch size (``batch_size`` within ``Config.batch_size``). Tested equal to
    unmasked runs in ``common/rl/dqn_test.py``.
  * ``static``: changes the network (activation, normalisation, width, depth); each value compiles its own
    program.

Defaults are Dopamine's Atari 100k agents (``labs/atari_100k/configs/DER.gin`` and ``DrQ_eps.gin``, research
note ``rl_value_based.md`` §1.2): update horizon 10, minimum replay 1600, update period 1, batch 32, Adam 1e-4
with eps 1.5e-4, gamma 0.99, epsilon-train 0.01, target update 2000 (DER) or 1 (DrQ(eps): no target network).
The network defaults are the MinAtar ones of this project (``rl_hparams.networks``).

Which 12 hyper-parameters the paper swept, and its value grids, could not be read here (research note §7);
``HYPERPARAMETERS`` has the 10 numeric ones of the research note's reduced design (§5.2, 4 values each) and
the 4 network ones the paper names (activation, normalisation, width, depth).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from typing import Any, Dict, List, Sequence, Tuple

from common.errors import ConfigError

AGENTS = ('DER', 'DrQ_eps')
KINDS = ('traced', 'masked', 'static')


@dataclasses.dataclass(frozen=True)
class Spec:
  """One hyper-parameter.

  Attributes:
    name: the sweep's name (the CSV's ``hyperparameter`` column).
    kind: 'traced', 'masked' or 'static' (module docstring).
    field: the ``HParams`` field (traced, masked) or the network option (static) it sets.
    grid: the values swept by default, in order.
    defaults: the value each agent uses when another hyper-parameter is swept.
    type: ``float``, ``int`` or ``str``: values are converted to it and checked.
    minimum, maximum: the closed range a numeric value must lie in (None: unbounded).
    choices: the allowed values of a ``str`` hyper-parameter.
  """

  name: str
  kind: str
  field: str
  grid: Tuple[Any, ...]
  defaults: Dict[str, Any]
  type: type
  minimum: Any = None
  maximum: Any = None
  choices: Tuple[str, ...] = ()

  def convert(self, value: Any) -> Any:
    """``value`` as this hyper-parameter's type; raises ConfigError when it is out of the schema."""
    try:
      if self.type is str:
        out = str(value)
      elif self.type is int:
        if isinstance(value, bool) or float(value) != int(float(value)):
          raise ValueError
        out = int(float(value))
      else:
        out = float(value)
    except (TypeError, ValueError):
      raise ConfigError(
        f'{self.name} takes {self.type.__name__} values, got {value!r}; e.g. {self.grid}'
      ) from None
    if self.choices and out not in self.choices:
      raise ConfigError(f'{self.name} must be one of {", ".join(self.choices)}, got {value!r}')
    if self.type is not str:
      if not math.isfinite(out):
        raise ConfigError(f'{self.name} must be finite, got {value!r}')
      if self.minimum is not None and out < self.minimum:
        raise ConfigError(f'{self.name} must be >= {self.minimum}, got {value!r}')
      if self.maximum is not None and out > self.maximum:
        raise ConfigError(f'{self.name} must be <= {self.maximum}, got {value!r}')
    return out


def _both(value: Any) -> Dict[str, Any]:
  return {agent: value for agent in AGENTS}


HYPERPARAMETERS: Dict[str, Spec] = {
  s.name: s
  for s in (
    Spec('learning_rate', 'traced', 'learning_rate', (3e-5, 1e-4, 3e-4, 1e-3), _both(1e-4), float, 0.0),
    Spec('adam_eps', 'traced', 'adam_eps', (1.5e-6, 1.5e-5, 1.5e-4, 1.5e-3), _both(1.5e-4), float, 1e-12),
    Spec('gamma', 'traced', 'gamma', (0.9, 0.97, 0.99, 0.995), _both(0.99), float, 0.0, 1.0),
    Spec('epsilon_train', 'traced', 'eps_end', (0.0, 0.01, 0.05, 0.1), _both(0.01), float, 0.0, 1.0),
    Spec(
      'target_update_period',
      'traced',
      'target_update_period',
      (1, 100, 1000, 2000),
      {'DER': 2000, 'DrQ_eps': 1},
      int,
      1,
    ),
    Spec('update_horizon', 'masked', 'n_step', (1, 3, 5, 10), _both(10), int, 1, 20),
    Spec('update_period', 'traced', 'update_period', (1, 2, 4, 8), _both(1), int, 1, 64),
    Spec('batch_size', 'masked', 'batch_size', (8, 16, 32, 64), _both(32), int, 1, 512),
    Spec('weight_decay', 'traced', 'weight_decay', (0.0, 1e-4, 1e-3, 1e-2), _both(0.0), float, 0.0),
    Spec('min_replay_history', 'traced', 'learning_starts', (100, 500, 1600, 5000), _both(1600), int, 0),
    Spec(
      'activation',
      'static',
      'activation',
      ('relu', 'gelu', 'silu', 'tanh'),
      _both('relu'),
      str,
      choices=('relu', 'gelu', 'silu', 'tanh', 'elu', 'leaky_relu', 'sigmoid'),
    ),
    Spec(
      'normalization',
      'static',
      'normalization',
      ('none', 'layer_norm', 'rms_norm'),
      _both('none'),
      str,
      choices=('none', 'layer_norm', 'rms_norm'),
    ),
    Spec('width', 'static', 'width', (32, 64, 128, 256), _both(128), int, 1, 4096),
    Spec('depth', 'static', 'depth', (1, 2, 3, 4), _both(1), int, 1, 8),
  )
}
"""Every hyper-parameter a sweep may vary."""


def spec(name: str) -> Spec:
  """The spec of ``name``; ConfigError naming the close matches when it is unknown."""
  if name not in HYPERPARAMETERS:
    close = difflib.get_close_matches(name, list(HYPERPARAMETERS), n=3)
    hint = f'; did you mean {", ".join(close)}?' if close else ''
    raise ConfigError(f'unknown hyper-parameter {name!r}{hint} (known: {", ".join(HYPERPARAMETERS)})')
  return HYPERPARAMETERS[name]


def check_agent(agent: str) -> str:
  if agent not in AGENTS:
    raise ConfigError(f'unknown agent {agent!r}: choose from {", ".join(AGENTS)}')
  return agent


def defaults(agent: str, overrides: Dict[str, Any] | None = None) -> Dict[str, Any]:
  """``{hyper-parameter: default}`` of ``agent``, with ``overrides`` (checked) replacing some (e.g. a shorter
  minimum replay for a CPU smoke run)."""
  check_agent(agent)
  out = {name: s.defaults[agent] for name, s in HYPERPARAMETERS.items()}
  for name, value in (overrides or {}).items():
    out[name] = spec(name).convert(value)
  return out


def format_value(value: Any) -> str:
  """The CSV spelling of a value: ``repr`` of floats (exact round trip), ``str`` otherwise."""
  return repr(float(value)) if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class Setting:
  """One point of a one-at-a-time sweep: the agent's defaults with ``hyperparameter`` set to ``value``
  (``hyperparameter`` None: the defaults themselves)."""

  agent: str
  hyperparameter: Any
  value: Any
  values: Tuple[Tuple[str, Any], ...]  # Every hyper-parameter's value, in HYPERPARAMETERS order.

  @property
  def run_id(self) -> str:
    if self.hyperparameter is None:
      return 'default'
    return f'{self.hyperparameter}={format_value(self.value)}'

  def as_dict(self) -> Dict[str, Any]:
    return dict(self.values)

  def static_key(self) -> Tuple[Tuple[str, Any], ...]:
    """The static (network) values: settings with equal keys share one compiled program."""
    return tuple((n, v) for n, v in self.values if HYPERPARAMETERS[n].kind == 'static')


def grids(sweep: Dict[str, Sequence[Any]] | Sequence[str]) -> Dict[str, List[Any]]:
  """``{name: values}`` checked against the schema, from a mapping (explicit values) or a list of names (the
  default grids). Empty value lists take the default grid."""
  names = list(sweep) if not isinstance(sweep, dict) else list(sweep.keys())
  if not names:
    raise ConfigError(
      'the sweep names no hyper-parameter; give at least one of ' + ', '.join(HYPERPARAMETERS)
    )
  out = {}
  for name in names:
    s = spec(name)
    given = sweep[name] if isinstance(sweep, dict) else ()
    values = [s.convert(v) for v in (given or s.grid)]
    if len(values) < 2:
      raise ConfigError(f'{name} needs at least 2 values to rank, got {values}')
    if len(set(values)) != len(values):
      raise ConfigError(f'{name} repeats a value: {values}')
    out[name] = values
  return out


def one_at_a_time(
  agent: str, sweep: Dict[str, List[Any]], overrides: Dict[str, Any] | None = None
) -> Tuple[List[Setting], Dict[Tuple[str, Any], str]]:
  """The distinct settings of a one-at-a-time sweep around ``agent``'s defaults, and which run represents each
  (hyper-parameter, value) pair: ``{(name, value): run_id}``.

  The defaults run once and stand for every hyper-parameter's default value (whether or not the grid lists it;
  when it does not, the default is ranked as one more value)."""
  base = defaults(agent, overrides)
  order = list(HYPERPARAMETERS)

  def setting(name, value):
    values = dict(base)
    if name is not None:
      values[name] = value
    return Setting(agent, name, value, tuple((n, values[n]) for n in order))

  settings = [setting(None, None)]
  represents = {}
  for name, values in sweep.items():
    represents[(name, base[name])] = 'default'
    for value in values:
      if value == base[name]:
        continue
      s = setting(name, value)
      settings.append(s)
      represents[(name, value)] = s.run_id
  return settings, represents
