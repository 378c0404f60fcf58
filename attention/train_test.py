"""Tests of attention/train.py: an end-to-end run of a tiny config, resume == uninterrupted (bitwise on CPU,
metrics and evaluation), same-seed determinism, the evaluation table and claims on hand-made numbers,
accuracy against `data.read_accuracy`, and one-line ConfigErrors for bad settings.

The corpus is a few files of the standard library's `json` package (fixed for a session, unlike the
repository's own files), the model one layer of width 32, the run 8 steps at L=16: the file runs in about
a minute on 2 CPU cores.
"""

import json
import os
import re
import subprocess
import sys
import sysconfig

import jax
import numpy as np
import pytest

from attention import data
from attention import train as train_lib
from common import config as config_lib
from common import metrics as metrics_lib
from common.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, 'attention', 'configs')
CORPUS = 'files:' + os.path.join(sysconfig.get_paths()['stdlib'], 'json', '*.py')
TIMING_KEYS = ('train_seconds', 'eval_seconds', 'resumed_from')


def tiny(name='default.py', **overrides):
  config = config_lib.load_config(os.path.join(CONFIGS, name) + ':smoke', lock=False)
  config.update(
    {
      'corpus': CORPUS,
      'steps': 8,
      'log_every': 4,
      'checkpoint_every': 4,
      'warmup_steps': 2,
      'seq_len': 16,
      'batch_size': 4,
      'eval_multipliers': (1, 2, 4),
      'eval_windows': 3,  # 3 windows in chunks of 2 at 2L: exercises the padding.
      'eval_reads': 40,
      'eval_batch_tokens': 64,
    }
  )
  config.model.update({'num_layers': 1, 'd_model': 32, 'num_heads': 1, 'mlp_dim': 64})
  for key, value in overrides.items():
    if key == 'model':
      config.model.update(value)
    else:
      config[key] = value
  return config


def rows(directory):
  return [{k: v for k, v in r.items() if k != 'time'} for r in metrics_lib.read_metrics(directory)]


def eval_json(workdir, variant, seed=0):
  with open(os.path.join(train_lib.sub_run_dir(workdir, variant, seed), train_lib.EVAL_FILE)) as f:
    return {k: v for k, v in json.load(f).items() if k not in TIMING_KEYS}


@pytest.fixture(scope='module')
def full_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('full'))
  config = tiny()
  train_lib.train_and_evaluate(config, workdir)
  return config, workdir


def test_smoke_run_writes_results_table_plots_and_metrics(full_run):
  config, workdir = full_run
  with open(os.path.join(workdir, 'results.json')) as f:
    res = json.load(f)
  names = [c['name'] for c in res['claims']]
  assert len(names) == 3 and names[0].startswith('softmax_rope: validation loss') and '(seed 0)' in names[0]
  assert all(np.isfinite(c['measured']) for c in res['claims'])
  assert set(res['plots']) == {'train_loss.png', 'loss_by_position.png'}
  assert all(os.path.exists(os.path.join(workdir, p)) for p in res['plots'])
  assert '| stick_breaking | 0 |' in res['extra']['markdown']
  with open(os.path.join(workdir, train_lib.TABLE_FILE)) as f:
    table = json.load(f)
  assert table['lengths'] == [16, 32, 64] and set(table['variants']) == {'softmax_rope', 'stick_breaking'}
  for entry in table['variants'].values():
    lengths = entry['per_seed']['0']
    assert [r['length'] for r in lengths] == [16, 32, 64] and all(r['windows'] == 3 for r in lengths)
    assert all(np.isfinite(r['loss']) and np.isfinite(r['loss_last_L']) for r in lengths)
    assert entry['mean'] == lengths  # One seed: the mean is that seed.
  for variant in config.variants:
    assert [r['step'] for r in rows(train_lib.sub_run_dir(workdir, variant, 0))] == [4, 8]
    assert len(eval_json(workdir, variant)['per_position_loss']) == 64
  merged = rows(workdir)
  assert [r['step'] for r in merged] == [4, 8]
  assert {'train/softmax_rope/s0/loss', 'train/stick_breaking/s0/grad_norm'} <= set(merged[0])


def test_resume_equals_uninterrupted_and_finished_sub_runs_are_skipped(full_run, tmp_path, monkeypatch):
  config, full_dir = full_run
  original = metrics_lib.chunks

  def interrupted(*args, **kwargs):
    for i, chunk in enumerate(original(*args, **kwargs)):
      if kwargs.get('desc') == 'stick_breaking/s0' and i == 1:
        raise KeyboardInterrupt  # After its first chunk was trained, logged and checkpointed.
      yield chunk

  monkeypatch.setattr(train_lib.metrics_lib, 'chunks', interrupted)
  with pytest.raises(KeyboardInterrupt):
    train_lib.train_and_evaluate(config, str(tmp_path))
  sb_dir = train_lib.sub_run_dir(str(tmp_path), 'stick_breaking', 0)
  assert [r['step'] for r in rows(sb_dir)] == [4]
  assert not os.path.exists(os.path.join(sb_dir, train_lib.EVAL_FILE))
  monkeypatch.setattr(train_lib.metrics_lib, 'chunks', original)
  evals = train_lib.train_and_evaluate(config, str(tmp_path))
  assert evals['stick_breaking'][0]['resumed_from'] == 4
  assert evals['softmax_rope'][0]['resumed_from'] == 0  # Finished before the interruption: read back.
  # Bitwise on CPU; GPU reductions are not bitwise reproducible, so there only up to rounding.
  rtol = 0 if jax.default_backend() == 'cpu' else 1e-4
  for variant in config.variants:
    resumed = rows(train_lib.sub_run_dir(str(tmp_path), variant, 0))
    full = rows(train_lib.sub_run_dir(full_dir, variant, 0))
    assert [r.keys() for r in resumed] == [r.keys() for r in full]
    for a, b in zip(resumed, full):
      np.testing.assert_allclose([a[k] for k in a], [b[k] for k in a], rtol=rtol)
    a, b = eval_json(str(tmp_path), variant), eval_json(full_dir, variant)
    np.testing.assert_allclose(a['per_position_loss'], b['per_position_loss'], rtol=rtol)
    if rtol == 0:
      assert a == b
  assert rows(str(tmp_path)) == rows(full_dir)


def test_same_seed_same_training_other_seed_differs():
  config = tiny(variants=('stick_breaking',))
  train_data, _, _ = train_lib.load_task_data(config)
  programs = train_lib.make_programs(config, 'stick_breaking')

  def run(seed):
    state, stats = programs.train_chunk(train_lib.init_state(programs, seed), train_data, 3)
    return jax.device_get((state.params, stats))

  first, again, other = run(0), run(0), run(1)
  jax.tree.map(np.testing.assert_array_equal, first, again)
  assert first[1]['loss'] != other[1]['loss']


def test_length_row_on_hand_made_per_position_sums():
  # 2 windows of 8 positions, trained at L=2: per-position mean loss 0, 1, ..., 7.
  sums = {
    'windows': np.float64(2),
    'loss': 2.0 * np.arange(8),
    'target_loss': np.array([0, 2, 0, 6, 0, 10, 0, 14], float),
    'targets': np.array([0, 2, 0, 2, 0, 2, 0, 2], float),
    'correct': np.array([0, 2, 0, 1, 0, 2, 0, 0], float),
  }
  row = train_lib.length_row(sums, train_length=2, multiplier=4)
  assert row['length'] == 8 and row['multiplier'] == 4 and row['windows'] == 2
  assert row['loss'] == pytest.approx(3.5)  # mean(0..7)
  assert row['loss_last_L'] == pytest.approx(6.5)  # mean(6, 7)
  assert row['target_loss'] == pytest.approx(32 / 8)
  assert row['accuracy'] == pytest.approx(5 / 8)
  assert row['accuracy_last_L'] == pytest.approx(0 / 2)
  assert row['targets'] == 8
  no_targets = dict(sums, targets=np.zeros(8), correct=np.zeros(8), target_loss=np.zeros(8))
  assert train_lib.length_row(no_targets, 2, 4)['accuracy'] is None


def test_claims_per_seed_and_mean_of_seeds():
  config = tiny('flipflop.py', seeds=(0, 1), eval_multipliers=(1, 8))
  config.claims = ('sb_accuracy', 'rope_accuracy_gap', 'sb_last_ratio')

  def result(seed, accuracy_8l, loss_l, last_8l):
    lengths = [
      {'multiplier': 1, 'loss': loss_l, 'loss_last_L': loss_l, 'accuracy': 1.0},
      {'multiplier': 8, 'loss': loss_l, 'loss_last_L': last_8l, 'accuracy': accuracy_8l},
    ]
    return {'seed': seed, 'lengths': lengths, 'initial': {'loss': 2.0}}

  evals = {
    'softmax_rope': {0: result(0, 0.7, 1.0, 2.0), 1: result(1, 0.95, 1.0, 2.0)},
    'stick_breaking': {0: result(0, 1.0, 1.0, 1.01), 1: result(1, 0.985, 1.0, 1.0)},
  }
  claims = {c.name: c for c in train_lib.build_claims(config, evals)}
  acc = 'stick_breaking: target accuracy over the 8L window'
  assert claims[f'{acc} (seed 0)'].passed and not claims[f'{acc} (seed 1)'].passed
  mean = claims[f'{acc} (mean of 2 seeds)']
  assert mean.measured == pytest.approx(0.9925) and mean.passed and 'mean of the per-seed' in mean.criterion
  gap = 'stick_breaking minus softmax_rope target accuracy over the 8L window'
  assert claims[f'{gap} (seed 0)'].measured == pytest.approx(0.3) and claims[f'{gap} (seed 0)'].passed
  assert claims[f'{gap} (seed 1)'].measured == pytest.approx(0.035) and not claims[f'{gap} (seed 1)'].passed
  assert claims[f'{gap} (mean of 2 seeds)'].passed
  last = 'stick_breaking: loss over the last L positions of the 8L window / loss at L'
  assert claims[f'{last} (seed 0)'].measured == pytest.approx(1.01) and claims[f'{last} (seed 0)'].passed
  assert len(claims) == 9


def test_flipflop_accuracy_matches_read_accuracy():
  config = tiny('flipflop.py', variants=('stick_breaking',), claims=())
  programs = train_lib.make_programs(config, 'stick_breaking')
  params = programs.init_params(jax.random.PRNGKey(3))
  params = jax.tree.map(lambda p: p + 0.5 * jax.random.normal(jax.random.PRNGKey(4), p.shape), params)
  key, batch, length = jax.random.PRNGKey(5), 8, 32
  sums = jax.device_get(programs.eval_generated(params, key, batch, length))
  generated = data.flipflop_batch(key, batch, length + 2)
  tokens, read_mask = generated['tokens'][:, : length + 1], generated['read_mask'][:, : length + 1]
  logits = jax.jit(programs.model.apply)({'params': params}, tokens[:, :-1])
  expected = data.read_accuracy(logits, tokens, read_mask)
  assert sums['targets'].sum() == read_mask[:, 1:].sum() > 0
  np.testing.assert_allclose(sums['correct'].sum() / sums['targets'].sum(), expected, rtol=1e-6)
  assert sums['windows'] == batch and sums['loss'].shape == (length,)


def test_flipflop_run_reports_accuracy_by_length(tmp_path):
  config = tiny(
    'flipflop.py', variants=('softmax_rope', 'stick_breaking'), seeds=(0,), eval_multipliers=(1, 2)
  )
  train_lib.train_and_evaluate(config, str(tmp_path))
  with open(os.path.join(tmp_path, 'results.json')) as f:
    res = json.load(f)
  assert res['plots'] == ['train_loss.png', 'accuracy_by_position.png', 'accuracy_by_length.png']
  assert all(os.path.exists(tmp_path / p) for p in res['plots'])
  assert [c['name'].split(' (')[0] for c in res['claims']] == [
    'stick_breaking: target accuracy over the 2L window',
    'stick_breaking minus softmax_rope target accuracy over the 2L window',
  ]
  assert all(np.isfinite(c['measured']) for c in res['claims'])
  with open(os.path.join(tmp_path, train_lib.TABLE_FILE)) as f:
    table = json.load(f)
  for row in table['variants']['stick_breaking']['per_seed']['0']:
    assert row['targets'] >= config.eval_reads and 0 <= row['accuracy'] <= 1


def test_mqar_batch_targets_are_the_recalled_values():
  config = tiny('mqar.py')
  key = jax.random.PRNGKey(0)
  batch = train_lib.make_batch(config, None, key, 4, 16)
  generated = data.mqar_batch(key, 4, 18, 8, 8, 0.5)
  np.testing.assert_array_equal(batch['inputs'], generated['tokens'][:, :16])
  np.testing.assert_array_equal(batch['targets'], generated['tokens'][:, 1:17])
  np.testing.assert_array_equal(batch['mask'], generated['target_mask'][:, 1:17])
  lo, hi = train_lib.answer_range(config)
  assert (lo, hi) == (16, 24) and train_lib.vocab_size(config) == 24
  assert np.all((np.asarray(batch['targets']) >= lo)[np.asarray(batch['mask']) > 0])


@pytest.mark.parametrize(
  'overrides,fragment',
  [
    ({'task': 'txt'}, "unknown config.task 'txt'"),
    ({'variants': ('softmax', 'stick_breaking')}, "unknown variant in config.variants 'softmax'"),
    ({'seeds': ()}, 'config.seeds=() must be distinct'),
    ({'checkpoint_every': 6}, 'must be a multiple of config.log_every=4'),
    ({'eval_multipliers': (2, 4)}, 'increasing ints starting at 1'),
    ({'claims': ('sb_accuracy',)}, "claim 'sb_accuracy' applies to the flipflop or mqar task"),
    ({'variants': ('stick_breaking',), 'claims': ('sb_in_length',)}, 'add softmax_rope to config.variants'),
    ({'model': {'dtype': 'fp16'}}, "unknown config.dtype 'fp16'"),
    ({'corpus': 'files:/nonexistent/*.txt'}, 'no files match'),
    ({'eval_multipliers': (1, 100000)}, 'too few for training windows'),
  ],
)
def test_bad_settings_are_one_line_config_errors(overrides, fragment, tmp_path):
  with pytest.raises(ConfigError, match=re.escape(fragment)) as info:
    train_lib.train_and_evaluate(tiny(**overrides), str(tmp_path))
  assert '\n' not in str(info.value)
  assert not os.listdir(tmp_path)  # Nothing was written.


def test_bad_config_on_the_command_line_exits_2_with_one_line(tmp_path):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONPATH=ROOT)
  proc = subprocess.run(
    [
      sys.executable,
      '-m',
      'attention.main',
      '--config=attention/configs/default.py:smoke',
      '--config.task=flipflop',
      '--config.seq_len=63',
      f'--workdir={tmp_path}',
    ],
    cwd=ROOT,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1 and 'seq_len=63 must be even' in errors[0]
