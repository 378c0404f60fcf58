"""The report and claims of an evaluation again, from its saved summaries, without asking any model:

    python -m eval_gsm.analyze --workdir=runs/gpu/eval_gsm/gap

Reads the workdir's `config.json` (keys added to the config since then take today's defaults), `pairs.jsonl`
and every evaluated model's `models/<name>/summary.json`, and rewrites `report.md`, `report.html`, `gap.png`,
`gap.csv` and `results.json` with the current claims code. Models without a summary are left out (and named).
"""

import json
import os

from absl import app, flags, logging

from common import results
from common.errors import ConfigError
from eval_gsm import evaluate, pairs as pairs_lib, prompts, train
from eval_gsm.configs import default


def load_config(workdir: str):
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ConfigError(f'{path} does not exist: give the workdir of an eval_gsm run')
  with open(path) as f:
    saved = json.load(f)
  config = default.get_config()
  config.update_from_flattened_dict(
    {k: tuple(v) if isinstance(v, list) else v for k, v in _flatten(saved).items()}
  )
  return config


def _flatten(d, prefix=''):
  out = {}
  for k, v in d.items():
    if isinstance(v, dict) and k not in ('train_mix',):
      out.update(_flatten(v, f'{prefix}{k}.'))
    else:
      out[f'{prefix}{k}'] = v
  return out


def analyze(workdir: str):
  config = load_config(workdir)
  pairs = pairs_lib.read_pairs_jsonl(os.path.join(workdir, train.PAIRS_FILE))
  exemplars = prompts.make_exemplars(k=max(config.shots, 1), seed=config.exemplar_seed)
  summaries = {}
  for name in config.models:
    summary = results.read_json(os.path.join(workdir, 'models', name, evaluate.SUMMARY_FILE))
    if summary is None:
      logging.warning('%s has no summary in %s; left out', name, workdir)
      continue
    summaries[name] = summary
  if not summaries:
    raise ConfigError(f'no model of {workdir} has been evaluated yet')
  return train.finish(config, workdir, summaries, pairs, exemplars)


def main(argv):
  del argv
  analyze(flags.FLAGS.workdir)


if __name__ == '__main__':
  # Defined here, not at import: tests import this module beside other projects' `--workdir` flags.
  flags.DEFINE_string('workdir', None, 'An eval_gsm run directory (with config.json).', required=True)
  app.run(main)
