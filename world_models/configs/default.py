"""GenRL (Mazzaglia et al., NeurIPS 2024, arXiv 2406.18043) on a pure-JAX planar arm: the shared defaults.

    python -m world_models.main --config=world_models/configs/default.py:smoke --workdir=/tmp/wm_smoke
    python -m world_models.main --config=world_models/configs/default.py:smoke,stickman --workdir=/tmp/wm_stick

`env.name` picks the environment (`env_select.py`): 'arm' (envs.py, the default) or 'stickman' (stickman.py,
MuJoCo MJX, 8 motors, 30 ms per step). `:stickman` sets it and the stickman's four prompts ('stickman
standing', 'stickman lying down', 'stickman standing on one leg', 'stickman arms up'; with `smoke` only
'stickman arms up', the prompt whose expert beats random by the widest margin); the action size, captions,
VLM words and looks come from the environment module, every size stays the same.

Stages, each a resumable sub-run of the workdir: offline data (random + scripted pose-holding actions) ->
a tiny video-language model trained on a differently coloured arm with rule captions, then frozen ->
world model + connector + aligner (one jitted scanned step, three optimizers) -> per prompt and method an
actor-critic learned in imagination from the prompt's target latents -> evaluation in the real environment
(ground-truth tolerance scores normalised by random and scripted-expert returns).

`:smoke` (CPU, under 2 minutes; research note section 5.3): 32x32 frames, 16 envs x 64 steps, VLM width 8
for 60 steps on 4-frame clips, RSSM deter 64 / stoch 8x8 / CNN depth 8 for 30 steps on 8 x 16 sequences,
one text prompt, 10 actor-critic steps with horizon 12, rollout strips of 4 frames 3 steps apart. Expected:
all losses finite, the world-model loss falls, the crafted reward and alignment checks hold, no connector
gradient reaches the world model, the aligner lowers the cosine distance of noisy embeddings. Behaviour
scores at this size are noise.

Without `smoke` this is the `gpu` plan's sizes (configs/gpu.py adds the acceptance claims and methods).
"""

import ml_collections

from common import config as config_lib

STICKMAN_PROMPTS = (
  'stickman standing',
  'stickman lying down',
  'stickman standing on one leg',
  'stickman arms up',
)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, stickman=False, seed=0)
  c = ml_collections.ConfigDict()
  c.experiment = 'default'
  c.seed = arg.seed
  # name: 'arm' (envs.py) or 'stickman' (stickman.py, MJX); see env_select.py.
  c.env = ml_collections.ConfigDict({'name': 'arm', 'image_size': 64, 'episode_length': 64})
  c.data = ml_collections.ConfigDict({'num_envs': 4096, 'length': 128, 'scripted_fraction': 0.6})
  c.vlm = ml_collections.ConfigDict(
    {
      'width': 32,
      'embed_dim': 64,
      'n_frames': 8,  # Frames per clip; the embedding of a chunk of n_frames steps is held over it.
      'batch_size': 256,
      'steps': 3000,
      'lr': 1e-3,
      'temperature': 0.07,
      # Random appearance changes of the training clips (`vlm.augment_clips`; ours, not the paper's): without
      # them the VLM, trained on VLM_LOOK only, does not carry over to the agent's look. False: one look only.
      'augment': True,
    }
  )
  c.wm = ml_collections.ConfigDict(
    {
      'deter': 512,
      'hidden': 512,
      'stoch': 32,
      'classes': 16,
      'depth': 32,
      'unimix': 0.01,
      'single_obs_posterior': True,  # GenRL: the posterior reads the observation embedding only.
      'kl_free': 1.0,
      'kl_balance': 0.85,  # GenRL/DreamerV2 balance; dyn weight = scale * balance, rep = scale * (1 - balance).
      'kl_scale': 0.6,
      'lr': 1e-4,
      'eps': 1e-8,
      'clip': 1000.0,
      'batch_size': 16,
      'seq_len': 64,  # A multiple of vlm.n_frames.
      'steps': 15000,
      'log_every': 500,
      'checkpoint_every': 2500,
      # Ours, not the paper's (the official code trains the connector only alongside the world model): after
      # the world-model stage, this many connector-only steps on the final, frozen world model's detached
      # posteriors (stage `wm_connector_ft/`; the aligner is not retrained: it never sees the world model).
      # 0 = off (faithful). A multiple of log_every. Behaviour runs get a `_cft<steps>` suffix when on.
      'connector_finetune_steps': 0,
    }
  )
  # kl_direction: 'connector_first' = KL(connector prior || sg(posterior)), the paper's and the official code's
  # (`connector_kl: forward: True`); 'posterior_first' = KL(sg(posterior) || connector prior), what this project
  # trained before 2026-11-28 (the partial gpu run's rows in the README).
  c.connector = ml_collections.ConfigDict({'kl_free': 0.0, 'lr': 1e-4, 'kl_direction': 'connector_first'})
  c.aligner = ml_collections.ConfigDict({'hidden': 32, 'noise': 0.5, 'lr': 1e-3})
  # WM-CLIP, the paper's model-based baseline (method 'wm_clip', world_models/wm_clip.py): an MLP head
  # (`layers` Linear-LN-SiLU of `hidden`, then Linear) from the world model's feature [deter, stoch] to the
  # VLM's embedding space, trained by 1 - cos against the frozen VLM's embedding of the vlm.n_frames frames
  # ending at each step, after the world model and with it frozen (stage `wm_clip/`, `batch_size` replay
  # sequences of wm.seq_len steps, `steps` Adam steps); trained only when 'wm_clip' is in behaviour.methods.
  c.wm_clip = ml_collections.ConfigDict(
    {
      'hidden': 512,
      'layers': 2,
      'lr': 3e-4,
      'batch_size': 16,
      'steps': 3000,
      'log_every': 500,
      'checkpoint_every': 1500,
    }
  )
  c.behaviour = ml_collections.ConfigDict(
    {
      'prompts': ('arm pointing up', 'arm pointing left', 'arm pointing down', 'arm folded'),
      # genrl | genrl_data_free | genrl_no_aligner | vlm_reward (VLM-RM baseline on decoded frames) | wm_clip
      # (the paper's WM-CLIP baseline: cosine of a learned latent -> VLM-embedding head with the prompt).
      'methods': ('genrl',),
      # text: the prompt's text embedding; video: the VLM embedding of a scripted demonstration of the prompt
      # drawn in the VLM's appearance (GenRL's video prompts).
      'modality': 'text',
      # With modality 'video': '' uses the scripted demonstration; a folder takes each prompt's video from
      # '<folder>/<words joined by _>.gif' (any multi-frame image Pillow reads; resized, frames spread).
      'video_dir': '',
      'hidden': 256,
      'layers': 2,
      'horizon': 16,
      'batch_size': 16,  # Replay sequences whose posterior states (batch x seq_len) start imagination.
      'data_free_batch': 256,
      'steps': 3000,
      'actor_lr': 3e-5,
      'critic_lr': 3e-5,
      'eps': 1e-5,
      'clip': 100.0,
      'gamma': 0.99,
      'lam': 0.95,
      'slow_critic_every': 100,
      # 0: a scalar critic trained by squared error (every run before 2026-11-28); 255: GenRL's and DreamerV3's
      # two-hot symlog critic (world_models/behaviour.py).
      'critic_bins': 0,
      'return_norm_rate': 0.01,
      'align_window': 8,
      'align': True,
      'video_prob': 0.5,  # Data-free: share of start latents from the connector.
      'warmup': 5,
      'log_every': 500,
      'checkpoint_every': 1000,
    }
  )
  c.eval = ml_collections.ConfigDict({'episodes': 16})
  # Rollout strips per behaviour run (`behaviour/<run>/rollout.png` and `rollout.gif`): `frames` frames
  # `stride` env steps apart of the actor's first evaluation episode (real, reconstructed by the world
  # model, imagined open loop from the same first state) and of the prompt's decoded target; 0 frames = off.
  c.strips = ml_collections.ConfigDict({'frames': 16, 'stride': 4, 'scale': 2, 'frame_ms': 200})
  # The gpu plan's acceptance (research note section 5.4); configs/gpu.py turns it on.
  c.acceptance = ml_collections.ConfigDict(
    {
      'enabled': False,
      'min_score': 0.6,
      'min_prompts': 3,
      'min_margin': 0.1,
      'min_data_free_ratio': 0.8,
      'min_vlm_transfer': 0.5,  # V0 (ours, 2026-11-28): agent-look caption accuracy; chance 1/9 on the arm.
    }
  )
  if arg.smoke:
    c.env.image_size = 32
    c.env.episode_length = 32
    c.data.num_envs = 16
    c.data.length = 64
    c.vlm.update(width=8, embed_dim=16, n_frames=4, batch_size=32, steps=60)
    c.wm.update(deter=64, hidden=64, stoch=8, classes=8, depth=8, lr=1e-3, batch_size=8, seq_len=16)
    c.wm.update(steps=30, log_every=10, checkpoint_every=10)
    c.connector.lr = 1e-3
    c.aligner.update(hidden=8, lr=3e-3)
    c.wm_clip.update(hidden=32, layers=1, lr=3e-3, batch_size=8, steps=30, log_every=10, checkpoint_every=10)
    c.behaviour.update(prompts=('arm pointing up',), hidden=32, layers=1, horizon=12, batch_size=2)
    c.behaviour.update(data_free_batch=16, steps=10, actor_lr=1e-3, critic_lr=1e-3, slow_critic_every=5)
    c.behaviour.update(log_every=5, checkpoint_every=5)
    c.eval.episodes = 4
    c.strips.update(frames=4, stride=3)
  if arg.stickman:
    c.env.name = 'stickman'
    c.behaviour.prompts = ('stickman arms up',) if arg.smoke else STICKMAN_PROMPTS
  return c
