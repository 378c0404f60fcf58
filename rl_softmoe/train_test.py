"""End-to-end smoke run, resume skipping, bad games, and the claims' arithmetic on hand-made scores."""

import json
import os

import jax
import numpy as np
import pytest

from common import checkpoint
from common import results
from common.errors import ConfigError
from common.rl import dqn
from rl_softmoe import encoder
from rl_softmoe import train
from rl_softmoe.configs import atari100k
from rl_softmoe.configs import default
from rl_softmoe.configs import paper


def tiny_config(**overrides):
  c = default.get_config('smoke')
  c.hidden = 16
  c.total_env_steps = 800
  c.buffer_capacity = 400
  c.learning_starts = 200
  c.eps_decay_steps = 200
  c.target_update_period = 200
  c.log_every = 400
  c.checkpoint_every = 400
  c.acceptance.bootstrap_reps = 200
  for k, v in overrides.items():  # 'der.n_step' sets a field of a sub-dict.
    *parents, name = k.split('.')
    sub = c
    for p in parents:
      sub = sub[p]
    sub[name] = v
  return c


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('rs_smoke'))
  saved = []
  original = checkpoint.Checkpointer.save

  def save(self, step, state, **kwargs):
    did = original(self, step, state, **kwargs)
    saved.append((step, did))
    return did

  checkpoint.Checkpointer.save = save
  try:  # No checkpoint at the last step (800): only the one at 400, per sub-run.
    agg, claims = train.train_and_evaluate(tiny_config(checkpoint_final=False), workdir)
  finally:
    checkpoint.Checkpointer.save = original
  assert saved == [(400, True)] * 2
  return workdir, agg, claims


def test_smoke_end_to_end(smoke_run):
  workdir, agg, claims = smoke_run
  assert set(agg) == {'V0', 'V2'}
  by_name = {c.name: c for c in claims}
  assert by_name['check: losses finite'].passed
  assert by_name['check: replay buffer wrapped'].passed
  syncs = by_name['check: target syncs at every multiple of target_update_period']
  assert syncs.passed and syncs.measured == 800 // 200
  assert by_name['A1 IQM(V2) > IQM(V4)'].measured is None  # V4 was not run.
  data = results.read_results(os.path.join(workdir, 'results.json'))
  assert {'iqm.png', 'curves_Breakout.png'} <= set(data['plots'])
  assert set(data['extra']['versus_V0']) == {'V2'}
  v2 = data['extra']['versus_V0']['V2']
  assert v2['iqm_difference'] == pytest.approx(agg['V2']['iqm'] - agg['V0']['iqm'])
  assert v2['low'] <= v2['iqm_difference'] <= v2['high'] and 0.0 <= v2['p_improvement'] <= 1.0
  with open(os.path.join(workdir, 'Breakout-MinAtar', 'V2', 'eval.json')) as f:
    ev = json.load(f)
  assert len(ev['returns']) == 2 and all(np.isfinite(ev['returns']))
  assert ev['updates'] == [(800 - 200) // 4] * 2
  assert not os.path.exists(os.path.join(workdir, 'Breakout-MinAtar', 'V2', 'checkpoints'))
  rows = [json.loads(line) for line in open(os.path.join(workdir, 'Breakout-MinAtar', 'V0', 'metrics.jsonl'))]
  assert any('train/Breakout-MinAtar/V0/loss' in r for r in rows)


def test_rerun_skips_finished_sub_runs(smoke_run, monkeypatch):
  workdir, agg, _ = smoke_run

  def no_compile(*args, **kwargs):
    raise AssertionError('a finished sub-run was rebuilt')

  monkeypatch.setattr(train, 'Programs', no_compile)
  agg2, _ = train.train_and_evaluate(tiny_config(), workdir)
  assert agg2 == agg


@pytest.mark.parametrize(
  'overrides, match',
  [
    ({'games': ('Pong-MinAtar',)}, 'unknown MinAtar game'),
    ({'games': ('Breakout-MinAtar', 'breakout')}, 'unknown MinAtar game'),
    ({'variants': ('V0', 'V9')}, 'unknown variant'),
    ({'log_every': 300}, 'log_every'),
    ({'eval_iterations': 10}, 'eval_iterations'),
    ({'agent': 'rainbow'}, "unknown agent 'rainbow'"),
    ({'agent': 'der', 'der.n_step': 0}, 'max_n_step'),
    ({'key_games': ('Asterix-MinAtar',)}, "key_games must list every game.*'Breakout-MinAtar'"),
    ({'eval_host_workers': -1}, 'eval_host_workers must be an integer >= 0, got -1'),
  ],
)
def test_bad_config_fails_before_compiling(tmp_path, monkeypatch, overrides, match):
  monkeypatch.setattr(train, 'Programs', lambda *a, **k: pytest.fail('compiled before validating'))
  with pytest.raises(ConfigError, match=match):
    train.train_and_evaluate(tiny_config(**overrides), str(tmp_path))


def test_a_subset_run_keeps_each_games_keys_of_the_full_run():
  # tools/parallel_subruns.sh runs one game per process with key_games = all games: the keys must be those
  # of the one-process run of all games (the game's position there), not of position 0.
  full = tiny_config(games=('Breakout-MinAtar', 'Asterix-MinAtar'))
  part = tiny_config(games=('Asterix-MinAtar',), key_games=('Breakout-MinAtar', 'Asterix-MinAtar'))
  alone = tiny_config(games=('Asterix-MinAtar',))
  assert train.key_index(full, 'Asterix-MinAtar') == train.key_index(part, 'Asterix-MinAtar') == 1
  assert train.key_index(alone, 'Asterix-MinAtar') == 0

  def keys(c):
    return np.asarray(train.seed_keys(c, train.key_index(c, 'Asterix-MinAtar'), 0))

  np.testing.assert_array_equal(keys(part), keys(full))
  assert not np.array_equal(keys(alone), keys(full))


def test_atari_evaluator_plays_first_games():
  """The Atari configs evaluate each eval env's first whole game (`eval_first_game`), capped at 27k steps;
  MinAtar keeps the fixed window; a value that is not a bool is refused."""
  from rl_softmoe.configs import atari100k

  for c in (atari100k.get_config(), paper.get_config()):
    assert c.eval_first_game and c.eval_iterations == 27_000 and c.eval_host_workers == 8
  c = default.get_config()
  assert not c.eval_first_game and c.eval_host_workers == 0
  with c.ignore_type():
    c.eval_first_game = 'yes'
  with pytest.raises(ConfigError, match='eval_first_game must be True or False'):
    train.validate(c)
  pytest.importorskip('ale_py')
  c = atari100k.get_config('smoke')
  programs = train.Programs(c, 'Pong', 'V0')
  evaluator = programs.eval_agent.config
  assert evaluator.eval_first_episode and evaluator.num_envs == c.eval_envs == 2
  # Only the evaluation env gets the host workers (they start at its first callback).
  assert [env.host_workers for env in programs._envs] == [0, c.eval_host_workers] == [0, 2]
  programs.close()


def test_dqn_agent_is_the_earlier_one():
  """agent='dqn' builds exactly the Config and HParams the runs in results/ were made with."""
  c = default.get_config()
  assert train.agent_config(c) == dqn.Config(
    num_envs=4, total_env_steps=100_000, buffer_capacity=50_000, batch_size=32, max_updates_per_step=1,
    double=True, obs_storage_dtype='uint8',
  )  # fmt: skip
  assert train.hparams(c) == dqn.dqn_preset()[1].replace(
    learning_rate=2.5e-4, adam_eps=3.125e-4, eps_decay_steps=25_000, learning_starts=5_000,
    target_update_period=2_000,
  )  # fmt: skip
  assert train.head(c) == {}


def test_der_agent_trains_a_chunk(tmp_path):
  """DER (C51, dueling, noisy head, n-step, prioritized replay): every penultimate variant feeds the C51
  head, and a flatten-variant agent trains one tiny chunk (SoftMoE variants compile too slowly for CI).
  With `eval_first_game` (reusing this program), the random policy's evaluation counts one game per env, and
  the stored random score is measured again, not read back, when that option changes."""
  c = tiny_config(agent='der', num_seeds=1, total_env_steps=400, log_every=400, learning_starts=100, hidden=8)
  c.eval_first_game = True
  c.der.n_step = 3  # Overrides of the preset apply.
  c.der.noisy = True
  cfg, hp = train.agent_config(c), train.hparams(c)
  assert (cfg.num_atoms, cfg.max_n_step, cfg.prioritized, cfg.noisy) == (51, 3, True, True)
  assert (int(hp.n_step), hp.learning_rate, hp.target_update_period) == (3, c.learning_rate, 200)
  programs = train.Programs(c, 'Breakout-MinAtar', 'V0')
  net = programs.network
  obs = jax.numpy.zeros((10, 10, 4))
  for variant in ('V0', 'V2', 'V3', 'V4'):  # The head takes every penultimate output to [A, 51] logits.
    other = encoder.make_network(variant, (10, 10, 4), 3, hidden=16, **train.head(c))
    out = jax.eval_shape(lambda o, n=other: n.apply(n.init(jax.random.key(0), o), o), obs)
    assert out.shape == (3, 51)
  assert net.dueling and net.noisy and net.num_atoms == 51
  hps = train.stacked_hparams(c)
  state = programs.init(train.seed_keys(c, 0, 0), hps)
  state, stats_ = programs.run_chunk(state, hps, 400 // c.num_envs)
  row = train.chunk_row(jax.device_get(stats_))
  assert row['updates'] == (400 - 100) // 4
  assert np.isfinite(row['loss']) and row['loss'] > 0
  assert programs.eval_agent.config.eval_first_episode
  out = programs.evaluate(state, train.stacked_hparams(c, eps_eval=1.0), train.seed_keys(c, 0, 2))
  assert np.asarray(out['episodes']).tolist() == [c.num_envs]  # 1000 steps would end many more games.
  workdir = str(tmp_path)
  value = train.random_score(c, workdir, 'Breakout-MinAtar', 0, lambda: programs)
  np.testing.assert_allclose(value, np.mean(out['episode_return']), rtol=1e-6)
  assert results.read_json(os.path.join(workdir, 'Breakout-MinAtar', train.RANDOM_FILE))['eval_first_game']

  def measure_again():
    raise RuntimeError('measured again')

  assert train.random_score(c, workdir, 'Breakout-MinAtar', 0, measure_again) == value  # Read back.
  c.eval_first_game = False
  with pytest.raises(RuntimeError, match='measured again'):
    train.random_score(c, workdir, 'Breakout-MinAtar', 0, measure_again)


@pytest.mark.parametrize('arg', ['', 'smoke'])
def test_paper_config_validates(arg):
  """The documented paper setting (not run) passes every check that needs no compilation."""
  c = paper.get_config(arg)
  train.validate(c)
  cfg, hp = train.agent_config(c), train.hparams(c)
  assert (cfg.num_atoms, cfg.max_n_step, cfg.prioritized, c.encoder) == (51, 3, True, 'impala')
  if not arg:
    assert len(c.games) == 20 and c.num_seeds == 5 and c.total_env_steps * 4 == 200_000_000
    assert (hp.learning_rate, hp.target_update_period, hp.learning_starts) == (6.25e-5, 8_000, 20_000)


def test_normalise_and_iqm():
  np.testing.assert_allclose(train.normalise([3.0, 1.0], random=1.0, reference=5.0), [0.5, 0.0])
  with pytest.raises(ConfigError):
    train.normalise([1.0], random=2.0, reference=2.0)
  config = default.get_config()
  agg = train.aggregate(config, {'V0': np.array([[0.0], [1.0], [2.0], [100.0]])})
  assert agg['V0']['iqm'] == pytest.approx(1.5)  # Mean of the middle two of four.
  assert agg['V0']['low'] <= 1.5 <= agg['V0']['high']


def test_claims_on_hand_made_scores():
  config = default.get_config()
  ones = np.ones((4, 3))
  scores = {'V1': 0.3 * ones, 'V2': 0.5 * ones, 'V3': 0.45 * ones, 'V4': 0.0 * ones}
  claims = {c.name: c for c in train.build_claims(config, scores, {'V1': 4.0, 'V2': 2.5})}
  a1 = claims['A1 IQM(V2) > IQM(V4)']
  assert a1.passed and a1.measured == pytest.approx(0.5) and 'P = 1.000' in a1.criterion
  assert claims['A1 IQM(V3) > IQM(V4)'].passed
  assert claims['A2 IQM(V2) >= IQM(V1)'].measured == pytest.approx(0.2)
  assert claims['A2 IQM(V3) >= IQM(V1)'].passed
  a3 = claims['A3 |IQM(V3) - IQM(V2)| small']
  assert a3.passed and a3.measured == pytest.approx(0.05)
  a4 = claims['A4 every variant >= 3x random on Breakout']
  assert not a4.passed and a4.measured == 2.5 and 'V2' in a4.criterion

  # Ties give P = 0.5, which is not an improvement; V1 above V3 fails A2; a gap of 0.9 with disjoint CIs
  # fails A3.
  scores = {'V1': 0.6 * ones, 'V2': 0.9 * ones, 'V3': 0.0 * ones, 'V4': 0.0 * ones}
  claims = {c.name: c for c in train.build_claims(config, scores, None)}
  assert claims['A1 IQM(V2) > IQM(V4)'].passed
  assert not claims['A1 IQM(V3) > IQM(V4)'].passed
  assert not claims['A2 IQM(V3) >= IQM(V1)'].passed
  assert claims['A2 IQM(V2) >= IQM(V1)'].passed
  assert not claims['A3 |IQM(V3) - IQM(V2)| small'].passed
  assert claims['A4 every variant >= 3x random on Breakout'].measured is None


def test_claims_need_their_variants():
  config = default.get_config('smoke')
  claims = train.build_claims(config, {'V0': np.zeros((2, 1)), 'V2': np.ones((2, 1))}, {'V0': 1.0, 'V2': 2.0})
  assert [c.measured is None for c in claims] == [True] * 5 + [False]
  assert not any(c.passed for c in claims)


def test_breakout_is_found_in_both_families():
  assert train.breakout_game(default.get_config()) == 'Breakout-MinAtar'
  assert train.breakout_game(atari100k.get_config()) == 'Breakout'  # Pong Breakout Boxing Freeway MsPacman.
  config = default.get_config()
  config.games = ('Asterix-MinAtar',)
  assert train.breakout_game(config) is None


def test_replay_wrap_check_only_where_the_run_exceeds_the_ring():
  run = {'losses_finite': True, 'target_syncs': 2, 'expected_target_syncs': 2, 'buffer_wrapped': False}
  config = default.get_config('smoke')
  config.total_env_steps, config.buffer_capacity = 100, 50
  wrap = train.check_claims(config, {'g': {'V0': run}})[-1]
  assert wrap.name == 'check: replay buffer wrapped' and not wrap.passed
  assert train.check_claims(config, {'g': {'V0': dict(run, buffer_wrapped=True)}})[-1].passed
  # Atari 100k: a ring as large as the run has nothing to wrap.
  config.buffer_capacity = 100
  wrap = train.check_claims(config, {'g': {'V0': run}})[-1]
  assert wrap.passed and wrap.measured == 'not applicable'


@pytest.mark.parametrize('variant', ['V0', 'V1', 'V2', 'V3', 'V4'])
def test_network_maps_one_frame_to_q_values(variant):
  import jax
  import jax.numpy as jnp

  from rl_softmoe import encoder

  net = encoder.make_network(variant, (10, 10, 4), 3, hidden=8, scale=2)
  obs = jnp.ones((10, 10, 4), jnp.float32)
  params = net.init(jax.random.PRNGKey(0), obs)
  q = net.apply(params, obs)
  assert q.shape == (3,) and bool(jnp.all(jnp.isfinite(q)))
  # Applied to a batch through vmap, each sample's Q-values equal its own (no mixing across samples).
  batch = jnp.stack([obs, jnp.zeros_like(obs)])
  np.testing.assert_allclose(jax.vmap(lambda o: net.apply(params, o))(batch)[0], q, rtol=1e-5, atol=1e-6)


# Slow (49 s on CI's 2 cores): rl_hparams' partly-finished-sweep test resumes a killed sub-run of the same
# common.rl agents from its checkpoint, so CI keeps that one.
@pytest.mark.slow
def test_interrupted_sub_run_resumes_to_the_uninterrupted_result(smoke_run, tmp_path, monkeypatch):
  full_dir, _, _ = smoke_run
  config = tiny_config(variants=('V0',))
  original = train.Programs.run_chunk
  calls = []

  def preempted(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:  # after the first chunk (and its checkpoint at env step 400)
      raise RuntimeError('simulated preemption')
    return original(self, *args, **kwargs)

  monkeypatch.setattr(train.Programs, 'run_chunk', preempted)
  with pytest.raises(RuntimeError, match='simulated preemption'):
    train.train_and_evaluate(config, str(tmp_path))
  monkeypatch.setattr(train.Programs, 'run_chunk', original)
  train.train_and_evaluate(config, str(tmp_path))

  def load(root):
    sub = os.path.join(root, 'Breakout-MinAtar', 'V0')
    with open(os.path.join(sub, 'eval.json')) as f:
      ev = json.load(f)
    with open(os.path.join(sub, 'metrics.jsonl')) as f:
      rows = [json.loads(line) for line in f]
    # wall-clock stamps and rates differ between runs; everything else must match
    return ev, [{k: v for k, v in r.items() if k != 'time' and not k.startswith('charts/')} for r in rows]

  resumed, resumed_rows = load(str(tmp_path))
  full, full_rows = load(full_dir)
  assert resumed['resumed_from'] == 400
  assert resumed['returns'] == full['returns']
  assert resumed['updates'] == full['updates']
  assert resumed_rows == full_rows


def test_nature_encoder_for_atari_frames():
  """84x84 Atari frames through the Nature CNN: an 11x11x64 map (SAME padding, Dopamine's), 121 PerConv tokens
  for SoftMoE, uint8 pixels scaled to [0, 1]."""
  import jax
  import jax.numpy as jnp

  from rl_softmoe import encoder

  assert encoder.feature_shape((84, 84, 4), encoder.encoder_layers('nature')) == (11, 11, 64)
  net = encoder.make_network('V2', (84, 84, 4), 6, encoder='nature', hidden=8, scale=2)
  frame = jnp.full((84, 84, 4), 255, jnp.uint8)
  params = net.init(jax.random.key(0), frame)
  q = net.apply(params, frame)
  assert q.shape == (6,) and bool(jnp.all(jnp.isfinite(q)))
  with pytest.raises(ConfigError, match='unknown encoder'):
    encoder.make_network('V0', (84, 84, 4), 6, encoder='resnet')


def test_impala_encoder():
  """The Impala CNN: an 11x11x32 map on 84x84 frames (research note §1.1.2), 15 convolutions, 121 PerConv
  tokens, C51 logits through a SoftMoE penultimate layer (shapes only: compiling it is slow on CPU)."""
  assert encoder.feature_shape((84, 84, 4), encoder.encoder_layers('impala')) == (11, 11, 32)
  frame = jax.numpy.full((84, 84, 4), 255, jax.numpy.uint8)
  out, params = jax.eval_shape(
    lambda f: encoder.impala_encoder().init_with_output(jax.random.key(0), f), frame
  )
  assert out.shape == (11, 11, 32)
  kernels = [p for p, _ in jax.tree_util.tree_flatten_with_path(params['params'])[0] if 'kernel' in str(p)]
  assert len(kernels) == 15
  small, _ = encoder.impala_encoder().init_with_output(jax.random.key(0), jax.numpy.ones((16, 16, 2)))
  assert small.shape == (2, 2, 32) and bool(jax.numpy.all(jax.numpy.isfinite(small)))
  assert bool(jax.numpy.all(small >= 0))  # The final ReLU.
  net = encoder.make_network(
    'V2', (84, 84, 4), 6, encoder='impala', hidden=8, scale=2, num_atoms=5, dueling=True
  )
  assert jax.eval_shape(net.init_with_output, jax.random.key(0), frame)[0].shape == (6, 5)


def test_der_noisy_head_uses_dopamine_sigma0():
  """DER.gin and full_rainbow.gin build their noisy layers with Dopamine's NoisyNetwork, whose sigma is
  0.1 / sqrt(fan-in) at init (DER's sigma0 = 0.1, not Fortunato et al.'s 0.5); `der.noisy_sigma0` sets it."""
  from rl_softmoe.configs import atari100k

  for c in (atari100k.get_config(), paper.get_config()):
    assert c.der.noisy and c.der.noisy_sigma0 == 0.1
  obs = jax.numpy.zeros((10, 10, 4))
  for sigma0 in (0.1, 0.5):
    c = tiny_config(agent='der', hidden=8)
    c.der.noisy = True
    if sigma0 != 0.1:
      c.der.noisy_sigma0 = sigma0
    net = encoder.make_network('V0', (10, 10, 4), 3, hidden=8, **train.head(c))
    params = net.init(jax.random.key(0), obs)['params']
    for layer in ('value', 'advantage'):  # The head's input is V0's Dense(8).
      np.testing.assert_allclose(params[layer]['sigma_kernel'], sigma0 / np.sqrt(8), rtol=1e-6)
  c.der.noisy_sigma0 = -1.0
  with pytest.raises(ConfigError, match='noisy_sigma0'):
    train.validate(c)
