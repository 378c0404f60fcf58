"""Carries a run's trained VLM and world model from one machine to another, so a run that does not fit one
session's device time can go on in the next (checkpoints live on the lent machine and are lost with it).

    # On the machine that trained them (the workdir holds finished vlm/ and wm/ stages):
    python -m world_models.stage_transfer --action=export --config=world_models/configs/gpu.py:stickman \
        --workdir=runs/gpu/wms/parts/genrl --out=$OUT/stages
    # Later, anywhere (the parts may have travelled separately), into a workdir that has neither stage:
    python -m world_models.stage_transfer --action=import --config=world_models/configs/gpu.py:stickman \
        --workdir=runs/gpu/wms/parts/genrl --parts=.stages/stages.npz.part0,.stages/stages.npz.part1

The export holds what every later stage reads: the VLM's parameters, the world model's, the connector's and
the aligner's parameters, the world-model stage's key and step, and the stages' small files
(`wm/metrics.jsonl`, `vlm/caption_accuracy.json`); one `.npz` (float32 as trained) cut into parts of at most
`--part_mib` MiB (a device call returns files of at most 16 MiB). It leaves out the optimiser states (Adam's
moments are twice the parameters): the import writes checkpoints at the stages' last steps with freshly
initialised optimiser states. Nothing after the world model reads them, except the connector fine-tune
(`wm.connector_finetune_steps`, which starts from the connector's optimiser state), so an import into a config
with the fine-tune on is refused. The import checks that the config's stage-defining keys (env, data,
seed, vlm, wm, connector, aligner; not checkpoint or fine-tune periods, not behaviour, evaluation or claims)
equal the exporting run's, and a rerun of `main` on the workdir then restores both stages instead of
training them (`stage_transfer_test.py`: the restored parameters, key, step and metrics equal the
exporting run's).
"""

from __future__ import annotations

import glob
import io
import json
import os

import jax
import numpy as np

from common import checkpoint
from common import config as config_lib
from common.errors import ConfigError
from world_models import train
from world_models import vlm

FORMAT = 1
STAGE_KEYS = ('aligner', 'connector', 'data', 'env', 'seed', 'vlm', 'wm')
IGNORED_WM_KEYS = ('checkpoint_every', 'connector_finetune_steps')
FILES = ('wm/metrics.jsonl', 'vlm/caption_accuracy.json')
WM_FIELDS = ('wm_params', 'conn_params', 'align_params', 'rng', 'step')


def stage_config(config) -> dict:
  """The keys that define the VLM and world-model stages, as plain data."""
  c = config_lib.to_dict(config)
  out = {k: c[k] for k in STAGE_KEYS}
  out['wm'] = {k: v for k, v in out['wm'].items() if k not in IGNORED_WM_KEYS}
  return out


def _flatten(prefix, tree) -> dict:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {prefix + jax.tree_util.keystr(path): np.asarray(x) for path, x in leaves}


def _unflatten(prefix, template, arrays):
  paths, treedef = jax.tree_util.tree_flatten_with_path(template)
  leaves = []
  for path, x in paths:
    key = prefix + jax.tree_util.keystr(path)
    if key not in arrays:
      raise ConfigError(f'the export has no {key}: it was written by another model')
    if arrays[key].shape != x.shape or arrays[key].dtype != x.dtype:
      raise ConfigError(
        f'{key} is {arrays[key].shape} {arrays[key].dtype} in the export, {x.shape} {x.dtype} here'
      )
    leaves.append(arrays[key])
  return jax.tree_util.tree_unflatten(treedef, leaves)


def _templates(config):
  """The VLM's parameters and the world-model state of `config` as restore targets (shapes only)."""
  parts = train.Parts(config)
  rng = jax.random.PRNGKey(0)
  vlm_params = checkpoint.abstract_state(lambda: vlm.init(config, rng))
  wm_state = checkpoint.abstract_state(lambda: train.init_world_model_state(parts, rng))
  return parts, vlm_params, wm_state


def export(config, workdir: str, out: str, part_mib: float = 15.0) -> list[str]:
  """Writes `out.npz.part<i>` from `workdir`'s finished VLM and world-model stages; returns the part paths."""
  _, vlm_template, wm_template = _templates(config)
  arrays = {}
  for name, steps, template in (
    ('vlm', config.vlm.steps, vlm_template),
    ('wm', config.wm.steps, wm_template),
  ):
    with checkpoint.Checkpointer(os.path.join(workdir, name), every=steps, keep=2) as ckpt:
      if ckpt.latest_step() != steps:
        raise ConfigError(
          f'{workdir}/{name} is at step {ckpt.latest_step()}, not its last ({steps}): not finished'
        )
      restored = ckpt.restore(template, steps)
    if name == 'vlm':
      arrays.update(_flatten('vlm', restored))
    else:
      for field in WM_FIELDS:
        arrays.update(_flatten(f'wm.{field}', getattr(restored, field)))
  for rel in FILES:
    with open(os.path.join(workdir, rel), 'rb') as f:
      arrays['file:' + rel] = np.frombuffer(f.read(), np.uint8)
  meta = {'format': FORMAT, 'stage_config': stage_config(config)}
  arrays['meta'] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  blob = buffer.getvalue()
  size = max(1, int(part_mib * 2**20))
  for old in glob.glob(out + '.npz.part*'):
    os.remove(old)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  paths = []
  for i in range(0, len(blob), size):
    paths.append(f'{out}.npz.part{i // size}')
    with open(paths[-1], 'wb') as f:
      f.write(blob[i : i + size])
  return paths


def _part_index(path: str) -> int:
  suffix = path.rsplit('.part', 1)[-1]
  if not suffix.isdigit():
    raise ConfigError(f'{path} is not an export part (<name>.npz.part<i>)')
  return int(suffix)


def load(part_paths) -> dict:
  """The arrays of an export from its parts (any order; every part must be there)."""
  paths = sorted(part_paths, key=_part_index)
  if [_part_index(p) for p in paths] != list(range(len(paths))):
    raise ConfigError(f'export parts missing: got {[os.path.basename(p) for p in paths]}')
  blob = b''.join(open(p, 'rb').read() for p in paths)
  with np.load(io.BytesIO(blob)) as npz:
    return {k: npz[k] for k in npz.files}


def import_(config, workdir: str, part_paths) -> None:
  """Writes `workdir/vlm` and `workdir/wm` (checkpoints at their last steps, and their small files) from an
  export, after checking it against `config`."""
  if config.wm.connector_finetune_steps:
    raise ConfigError(
      'an imported world model has fresh optimiser states, and the connector fine-tune starts from the '
      "connector's: set wm.connector_finetune_steps=0 or train the world model here"
    )
  arrays = load(part_paths)
  meta = json.loads(arrays.pop('meta').tobytes())
  if meta.get('format') != FORMAT:
    raise ConfigError(f'export format {meta.get("format")}, this code reads {FORMAT}')
  differ = config_lib.diff(meta['stage_config'], stage_config(config))
  if differ:
    raise ConfigError(f'the export was trained with other stage settings: {", ".join(differ)}')
  for name in ('vlm', 'wm'):
    if os.path.exists(os.path.join(workdir, name)):
      raise ConfigError(f'{workdir}/{name} exists: import into a workdir without it')
  parts, vlm_template, wm_template = _templates(config)
  vlm_params = _unflatten('vlm', vlm_template, arrays)
  fields = {f: _unflatten(f'wm.{f}', getattr(wm_template, f), arrays) for f in WM_FIELDS}
  # Fresh optimiser states as the stage builds them (Adam's count and moments start at zero whatever the
  # parameters), with the exported fields in place of the initial ones.
  wm_state = train.init_world_model_state(parts, jax.random.PRNGKey(0)).replace(**fields)
  if int(wm_state.step) != config.wm.steps:
    raise ConfigError(
      f'the exported world model is at step {int(wm_state.step)}, the config trains {config.wm.steps}'
    )
  for name, steps, state in (('vlm', config.vlm.steps, vlm_params), ('wm', config.wm.steps, wm_state)):
    with checkpoint.Checkpointer(os.path.join(workdir, name), every=steps, keep=2) as ckpt:
      ckpt.save(steps, state, force=True)
  for rel in FILES:
    with open(os.path.join(workdir, rel), 'wb') as f:
      f.write(arrays['file:' + rel].tobytes())


def main(argv):
  del argv
  config = _CONFIG.value
  if _ACTION.value == 'export':
    if not _OUT.value:
      raise ConfigError('--out is required for --action=export')
    paths = export(config, _WORKDIR.value, _OUT.value, _PART_MIB.value)
    print('\n'.join(f'{p} {os.path.getsize(p)} bytes' for p in paths))
  elif _ACTION.value == 'import':
    if not _PARTS.value:
      raise ConfigError('--parts is required for --action=import')
    import_(config, _WORKDIR.value, _PARTS.value)
    print(f'imported vlm/ and wm/ into {_WORKDIR.value}')
  else:
    raise ConfigError(f'--action must be export or import, got {_ACTION.value!r}')


if __name__ == '__main__':
  from absl import app, flags
  from ml_collections import config_flags

  _CONFIG = config_flags.DEFINE_config_file('config', None, 'The run config (its stage keys must match).')
  _ACTION = flags.DEFINE_string('action', None, 'export or import.')
  _WORKDIR = flags.DEFINE_string(
    'workdir', None, 'The run workdir (export: its finished stages; import: target).'
  )
  _OUT = flags.DEFINE_string('out', '', 'export: path prefix of the parts (<out>.npz.part<i>).')
  _PARTS = flags.DEFINE_list('parts', [], 'import: the part files, comma-separated.')
  _PART_MIB = flags.DEFINE_float('part_mib', 15.0, 'export: the largest part, MiB.')
  flags.mark_flags_as_required(['config', 'action', 'workdir'])
  app.run(main)
