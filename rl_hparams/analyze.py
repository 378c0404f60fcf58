"""THC from the programs of a sweep that have finished, without training anything:

    python -m rl_hparams.analyze --workdir=runs/gpu/rl_hparams/thc_minatar

Reads the workdir's `config.json`, every finished program's `runs.json` and the random scores, and writes
`sweep.csv`, `thc.json`, `thc_ranks.csv`, the plots, `report.md` and `results.json` as a finished sweep does;
when programs are missing, the claims and the report title say how many (see `train.analyze`).
"""

from __future__ import annotations

import json
import os

from absl import app
from absl import flags
import ml_collections

from common import results
from common.errors import ConfigError
from rl_hparams import sweep
from rl_hparams import train

_WORKDIR = flags.DEFINE_string('workdir', None, 'The sweep run directory (with config.json).', required=True)


def load(workdir: str):
  """`(config, finished runs.json list, random scores)` of the sweep in `workdir`."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ConfigError(f'{path} does not exist: give the workdir of a sweep')
  with open(path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  programs, _ = sweep.plan(config)
  finished = []
  for p in programs:
    done = results.read_json(os.path.join(workdir, p.path, sweep.RUNS_FILE))
    if done is not None:
      finished.append(done)
  if not finished:
    raise ConfigError(f'no program of the sweep in {workdir} has finished yet')
  randoms = {}
  for game in config.games:
    value = results.read_json(os.path.join(workdir, sweep.RANDOM_DIR, f'{game}.json'))
    if value is not None:
      randoms[game] = float(value['return'])
  return config, finished, randoms


def main(argv):
  del argv
  config, finished, randoms = load(_WORKDIR.value)
  summary = train.analyze(config, _WORKDIR.value, finished, randoms, wall_clock_s=0.0)
  print(json.dumps(summary.get('by_axis', {}), indent=1))
  with open(os.path.join(_WORKDIR.value, 'results.json')) as f:
    for c in json.load(f)['claims']:
      print(f'{"PASS" if c["passed"] else "FAIL"}  {c["name"]}: {c["measured"]}  ({c["criterion"]})')


if __name__ == '__main__':
  app.run(main)
