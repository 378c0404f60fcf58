import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from common import checkpoint
from common import metrics as metrics_lib
from common import config as config_lib
from common.errors import ConfigError
from rl_plasticity import train

SMOKE = os.path.join(os.path.dirname(__file__), 'configs', 'default.py') + ':smoke'


def tiny_config(**overrides):
  c = config_lib.load_config(SMOKE, lock=False)
  c.num_seeds = 2
  c.total_env_steps = 600
  c.learning_starts = 200
  c.buffer_capacity = 300
  c.batch_size = 16
  c.actor_hidden = (16, 16)
  c.critic_hidden = (16, 16)
  c.delta = 50
  c.log_every = 100
  c.eval_every = 300
  c.checkpoint_every = 300
  c.eval_episodes = 2
  c.episode_length = 50
  c.methods = ('ne',)
  for k, v in overrides.items():
    if '.' in k:
      group, name = k.split('.')
      c[group][name] = v
    else:
      c[k] = v
  return c


@pytest.mark.parametrize(
  'change,words',
  [
    ({'ne.initial_density': 0.0}, 'initial_density must be in (0, 1]'),
    ({'ne.final_density': 1.5}, 'final_density must be in (0, 1]'),
    ({'delta': 1_000}, 'larger than the run'),
    ({'env': 'halfcheeta'}, "did you mean 'halfcheetah'"),
    ({'buffer_capacity': 10**13}, 'lower buffer_capacity'),
    ({'methods': ('td3', 'sac')}, 'methods must be'),
    ({'log_every': 30}, 'log_every'),
    ({'methods': ('reset',), 'reset.every': 400}, 'reset.every (400 updates) must be below the run'),
    ({'methods': ('injection',), 'injection.at': 1.0}, 'injection.at (1.0) must put the injection inside'),
  ],
)
def test_bad_input_fails_before_compiling(change, words):
  c = tiny_config()
  for key, value in change.items():
    if '.' in key:
      group, name = key.split('.')
      c[group][name] = value
    else:
      c[key] = value
  with pytest.raises(ConfigError) as e:
    train.validate(c)
  assert words in str(e.value) and '\n' not in str(e.value)


@pytest.fixture(scope='module')
def ne_run():
  """The whole tiny NE run, uninterrupted, with the hook stats of every topology step."""
  c = tiny_config()
  env = train.validate(c)
  programs = train.Programs(c, env, 'ne')
  init = programs.init(train.seed_keys(c))
  hooks = []
  log = lambda step, row: 'hook' in row and hooks.append((step, jax.device_get(row['hook'])))  # noqa: E731
  final = train.run_steps(c, programs, init, 0, c.total_env_steps, log)
  return c, env, programs, init, final, hooks


def _expected_counts(layer, steps, grow_steps, prune_ratio):
  """Grown and pruned counts per topology step of one layer, from the schedule's definition."""
  active, out = layer.initial, []
  for k in range(1, steps + 1):
    target = layer.initial + int(np.floor((layer.final - layer.initial) * min(k / grow_steps, 1.0)))
    net = max(target - active, 0)
    prune = min(int(np.floor(net * prune_ratio / (1 - prune_ratio))), active)
    out.append((net + prune, prune))
    active += net
  return out


def test_grow_prune_counts_follow_the_schedule_and_density_ends_at_target(ne_run):
  c, _, programs, _, final, hooks = ne_run
  updates = train.total_updates(c)
  steps = updates // c.delta
  grow_steps = max(1, int(0.6 * updates / c.delta))
  assert [s for s, _ in hooks] == [c.learning_starts + c.delta * k for k in range(1, steps + 1)]
  layers = programs.agent.critic_layers
  expected = [sum(x) for x in zip(*[np.array(_expected_counts(l, steps, grow_steps, 0.4)) for l in layers])]
  for k, (_, h) in enumerate(hooks):
    np.testing.assert_allclose(h['critic_grown'], expected[k][0], atol=len(layers))
    np.testing.assert_allclose(h['critic_pruned'], expected[k][1], atol=len(layers))
    if (k + 1) % c.policy_delay:
      assert np.all(h['actor_grown'] == 0)  # The actor's clock: every policy_delay-th step.
  assert sum(int(h['actor_grown'][0]) for _, h in hooks) > 0
  flat = jax.tree_util.tree_flatten_with_path(final.critic.mask)[0]
  for layer in layers + programs.agent.actor_layers:
    net = final.critic if layer.path[0].startswith('q') else final.actor
    m = net.mask['params']
    for name in layer.path:
      m = m[name]
    np.testing.assert_array_equal(np.asarray(m).reshape(2, -1).sum(1), layer.final)
  assert flat and train.masked_zero_violations(final) == 0


def test_final_densities_are_those_after_the_last_topology_step(ne_run, tmp_path):
  # Final densities come from the final state, after the run's last topology step, not from the last probe
  # row, which is taken before that step (so a run still growing at its end reported its last-but-one
  # densities). Here from the state alone: no metrics rows are written.
  c, _, programs, _, final, _ = ne_run
  out = train.summarise_method(c, str(tmp_path), 'ne', final, programs)
  assert out['target_densities']
  for layer, want in out['target_densities'].items():
    assert out['final_densities'][f'probe/density/{layer}'] == pytest.approx(want, abs=1e-7), layer
  assert out['critic_density'] == pytest.approx(1.0)


def test_one_compilation_for_the_whole_run(ne_run):
  _, _, programs, _, _, _ = ne_run
  assert programs.chunk._cache_size() == 1  # 12 chunks (warm-up and updating) share one program.
  assert programs.hook._cache_size() == 1  # 8 topology steps share one program.


def test_resume_equals_uninterrupted_run(ne_run, tmp_path):
  c, _, programs, init, final, _ = ne_run
  half = c.total_env_steps // 2
  first = train.run_steps(c, programs, init, 0, half)
  with checkpoint.Checkpointer(str(tmp_path), every=half, keep=1) as ckpt:
    ckpt.save(half, first)
  with checkpoint.Checkpointer(str(tmp_path), every=half, keep=1) as ckpt:
    restored, start = ckpt.restore_or_init(init)
  assert start == half
  resumed = train.run_steps(c, programs, programs.place(restored), start, c.total_env_steps)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(final)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert programs.chunk._cache_size() == 1


def test_smoke_end_to_end(tmp_path, caplog):
  # 200 updates: Reset due at 100 and at the last update (skipped). Plasticity Injection runs end to end in
  # the `default.py:smoke,all` run (README); here it would add a third compile-heavy method.
  c = tiny_config(methods=('td3', 'reset'), total_env_steps=400, eval_every=100, checkpoint_every=200)
  c.reset.every = 100
  c.lock()
  caplog.set_level(logging.INFO, logger='absl')
  finals, claims = train.train_and_evaluate(c, str(tmp_path))
  # Progress reaches the log before the first metrics row (2026-11-28: GPU runs showed nothing for 9 min).
  logged = caplog.text
  for line in ('td3: init: first call took', 'td3: chunk: first call took', 'td3: chunk to env step 50 took',
               'td3: chunk to env step 150 took', 'td3: env step 100, ', 'td3: evaluate: first call took'):  # fmt: skip
    assert line in logged, line
  assert 'td3: chunk to env step 200 took' not in logged  # Only the first FIRST_CHUNKS_LOGGED chunks.
  data = json.load(open(tmp_path / 'results.json'))
  assert data['project'] == 'rl_plasticity' and os.path.exists(tmp_path / 'returns.png')
  assert set(data['extra']['methods']) == {'td3', 'reset'}
  for f in finals.values():
    assert len(f['return']) == 2 and all(np.isfinite(f['return'])) and not f['diverged']
    assert f['masked_nonzero'] == 0
  assert (tmp_path / 'td3' / 'final.json').exists() and not (tmp_path / 'td3' / 'checkpoints').exists()
  rows = {m: {r['step']: r for r in metrics_lib.read_metrics(str(tmp_path / m))} for m in c.methods}
  assert sum(r.get('hook/resets', 0.0) for r in rows['reset'].values()) == 1.0  # Not at the last update.
  # Reset equals TD3 until its first reset (same keys); the step's measurements come before the reset.
  at = c.learning_starts + c.reset.every
  for key in ('eval/return/seed_0', 'eval/return/seed_1', 'probe/critic_dormant_0.1', 'probe/critic_fau'):
    assert rows['reset'][at][key] == rows['td3'][at][key], key
  assert rows['reset'][at + 100]['eval/return/seed_0'] != rows['td3'][at + 100]['eval/return/seed_0']
  # A rerun reads the finished sub-run back.
  again, _ = train.train_and_evaluate(c, str(tmp_path))
  assert all(again[m]['return'] == finals[m]['return'] for m in c.methods)


def test_claims_on_hand_made_numbers():
  c = tiny_config()

  def final(ret, dormant, diverged=False):
    return {'return': ret, 'critic_dormant_0.1': dormant, 'diverged': diverged, 'masked_nonzero': 0,
            'final_densities': {}, 'target_densities': {}}  # fmt: skip

  finals = {
    'td3': final([100.0] * 8, [0.4] * 8),
    'ne': final([99.0] * 8, [0.2] * 8),
    'redo': final([90.0] * 8, [0.3] * 8),
  }
  claims = {
    cl.name.split(':')[0] + ':' + cl.name.split(':')[-1][:8]: cl for cl in train.build_claims(c, finals)
  }
  by_name = {cl.name: cl for cl in train.build_claims(c, finals)}
  assert by_name['ne: critic tau=0.1 dormant fraction <= 0.7 x TD3 (IQM)'].measured == pytest.approx(0.5)
  assert by_name['ne: critic tau=0.1 dormant fraction <= 0.7 x TD3 (IQM)'].passed
  assert by_name['ne: return IQM / TD3 >= 0.95'].measured == pytest.approx(0.99)
  assert by_name['redo: critic tau=0.1 dormant fraction below TD3 (IQM)'].passed
  assert by_name['no seed diverges'].passed and claims
  finals['ne']['diverged'] = True
  finals['td3']['return'] = [-5.0] * 8
  by_name = {cl.name: cl for cl in train.build_claims(c, finals)}
  assert not by_name['no seed diverges'].passed
  assert by_name['ne: return IQM / TD3 >= 0.95'].measured is None


def test_interval_row_weights_by_updates_and_sums_hooks():
  s = lambda *v: np.array(v, np.float64)  # noqa: E731  (two seeds)
  rows = [
    {'train': {'return_sum': s(0, 0), 'episodes': s(0, 0), 'updates': s(0, 0), 'critic_loss': s(0, 0),
               'q_mean': s(0, 0), 'critic_grad_norm': s(0, 0), 'fau': s(0, 0), 'review': s(0, 0)}},
    {'train': {'return_sum': s(-10, -30), 'episodes': s(1, 2), 'updates': s(50, 50), 'critic_loss': s(2, 4),
               'q_mean': s(-1, -3), 'critic_grad_norm': s(1, 1), 'fau': s(0.5, 0.5), 'review': s(0, 1)},
     'hook': {'critic_grown': s(5, 5)}},
    {'train': {'return_sum': s(0, 0), 'episodes': s(0, 0), 'updates': s(150, 150), 'critic_loss': s(6, 8),
               'q_mean': s(-2, -4), 'critic_grad_norm': s(1, 1), 'fau': s(0.5, 0.5), 'review': s(0, 1)},
     'hook': {'critic_grown': s(3, 3)}},
  ]  # fmt: skip
  row = train.interval_row(rows)
  assert row['train/return'] == pytest.approx((-10 + -15) / 2)
  assert row['train/critic_loss'] == pytest.approx(((2 * 50 + 6 * 150) / 200 + (4 * 50 + 8 * 150) / 200) / 2)
  assert row['train/q_abs_max_over_seeds'] == pytest.approx((3 * 50 + 4 * 150) / 200)
  assert row['hook/critic_grown'] == 8.0 and row['train/episodes'] == 3.0


def test_bench_imports_without_defining_flags_and_injection_programs_build():
  from absl import flags

  from rl_plasticity import bench

  assert hasattr(bench, 'bench_method') and 'methods' not in flags.FLAGS
  c = tiny_config(methods=('injection', 'redo', 'reset'), **{'redo.every': 100, 'reset.every': 200})
  env = train.validate(c)
  shared = {}
  programs = train.Programs(c, env, 'injection', shared)
  redo, reset = train.Programs(c, env, 'redo', shared), train.Programs(c, env, 'reset', shared)
  assert redo.chunk is reset.chunk and redo.probe is reset.probe and programs.chunk is not redo.chunk
  assert redo.hook is not reset.hook and reset.agent is redo.agent
  assert programs.hook_every == 200 and {p[0] for p in programs.agent.critic_paths} == {'base', 'new', 'init'}


def test_first_call_logged_times_only_the_first_call(monkeypatch):
  lines = []
  monkeypatch.setattr(train.logging, 'info', lambda msg, *a: lines.append(msg % a))
  f = jax.jit(lambda x: x + 1)
  g = train.first_call_logged(f, 'td3: chunk')
  assert int(g(jnp.int32(1))) == 2 and int(g(jnp.int32(2))) == 3
  assert len(lines) == 2 and lines[0].startswith('td3: chunk: first call') and 'took' in lines[1]
  assert g._cache_size() == 1  # Attributes come from the jitted function.
