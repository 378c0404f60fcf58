"""Held-out compositions: an in-repo LM that learnt every single problem but only some compositions.

The paper's models (Hosseini et al., arXiv 2410.01748) learnt grade-school problems one at a time and meet the
chained format only at test time. The in-repo LM trained on all four formats (`lm.train_mix`) has seen
compositions of every template combination and shows no gap. This variant splits the ordered
(Q1 template, Q2 template) combinations in two (`heldout_combinations`):

  q2_template    a combination is held out when its Q2 template is in a held-out share of the templates
                 (seeded): those templates are never the X-substituted second question in training;
  template_pair  a seeded share of all ordered combinations is held out: every template is seen as Q1 and
                 as Q2 of some compositions, only the held-out pairings are new.

One LM (`models/inrepo_heldout/lm/`) is trained on the in-repo LM's training pairs: Q1 and Q2 alone (and the
`indep` diagnostic, which has no X) from every pair, the compositional format only from pairs whose
combination is not held out. It is evaluated as two models, on test pairs built for each:

  inrepo_heldout       pairs of held-out combinations only (`heldout.num_pairs`): the single problems of
                       their templates were learnt, their composition never was;
  inrepo_heldout_seen  the same LM on pairs of combinations not held out (new questions; with the default
                       split 94 % of them are combinations among its training compositions): the control,
                       so that a gap on held-out combinations is not a property of the LM alone.

Training pairs that share any question with either test set are dropped (as for `inrepo`).
"""

import hashlib
import itertools
import os
from typing import Dict, FrozenSet, Iterable, List, Optional, Tuple

import ml_collections

from common.errors import ConfigError
from eval_gsm import core, pairs as pairs_lib, templates as templates_lib

HELDOUT = 'inrepo_heldout'
SEEN = 'inrepo_heldout_seen'
MODELS = (HELDOUT, SEEN)
BY = ('q2_template', 'template_pair')
LM_DIR = os.path.join('models', HELDOUT, 'lm')  # Relative to the workdir; shared by both models.
PAIRS_FILE = 'pairs.jsonl'  # In each model's directory.

Combination = Tuple[str, str]


def _score(seed: int, *names: str) -> int:
  """A stable pseudo-random rank of ``names`` for ``seed`` (Python's own hash of str varies per process)."""
  return int.from_bytes(hashlib.sha256('|'.join((str(seed), *names)).encode()).digest()[:8], 'big')


def all_combinations(names: Iterable[str]) -> FrozenSet[Combination]:
  """Every ordered (Q1 template, Q2 template) pair of two different templates."""
  return frozenset(itertools.permutations(sorted(names), 2))


def heldout_combinations(
  by: str, fraction: float, seed: int, names: Optional[Iterable[str]] = None
) -> FrozenSet[Combination]:
  """The held-out (Q1 template, Q2 template) combinations of the templates ``names`` (default: the bank).

  ``q2_template``: the ``round(fraction * n)`` templates ranked first by a seeded hash are held out as Q2,
  and every combination whose Q2 is one of them is held out. ``template_pair``: the
  ``round(fraction * n * (n - 1))`` ordered combinations ranked first are held out. Deterministic in ``seed``.
  """
  names = sorted(templates_lib.TEMPLATES if names is None else names)
  if by not in BY:
    raise ConfigError(f'heldout.by must be one of {list(BY)}, got {by!r}')
  if not 0.0 < fraction < 1.0:
    raise ConfigError(f'heldout.fraction must be in (0, 1), got {fraction!r}')
  combos = all_combinations(names)
  if by == 'q2_template':
    ranked = sorted(names, key=lambda n: _score(seed, n))
    held = set(ranked[: round(fraction * len(names))])
    out = frozenset(c for c in combos if c[1] in held)
  else:
    ranked = sorted(combos, key=lambda c: _score(seed, *c))
    out = frozenset(ranked[: round(fraction * len(ranked))])
  if not out or out == combos:
    raise ConfigError(
      f'heldout.fraction {fraction} of {len(names)} templates holds out {len(out)} of {len(combos)} '
      'combinations; choose a fraction that leaves some on both sides'
    )
  return out


def combinations_of(
  config: ml_collections.ConfigDict,
) -> Tuple[FrozenSet[Combination], FrozenSet[Combination]]:
  """(held-out, trained) combinations of the config's `heldout` settings."""
  h = config.heldout
  held = heldout_combinations(h.by, h.fraction, h.seed)
  return held, all_combinations(templates_lib.TEMPLATES) - held


def validate(config: ml_collections.ConfigDict) -> None:
  if not any(m in MODELS for m in config.models):
    return
  if config.gsm8k_path or config.compositional_path:
    raise ConfigError(
      f'{HELDOUT} and {SEEN} hold out template combinations, so they need generated pairs; '
      'leave gsm8k_path and compositional_path empty or drop them from models'
    )
  h = config.heldout
  if not isinstance(h.num_pairs, int) or h.num_pairs <= 0:
    raise ConfigError(f'heldout.num_pairs must be a positive int, got {h.num_pairs!r}')
  if not isinstance(h.lm_steps, int) or h.lm_steps <= 0:
    raise ConfigError(f'heldout.lm_steps must be a positive int, got {h.lm_steps!r}')
  combinations_of(config)  # Raises on a bad `by` or `fraction`.


def lm_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The LM of the held-out models: `config.lm` with `heldout.lm_steps` steps."""
  lm = ml_collections.ConfigDict(config.lm.to_dict())
  lm.steps = config.heldout.lm_steps
  return lm


def test_pairs(config: ml_collections.ConfigDict, workdir: str) -> Dict[str, List[core.Pair]]:
  """{model: its test pairs}: read back from ``models/<model>/pairs.jsonl``, else built and written there.

  Both sets come from `pair_seed`, `heldout.num_pairs` each: held-out combinations for `inrepo_heldout`,
  the others for `inrepo_heldout_seen`.
  """
  paths = {name: os.path.join(workdir, 'models', name, PAIRS_FILE) for name in MODELS}
  if all(os.path.exists(p) for p in paths.values()):
    return {name: pairs_lib.read_pairs_jsonl(p) for name, p in paths.items()}
  held, trained = combinations_of(config)
  out = {}
  for name, combos in ((HELDOUT, held), (SEEN, trained)):
    out[name] = pairs_lib.build_pairs(config.heldout.num_pairs, config.pair_seed, combinations=combos)
    os.makedirs(os.path.dirname(paths[name]), exist_ok=True)
    pairs_lib.write_pairs_jsonl(paths[name], out[name])
  return out
