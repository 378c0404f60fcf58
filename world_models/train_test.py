"""End to end on a tiny smoke config with GenRL and WM-CLIP: results.json, finite metrics, the crafted checks,
the reward check; resume equals an uninterrupted run; the connector fine-tune stage (on fake data, no VLM)
leaves the world model bit-identical, lowers the connector KL and is skipped once done; the WM-CLIP head's
stage (on fake data) lowers its loss, sends no gradient into the world model or the VLM, and resumes; its
reward is the cosine of the head's output with the prompt; bad configs are one-line ConfigErrors. One
compile of each function (cached per config)."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from common import metrics
from common import results
from common.errors import ConfigError
from world_models import strips
from world_models import train
from world_models import vlm
from world_models.configs import default


def tiny_config():
  c = default.get_config('smoke')
  c.data.num_envs = 8
  c.vlm.steps = 4
  c.wm.update(steps=4, log_every=2, checkpoint_every=2)
  c.behaviour.update(steps=2, log_every=1, checkpoint_every=1, methods=('genrl', 'wm_clip'))
  c.wm_clip.update(steps=4, log_every=2, checkpoint_every=2)
  c.eval.episodes = 2
  return c


def _rows(path):
  return [{k: v for k, v in r.items() if k != 'time'} for r in metrics.read_metrics(path)]


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('wm_run'))
  train.train_and_evaluate(tiny_config(), workdir)
  return workdir


def test_end_to_end_writes_results(run):
  data = results.read_results(os.path.join(run, 'results.json'))
  claims = {c.name: c for c in data['claims']}
  assert claims['all losses finite'].passed
  assert claims['connector loss gradient into the world model (global norm)'].measured == 0.0
  assert claims['alignment index on a crafted score matrix'].passed
  assert claims['data-free start states have the right shapes'].passed
  score = data['extra']['scores']['genrl']['arm pointing up']
  assert np.isfinite(score['normalised_score']) and 0 <= score['target_rank'] < 4
  rows = _rows(os.path.join(run, 'wm'))
  assert [r['step'] for r in rows] == [2, 4]
  assert all(np.isfinite(v) for r in rows for v in r.values())
  assert os.path.exists(os.path.join(run, 'wm_loss.png'))
  assert not os.path.exists(os.path.join(run, 'wm_connector_ft'))  # Off by default.
  # V0's input is on disk as soon as the VLM is trained (a run cut later still has it), equal to results.json's.
  accuracy = results.read_json(os.path.join(run, 'vlm', 'caption_accuracy.json'))
  assert accuracy == data['extra']['vlm_caption_accuracy']
  assert set(accuracy) == {'VLM_LOOK', 'AGENT_LOOK'}


def test_wm_clip_end_to_end(run):
  """The WM-CLIP method: its head's stage, then its behaviour's final.json and reward check."""
  data = results.read_results(os.path.join(run, 'results.json'))
  rows = _rows(os.path.join(run, 'wm_clip'))
  assert [r['step'] for r in rows] == [2, 4]
  assert all(np.isfinite(r['train/wm_clip/loss']) for r in rows)
  assert data['extra']['wm_clip_loss_first_last'] == [
    rows[0]['train/wm_clip/loss'],
    rows[-1]['train/wm_clip/loss'],
  ]
  final = results.read_json(os.path.join(run, 'behaviour', 'wm_clip_arm_pointing_up', 'final.json'))
  assert final is not None and np.isfinite(final['normalised_score'])
  assert (
    data['extra']['scores']['wm_clip']['arm pointing up']['normalised_score'] == final['normalised_score']
  )
  check = final['reward_check']
  assert (
    check['reward'] == 'wm_clip' and -1 <= check['reward_expert'] <= 1 and -1 <= check['correlation'] <= 1
  )
  # The same evaluation episodes as GenRL's: the same expert and random returns.
  genrl = data['extra']['scores']['genrl']['arm pointing up']
  assert final['expert_return'] == genrl['expert_return'] and final['random_return'] == genrl['random_return']


def test_rollout_strips_written(run):
  """rollout.png / rollout.gif: rows real, reconstructed, imagined, target; `strips.frames` frames."""
  from PIL import Image

  c = tiny_config()
  s, size = c.strips, c.env.image_size * c.strips.scale
  behaviour_dir = os.path.join(run, 'behaviour', 'genrl_arm_pointing_up')
  margin = strips.label_width(['real', 'reconstructed', 'imagined', 'target'])
  with Image.open(os.path.join(behaviour_dir, 'rollout.png')) as image:
    assert image.size == (margin + s.frames * size, 4 * size)
    pixels = np.asarray(image.convert('RGB'))
  real = pixels[:size, margin:]
  assert real.std() > 0  # The arm is drawn.
  with Image.open(os.path.join(behaviour_dir, 'rollout.gif')) as image:
    assert image.n_frames == s.frames and image.size == (margin + size, 4 * size + 2 * s.scale)
  with Image.open(os.path.join(behaviour_dir, 'target_frames.png')) as image:
    assert image.size == (c.behaviour.horizon * c.env.image_size, c.env.image_size)


def test_strip_real_row_is_the_evaluated_episode():
  """The strip's real frames are episode 0 of the actor's evaluation, and the imagined row starts at its
  first posterior state (both decode the same first latent)."""
  c = tiny_config()
  fns = train.functions(c)
  parts, rng = fns.parts, jax.random.PRNGKey(3)
  # Committed, as in a run, so the run's compiled `evaluate` serves this call.
  wm_params = train._commit(fns.init_wm(rng).wm_params)
  actor_params = train._commit(fns.init_behaviour(rng).actor_params)
  scores, rows = fns.evaluate(wm_params, actor_params, jnp.int32(0), rng)
  idx = np.arange(c.strips.frames) * c.strips.stride
  keys = jax.random.split(jax.random.fold_in(rng, 0), c.eval.episodes)
  state = jax.tree.map(lambda x: x[0], jax.vmap(parts.env.reset)(keys))
  first = parts.env.render(state, c.env.image_size)
  np.testing.assert_allclose(rows['real'][0], first, atol=1e-6)
  assert rows['real'].shape == (c.strips.frames, c.env.image_size, c.env.image_size, 3)
  np.testing.assert_allclose(rows['imagined'][0], rows['reconstructed'][0], atol=1e-6)
  assert np.isfinite(float(scores['normalised_score'])) and len(idx) == rows['imagined'].shape[0]


def test_reward_check_written(run):
  data = results.read_results(os.path.join(run, 'results.json'))
  behaviour_dir = os.path.join(run, 'behaviour', 'genrl_arm_pointing_up')
  with open(os.path.join(behaviour_dir, 'reward_check.json')) as f:
    check = json.load(f)
  keys = {'reward_expert', 'reward_random', 'task_reward_expert', 'task_reward_random', 'correlation'}
  assert keys | {'expert_return', 'random_return', 'reward'} == set(check)
  assert check['reward'] == 'genrl' and all(np.isfinite(check[k]) for k in keys)
  assert -1 <= check['correlation'] <= 1
  # The same expert and random trajectories as the normalised score's.
  score = data['extra']['scores']['genrl']['arm pointing up']
  assert check['expert_return'] == pytest.approx(score['expert_return'], rel=1e-6)
  assert check['random_return'] == pytest.approx(score['random_return'], rel=1e-6)
  assert data['extra']['reward_check']['genrl']['arm pointing up'] == check
  claims = [c for c in data['claims'] if c.name.startswith('reward check (genrl)')]
  assert len(claims) == 2 and all(c.measured is not None for c in claims)


def test_resume_equals_uninterrupted(run):
  wm_rows = _rows(os.path.join(run, 'wm'))
  behaviour_dir = os.path.join(run, 'behaviour', 'genrl_arm_pointing_up')
  with open(os.path.join(behaviour_dir, 'final.json')) as f:
    final = json.load(f)
  head_rows = _rows(os.path.join(run, 'wm_clip'))
  # Interrupt: the world model and the WM-CLIP head lost their last checkpoint, the behaviour run lost its
  # last one and its result.
  shutil.rmtree(os.path.join(run, 'wm', 'checkpoints', '4'))
  shutil.rmtree(os.path.join(run, 'wm_clip', 'checkpoints', '4'))
  shutil.rmtree(os.path.join(behaviour_dir, 'checkpoints', '2'))
  os.remove(os.path.join(behaviour_dir, 'final.json'))
  train.train_and_evaluate(tiny_config(), run)
  assert _rows(os.path.join(run, 'wm')) == wm_rows
  assert _rows(os.path.join(run, 'wm_clip')) == head_rows
  with open(os.path.join(behaviour_dir, 'final.json')) as f:
    assert json.load(f) == final
  # Restored (committed) and initialised states share one signature: each chunk compiled once (per method).
  fns = train.functions(tiny_config())
  assert fns.wm_chunk._cache_size() == 1 and fns.wm_clip_chunk._cache_size() == 1
  assert fns.behaviour_chunk._cache_size() == len(tiny_config().behaviour.methods)


def test_video_prompt_frames_fit_the_vlm():
  c = tiny_config()
  frames = jax.jit(lambda r: train.video_prompt_frames(c, 0, r))(jax.random.PRNGKey(0))
  vlm.check_video(frames, c)
  assert float(frames.min()) >= 0 and float(frames.max()) <= 1


def _fake_data(c, rng):
  """Replay of random frames, actions and unit embeddings: enough to train the connector, no VLM."""
  r1, r2, r3 = jax.random.split(rng, 3)
  n, length, size, e = c.data.num_envs, c.data.length, c.env.image_size, c.vlm.embed_dim
  frames = jax.random.randint(r1, (n, length, size, size, 3), 0, 256).astype(jnp.uint8)
  actions = jax.random.uniform(r2, (n, length, 2), minval=-1, maxval=1)
  embeds = vlm.normalize(jax.random.normal(r3, (n, length // c.vlm.n_frames, e)))
  return {'frames': frames, 'actions': actions, 'embeds': jnp.repeat(embeds, c.vlm.n_frames, axis=1)}


def _stage_inputs(c):
  """For a stage after the world model, on fake data: `c` validated, the smoke config's jitted functions
  (a stage's step count is not read by them), the key, the data, a fresh world-model state and a batch."""
  train.validate(c)
  fns = train.functions(tiny_config())
  rng = jax.random.PRNGKey(0)
  data = train._commit(_fake_data(c, rng))
  wm_state = train._commit(fns.init_wm(jax.random.fold_in(rng, 1)))
  batch = train.sample_batch(data, jax.random.fold_in(rng, 2), 4, c.wm.seq_len, c.vlm.n_frames)
  return fns, rng, data, wm_state, batch


def test_connector_finetune_stage(tmp_path):
  c = tiny_config()
  c.wm.connector_finetune_steps = 6
  # The jitted functions do not read connector_finetune_steps: share those of the smoke run's config.
  fns, rng, data, wm_state, batch = _stage_inputs(c)
  kl_before = float(fns.connector_kl(wm_state.wm_params, wm_state.conn_params, batch, rng))
  workdir = str(tmp_path)
  tuned = train.train_connector_finetune(fns, c, workdir, wm_state, data, jax.random.fold_in(rng, 3))
  kl_after = float(fns.connector_kl(tuned.wm_params, tuned.conn_params, batch, rng))
  same = jax.tree.map(lambda a, b: np.array_equal(np.asarray(a), np.asarray(b)), wm_state, tuned)
  assert all(jax.tree.leaves(same.wm_params)) and all(jax.tree.leaves(same.wm_opt))
  assert all(jax.tree.leaves(same.align_params)) and all(jax.tree.leaves(same.align_opt))
  assert not all(jax.tree.leaves(same.conn_params))
  assert kl_after < kl_before
  rows = _rows(os.path.join(workdir, 'wm_connector_ft'))
  assert [r['step'] for r in rows] == [2, 4, 6]
  assert all(np.isfinite(r['train/connector_ft/kl']) for r in rows)
  # Done: a rerun restores it and trains nothing.
  again = train.train_connector_finetune(fns, c, workdir, wm_state, data, jax.random.fold_in(rng, 3))
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, again.conn_params, tuned.conn_params)))
  assert _rows(os.path.join(workdir, 'wm_connector_ft')) == rows
  # Interrupted after step 4: the resumed stage equals the uninterrupted one.
  shutil.rmtree(os.path.join(workdir, 'wm_connector_ft', 'checkpoints', '6'))
  resumed = train.train_connector_finetune(fns, c, workdir, wm_state, data, jax.random.fold_in(rng, 3))
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, resumed.conn_params, tuned.conn_params)))
  assert _rows(os.path.join(workdir, 'wm_connector_ft')) == rows
  assert fns.conn_ft_chunk._cache_size() == 1
  assert train._run_name(c, 'genrl', 'arm pointing up') == 'genrl_arm_pointing_up_cft6'


def test_wm_clip_stage(tmp_path):
  """The head's stage on fake data: lowers its loss on a fixed batch, no gradient into the world model or the
  VLM, skipped once done, resumes to the uninterrupted result with one compile."""
  c = tiny_config()
  c.wm_clip.steps = 12
  # The jitted functions do not read wm_clip.steps: share those of the end-to-end run's config.
  fns, rng, data, wm_state, batch = _stage_inputs(c)
  vlm_params = train._commit(fns.vlm_init(jax.random.fold_in(rng, 4)))
  init = fns.init_wm_clip(jax.random.fold_in(rng, 3)).params
  before = float(fns.wm_clip_loss(init, wm_state.wm_params, vlm_params, batch, rng))
  workdir = str(tmp_path)
  head = train.train_wm_clip(fns, c, workdir, wm_state, vlm_params, data, jax.random.fold_in(rng, 3))
  after = float(fns.wm_clip_loss(head, wm_state.wm_params, vlm_params, batch, rng))
  assert after < before
  # The world model and the VLM are frozen inputs: the head's loss sends them no gradient at all.
  grad_wm, grad_vlm = jax.grad(fns.wm_clip_loss, argnums=(1, 2))(
    head, wm_state.wm_params, vlm_params, batch, rng
  )
  assert float(optax.tree.norm(grad_wm)) == 0.0 and float(optax.tree.norm(grad_vlm)) == 0.0
  rows = _rows(os.path.join(workdir, 'wm_clip'))
  assert [r['step'] for r in rows] == list(range(2, 13, 2))
  assert rows[-1]['train/wm_clip/loss'] < rows[0]['train/wm_clip/loss']
  # Done: a rerun restores it and trains nothing.
  again = train.train_wm_clip(fns, c, workdir, wm_state, vlm_params, data, jax.random.fold_in(rng, 3))
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, again, head)))
  assert _rows(os.path.join(workdir, 'wm_clip')) == rows
  # Interrupted after step 10: the resumed stage equals the uninterrupted one.
  shutil.rmtree(os.path.join(workdir, 'wm_clip', 'checkpoints', '12'))
  resumed = train.train_wm_clip(fns, c, workdir, wm_state, vlm_params, data, jax.random.fold_in(rng, 3))
  assert all(jax.tree.leaves(jax.tree.map(np.array_equal, resumed, head)))
  assert _rows(os.path.join(workdir, 'wm_clip')) == rows
  assert fns.wm_clip_chunk._cache_size() == 1


def test_wm_clip_reward_is_the_cosine_of_the_head_with_the_prompt():
  """make_reward_fn('wm_clip') on states = cos(head([deter, flattened stoch]), prompt), computed in NumPy."""
  c = tiny_config()
  parts = train.functions(c).parts
  rng = jax.random.PRNGKey(5)
  h, b = c.behaviour.horizon, 3
  deter = jax.random.normal(rng, (h, b, c.wm.deter))
  stoch = jax.nn.one_hot(jax.random.randint(rng, (h, b, c.wm.stoch), 0, c.wm.classes), c.wm.classes)
  head = parts.wm_clip_head.init(rng, jnp.zeros((1, parts.feat_dim)))['params']
  prompt = vlm.normalize(jax.random.normal(jax.random.fold_in(rng, 1), (c.vlm.embed_dim,)))
  reward_fn = train.make_reward_fn(parts, 'wm_clip', None, None, {'embed': prompt, 'head': head})
  got = np.asarray(reward_fn({'deter': deter, 'stoch': stoch}))
  feat = np.concatenate([np.asarray(deter), np.asarray(stoch).reshape(h, b, -1)], -1)
  pred = np.asarray(parts.wm_clip_head.apply({'params': head}, feat))
  p = np.asarray(prompt)
  expected = pred @ p / (np.linalg.norm(pred, axis=-1) * np.linalg.norm(p))
  assert got.shape == (h, b)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def tiny_stickman_config():
  """The arm's tiny config on the stickman (`:smoke,stickman`), with shorter data and evaluation episodes:
  MJX compiles slowly on CPU, and every stage that steps the physics (collect, VLM clips, evaluation, reward
  check) is one more compile."""
  c = default.get_config('smoke,stickman')
  c.data.update(num_envs=4, length=16)
  c.vlm.update(steps=2, batch_size=8)
  c.wm.update(steps=2, log_every=1, checkpoint_every=1)
  c.behaviour.update(steps=1, log_every=1, checkpoint_every=1)
  c.env.episode_length = 16
  c.eval.episodes = 2
  return c


@pytest.mark.slow
def test_stickman_end_to_end(tmp_path):
  """Every stage on the MJX stickman: data, VLM, world model, one prompt's behaviour, evaluation."""
  c = tiny_stickman_config()
  workdir = str(tmp_path)
  wm_state, scores = train.train_and_evaluate(c, workdir)
  data = results.read_results(os.path.join(workdir, 'results.json'))
  claims = {claim.name: claim for claim in data['claims']}
  assert claims['all losses finite'].passed
  assert claims['data-free start states have the right shapes'].passed
  score = data['extra']['scores']['genrl']['stickman arms up']
  assert score == {k: v for k, v in scores['genrl']['stickman arms up'].items() if k != 'reward_check'}
  assert all(np.isfinite(score[k]) for k in ('return', 'random_return', 'expert_return', 'normalised_score'))
  assert 0 <= score['target_rank'] < 4
  # The scripted expert raises its arms within 16 steps (0.48 s); random torques do not.
  assert score['expert_return'] > score['random_return']
  accuracy = data['extra']['vlm_caption_accuracy']
  assert set(accuracy) == {'VLM_LOOK', 'AGENT_LOOK'} and all(0 <= v <= 1 for v in accuracy.values())
  check = data['extra']['reward_check']['genrl']['stickman arms up']
  assert check['reward'] == 'genrl' and np.isfinite(check['reward_expert'])
  # The world model and the actor take the stickman's 8 motor commands.
  img_in = wm_state.wm_params['img_in']['kernel']
  assert img_in.shape[0] == c.wm.stoch * c.wm.classes + 8
  parts = train.functions(c).parts
  feat = jnp.zeros((1, parts.feat_dim))
  mean, _ = parts.actor.apply(parts.actor.init(jax.random.PRNGKey(0), feat), feat)
  assert mean.shape == (1, 8)
  assert [r['step'] for r in _rows(os.path.join(workdir, 'wm'))] == [1, 2]
  assert os.path.exists(os.path.join(workdir, 'behaviour', 'genrl_stickman_arms_up', 'target_frames.png'))


@pytest.mark.parametrize(
  'key,value,match',
  [
    ('wm.seq_len', 6, 'multiple of vlm.n_frames'),
    ('behaviour.methods', ('genrl', 'dreamer'), 'unknown behaviour.methods'),
    ('behaviour.prompts', ('arm waving',), 'unknown task prompt'),
    ('wm.log_every', 7, 'must be positive and divide'),
    ('data.num_envs', 0, 'replay would be empty'),
    ('behaviour.modality', 'audio', "not 'text' or 'video'"),
    ('wm.connector_finetune_steps', 3, 'multiple of wm.log_every'),
    ('wm.connector_finetune_steps', -10, 'must be an int >= 0'),
    ('behaviour.video_dir', '/nonexistent', "needs behaviour.modality='video'"),
    ('strips.frames', 12, r'do not fit one episode of env.episode_length=32'),
    ('strips.stride', 0, 'stride, scale, frame_ms >= 1'),
    ('strips.frames', -1, 'frames must be >= 0'),
    ('connector.kl_direction', 'forward', 'is not one of'),
    ('behaviour.critic_bins', 1, r'must be 0 \(scalar critic\) or an int >= 2'),
    ('behaviour.critic_bins', -255, r'must be 0 \(scalar critic\) or an int >= 2'),
    ('wm_clip.steps', 25, r'wm_clip.checkpoint_every=10 must divide wm_clip.steps=25'),
    ('wm_clip.log_every', 3, r'be a multiple of wm_clip.log_every=3'),
    ('wm_clip.layers', -1, r'wm_clip.layers=-1 must be an int >= 0'),
    ('wm_clip.hidden', 0, r'wm_clip.hidden=0 must be an int >= 1'),
    ('wm_clip.lr', 0.0, r'wm_clip.lr=0.0 must be > 0'),
  ],
)
def test_bad_config_is_one_line_config_error(key, value, match):
  c = default.get_config('smoke')
  group, name = key.split('.')
  c[group][name] = value
  with pytest.raises(ConfigError, match=match) as info:
    train.validate(c)
  assert '\n' not in str(info.value)


def test_video_prompt_files_are_read_before_compiling_and_get_their_own_runs(tmp_path):
  c = default.get_config('smoke')
  c.behaviour.modality, c.behaviour.video_dir = 'video', str(tmp_path)
  with pytest.raises(ConfigError, match='arm_pointing_up.gif.* does not exist'):
    train.validate(c)
  from PIL import Image

  frames = [Image.new('RGB', (8, 8), (40 * i, 0, 0)) for i in range(c.vlm.n_frames)]
  frames[0].save(tmp_path / 'arm_pointing_up.gif', save_all=True, append_images=frames[1:])
  train.validate(c)
  assert train._run_name(c, 'genrl', 'arm pointing up') == 'genrl_arm_pointing_up_videofile'


def test_vlm_transfer_claim_reads_agent_look_accuracy_against_its_threshold():
  config = default.get_config('smoke')
  low = train.vlm_transfer_claim(config, {'AGENT_LOOK': 0.11, 'VLM_LOOK': 0.9})
  high = train.vlm_transfer_claim(config, {'AGENT_LOOK': 0.69, 'VLM_LOOK': 0.75})
  assert not low.passed and high.passed and high.measured == 0.69


def test_g2b_compares_genrl_with_wm_clip_only_when_both_ran():
  config = default.get_config('smoke')
  prompts = config.behaviour.prompts

  def scores(**means):
    return {m: {p: {'normalised_score': v, 'target_rank': 0} for p in prompts} for m, v in means.items()}

  claims = {c.name[:3]: c for c in train.acceptance_claims(config, scores(genrl=0.8, wm_clip=0.6))}
  assert claims['G2b'].measured == pytest.approx(0.2) and claims['G2b'].passed
  assert 'G2 ' not in claims  # No VLM-reward baseline ran: G2 is not claimed.
  claims = {c.name[:3]: c for c in train.acceptance_claims(config, scores(genrl=0.7, wm_clip=0.75))}
  assert not claims['G2b'].passed
  assert all(not c.name.startswith('G2b') for c in train.acceptance_claims(config, scores(genrl=0.8)))
