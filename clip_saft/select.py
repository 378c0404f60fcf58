"""Choose each method's learning rate on the held-out ID validation split `id_val`, from a sweep's runs:

    python -m clip_saft.select --runs=runs/sweep/lr1e-5,runs/sweep/lr3e-5,runs/sweep/lr1e-4 [--out=sel.json]
    python -m clip_saft.select runs/sweep/*                # run directories as arguments work too

Each run is a workdir of `clip_saft.main` (`config.json`, `results.json`) that differs from the others in the
learning rates only. For every method row the candidates are the lrs the runs used for it (`finetune.lr`
for full FT, LP-FT, FLYP and WiSE-FT; `finetune.saft_lr` for the SAFT rows and their random / magnitude
ablations; `finetune.lp_lr` for LP); runs sharing a method's lr are averaged (a sweep over `saft_lr` trains
full FT once per run at the same lr). The chosen lr is the one with the best `id_val`, ties going to the
smaller lr; the test numbers printed (ID, OOD average) are those of that choice, whatever they are, and the
claims are recomputed from the chosen rows. The test splits and OOD splits are never looked at to choose.
Runs written before `id_val` existed (2026-11-28) are listed as such and cannot be selected from.
"""

from __future__ import annotations

import dataclasses
import json
import os

from absl import app
from absl import flags
import ml_collections
import numpy as np

from common import app as common_app
from common import config as config_lib
from common import results
from common.errors import ConfigError


LR_KEYS = ('lr', 'saft_lr', 'lp_lr')


def lr_key(method: str) -> str | None:
  """The `config.finetune` key of the lr that trained `method`'s row (None: nothing trained)."""
  if method == 'zero_shot':
    return None
  if method.startswith('saft'):
    return 'saft_lr'
  if method == 'lp':
    return 'lp_lr'
  return 'lr'  # full_ft, lp_ft (second stage), flyp, wise_ft@alpha.


def load_run(path: str) -> dict:
  """`{'dir', 'config', 'rows'}` of one finished run directory; a one-line ConfigError otherwise."""
  config_path, results_path = os.path.join(path, 'config.json'), os.path.join(path, 'results.json')
  config, res = results.read_json(config_path), results.read_json(results_path)
  if config is None or res is None:
    raise ConfigError(
      f'{path}: no readable config.json and results.json; give finished clip_saft run directories'
    )
  rows = res.get('extra', {}).get('rows')
  if not rows:
    raise ConfigError(f'{path}/results.json has no method rows (extra.rows); is it a clip_saft run?')
  return {'dir': path, 'config': config, 'rows': rows}


def differing_keys(runs: list[dict]) -> list[str]:
  """Config keys (other than the learning rates) whose values differ between the runs."""
  ignore = {f'finetune.{k}' for k in LR_KEYS}
  flat = [config_lib.flatten(r['config']) for r in runs]
  keys = sorted(set().union(*flat) - ignore)
  return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]


def select(runs: list[dict]) -> dict:
  """{method: choice}. A choice: `lr_key`, `candidates` (one per lr: id_val, id, ood, n runs, dirs), and the
  chosen `lr`, `id_val`, `id`, `ood`, `dirs`; or `skipped` with the reason."""
  methods = []
  for run in runs:
    methods += [m for m in run['rows'] if m not in methods]
  out = {}
  for method in methods:
    key = lr_key(method)
    have = [r for r in runs if method in r['rows']]
    groups = {}
    for run in have:
      lr = None if key is None else float(run['config']['finetune'][key])
      groups.setdefault(lr, []).append(run)
    candidates = []
    for lr, group in groups.items():
      rows = [r['rows'][method] for r in group]
      val = [row['id_val'] for row in rows if 'id_val' in row]
      candidates.append(
        {
          'lr': lr,
          'id_val': float(np.mean(val)) if len(val) == len(rows) else None,
          'id': float(np.mean([row['id'] for row in rows])),
          'ood': float(np.mean([row['ood'] for row in rows])),
          'n_runs': len(rows),
          'dirs': [r['dir'] for r in group],
        }
      )
    choice = {'lr_key': None if key is None else f'finetune.{key}', 'candidates': candidates}
    valid = [c for c in candidates if c['id_val'] is not None]
    if not valid:
      choice['skipped'] = 'no id_val in these runs (written before 2026-11-28, or data.val_size = 0)'
    else:
      # Best id_val; ties to the smaller lr (closer to the pretrained weights). Test numbers play no part.
      best = min(valid, key=lambda c: (-c['id_val'], c['lr'] if c['lr'] is not None else 0.0))
      choice.update({k: best[k] for k in ('lr', 'id_val', 'id', 'ood', 'dirs')})
    out[method] = choice
  return out


def claims_at_choice(selection: dict, config) -> list:
  """The run's claims recomputed from the rows at the chosen lrs (empty when a needed row is missing)."""
  from clip_saft import train  # JAX only when claims are asked for.

  rows = {m: {'id': c['id'], 'ood': c['ood']} for m, c in selection.items() if 'skipped' not in c}
  try:
    if config.claims == 'gpu':
      return train.gpu_claims(rows, config)
    if config.claims == 'paper':
      return train.paper_claims(rows, config)
  except KeyError:
    return []
  return []  # The smoke claims are about mechanics, not about an lr.


def _pct(x) -> str:
  return '    -' if x is None else f'{100 * x:5.1f}'


def _lr(x) -> str:
  return '-' if x is None else f'{x:g}'


def report(selection: dict, runs: list[dict]) -> str:
  """A text table: per method the chosen lr, its id_val, ID and OOD avg, and every candidate's id_val."""
  lines = [
    f'{len(runs)} runs; lr chosen by id_val (accuracy %, mean over few-shot seeds and runs at that lr)'
  ]
  differ = differing_keys(runs)
  if differ:
    lines.append(f'note: the runs also differ in {", ".join(differ)}; a clean lr sweep changes the lrs only')
  lines.append(
    f'{"method":16s} {"lr key":20s} {"lr":>8s} {"id_val":>6s} {"ID":>6s} {"OOD":>6s}  candidates lr: id_val'
  )
  for method, c in selection.items():
    head = f'{method:16s} {c["lr_key"] or "-":20s}'
    if 'skipped' in c:
      lines.append(f'{head} {"-":>8s} {"-":>6s} {"":6s} {"":6s}  {c["skipped"]}')
      continue
    cands = ', '.join(f'{_lr(x["lr"])}: {_pct(x["id_val"]).strip()}' for x in c['candidates'])
    lines.append(
      f'{head} {_lr(c["lr"]):>8s} {_pct(c["id_val"]):>6s} {_pct(c["id"]):>6s} {_pct(c["ood"]):>6s}  {cands}'
    )
  return '\n'.join(lines)


def main(argv):
  paths = list(flags.FLAGS.runs) + list(argv[1:])
  if not paths:
    raise app.UsageError('give run directories: --runs=DIR,DIR or as arguments')
  runs = [load_run(p) for p in paths]
  selection = select(runs)
  print(report(selection, runs))
  claims = claims_at_choice(selection, ml_collections.ConfigDict(runs[0]['config']))
  for c in claims:
    print(f'{"PASS" if c.passed else "FAIL"}  {c.name}: {c.measured}  ({c.criterion}) [at the id_val lrs]')
  if flags.FLAGS.out:
    payload = {'runs': paths, 'selection': selection, 'claims': [dataclasses.asdict(c) for c in claims]}
    results.write_json(flags.FLAGS.out, payload, indent=2)
  return 0


if __name__ == '__main__':
  # Flags are defined here, not at import: tests import this module into the suite's one flag registry
  # (WORKSPACE.md, helper programs).
  flags.DEFINE_list('runs', [], 'Run directories of one sweep (comma-separated; or give them as arguments).')
  flags.DEFINE_string('out', '', 'Optional JSON file for the selection.')
  try:
    app.run(main)
  except ConfigError as e:
    common_app.fail(str(e))
