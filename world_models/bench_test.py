"""The benchmark end to end on tiny sizes (2 steps, 1 repeat): every row, valid JSON, the table. Speeds are
measured on real runs, never asserted here."""

import json

import numpy as np
import pytest

from world_models import bench
from world_models.configs import default


def tiny_config():
  """Smaller than the smoke config (8x8 frames, one conv level each way): compiles are the cost here."""
  c = default.get_config('smoke')
  c.env.update(image_size=8, episode_length=8)
  c.data.update(num_envs=2, length=8)
  c.vlm.update(n_frames=4, width=4, embed_dim=8)
  c.wm.update(deter=8, hidden=8, stoch=2, classes=4, depth=2, batch_size=2, seq_len=4)
  c.wm.update(steps=2, log_every=1, checkpoint_every=1)
  c.aligner.hidden = 4
  c.behaviour.update(hidden=8, horizon=2, batch_size=1, data_free_batch=2, align_window=2)
  c.behaviour.update(steps=1, log_every=1, checkpoint_every=1)
  c.strips.update(frames=2, stride=1)
  return c


def test_bench_runs_end_to_end_and_writes_json(tmp_path, capsys):
  path = tmp_path / 'bench.json'
  out = bench.run(tiny_config(), steps=2, repeats=1, replay_envs=64, out=str(path))
  with open(path) as f:
    data = json.load(f)
  assert data['rows'] == json.loads(json.dumps(out['rows']))
  assert data['replay_envs'] == 2  # Capped at data.num_envs.
  names = [(r['measure'], r['implementation']) for r in data['rows']]
  assert names == [
    ('world model + connector + aligner', 'project, scanned chunk (as the run)'),
    ('world model only', 'project, scanned chunk'),
    ('world model only', 'project, Python loop of jitted steps'),
    ('world model only', 'plain JAX reference, Python loop of jitted steps'),
    ('imagine (forward)', 'project (one jitted rollout per call)'),
    ('imagine (forward)', 'plain JAX reference'),
    ('behaviour step (imagine + reward + actor/critic updates)', 'project, scanned chunk (as the run)'),
    ('DreamerV3, published budget (not measured here)', 'danijar/dreamerv3 (JAX), GPU not named in the note'),
  ]
  measured = data['rows'][:-1]
  assert all(r['steps'] == 2 and np.isfinite(r['steps_per_s']) and r['steps_per_s'] > 0 for r in measured)
  # The reference is the same model size as the project's world model.
  assert len({r['params'] for r in measured}) == 1
  c = tiny_config()
  imagine = data['rows'][4]
  starts = c.behaviour.batch_size * c.wm.seq_len
  assert imagine['per_s'] == pytest.approx(imagine['steps_per_s'] * starts * c.behaviour.horizon, rel=1e-2)
  assert 'unverified' in data['rows'][-1]['note']
  assert set(data['ratios']) == {
    'project_scanned_over_reference_loop',
    'project_loop_over_reference_loop',
    'project_scanned_over_project_loop',
  }
  table = [line for line in capsys.readouterr().out.splitlines() if line.startswith('| ')]
  assert len(table) == 1 + len(data['rows']) and table[4].startswith('| world model only | plain JAX')
