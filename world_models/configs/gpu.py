"""The `gpu` experiment of GenRL (arXiv 2406.18043), reduced (research note section 5.4): one H100/H200.

    python -m world_models.main --config=world_models/configs/gpu.py --workdir=runs/gpu/world_models
    python -m world_models.main --config=world_models/configs/gpu.py:methods=genrl+vlm_reward --workdir=runs/gpu/wm_two
    python -m world_models.main --config=world_models/configs/gpu.py:methods=genrl+wm_clip \
        --workdir=runs/gpu/wm_clip
    # Every method with WM-CLIP, side by side on 4 GPUs (8 parts, two per GPU):
    METHODS='genrl vlm_reward genrl_data_free genrl_no_aligner wm_clip' SPLIT=vlm_reward GPUS='0 1 2 3' \
        bash world_models/tools/parallel_methods.sh world_models/configs/gpu.py runs/gpu/wmp
    python -m world_models.main --config=world_models/configs/gpu.py:modality=video --workdir=runs/gpu/wm_video
    python -m world_models.main --config=world_models/configs/gpu.py:stickman --workdir=runs/gpu/wm_stickman
    python -m world_models.main \
        '--config=world_models/configs/gpu.py:smoke,prompts=arm pointing up+arm folded' --workdir=/tmp/wm_two
    # Connector-only fine-tune on the final world model (ours, not the paper's; default 0 = off), one command
    # in its own workdir (copy vlm/ and wm/ of a finished run into it first to reuse them; README):
    python -m world_models.main --config=world_models/configs/gpu.py --workdir=runs/gpu/wm_cft
        --config.wm.connector_finetune_steps=3000

Planar two-link arm (pure JAX, 64x64 frames rendered on device), 4096 offline episodes x 128 steps (random
and scripted pose-holding actions, 524k frames), the tiny VLM trained for 3000 steps on the differently
coloured arm, world model deter 512 / stoch 32x16 / CNN depth 32 for 15k steps at batch 16 x 64 with the
connector and aligner, then per prompt and method an actor-critic for 3000 steps (horizon 16) and 16 real
evaluation episodes per prompt. Methods: GenRL with data, data-free GenRL, GenRL without the aligner
(ablation, reported only; with `modality=video` the prompts are demonstrations, where the research note
expects the aligner to matter less), and the VLM-RM-style baseline (reward = cosine of the frozen VLM's embedding of
the decoded imagined frame with the prompt's text embedding) in the same world model. A fifth method,
`wm_clip` (WM-CLIP, the paper's model-based baseline, `world_models/wm_clip.py`: a head from the world model's
latent to the VLM's embedding space, trained after the world model for 3000 steps, reward = cosine of its
output with the prompt's embedding), is not in the default list: the complete plan already took 27 of a
session's 30 device minutes on 4 GPUs, and WM-CLIP's GPU cost is not measured yet (its reward is one MLP, so
its behaviours should learn at about GenRL's speed; its head's stage runs the frozen world model's posterior
and the VLM's frame encoder on 16 x 64 replay batches). Add it with `:methods=...+wm_clip` or METHODS (above).

Acceptance (fixed here before any run; normalised score = (return - random) / (expert - random) over 16
episodes, random and scripted-expert returns from the same initial states):
  G1 normalised score >= 0.6 on >= 3 of the 4 prompts with data;
  G2 GenRL's mean normalised score exceeds the VLM-reward baseline's by >= 0.1;
  G2b (reported when `wm_clip` runs; added 2026-11-28 after G2 failed, not in the original plan) GenRL's mean
      exceeds WM-CLIP's, the paper's own model-based baseline, by >= 0.1 (G2's margin);
  G3 data-free mean >= 0.8 x data-based mean;
  G4 the frames decoded from each prompt's target latents rank that prompt top-2 of 4 under the VLM.
  V0 (a precondition, ours since 2026-11-28) the VLM's caption accuracy on clips in the agent's look, which it
     never trained on, is >= 0.5 (chance 1/9): else text prompts cannot be grounded and G1-G4 measure nothing.
Budget (an estimate, not measured: no device time yet): world model ~15k steps at >= 60 it/s is ~4 min;
behaviour 4 prompts x 4 methods x 3000 steps ~ 8 min; each stage checkpoints and resumes, so the same
command is rerun across 10-minute calls until results.json appears.

`:stickman` runs the same plan on the MJX stickman (`stickman.py`: 8 motors, 30 ms per step) with its four
prompts ('stickman standing', 'stickman lying down', 'stickman standing on one leg', 'stickman arms up');
every size and claim stays the same. Measured on 4 x H200 (2026-11-28, partial; README): VLM 241 s, world
model about 15 minutes (17 it/s), GenRL's behaviours 36-49 actor steps/s, the VLM-reward baseline under 4, so
the whole run takes over 31 minutes of wall-clock: two sessions, carrying the trained stages with
`stage_transfer.py` (EXPORT/IMPORT of `tools/parallel_methods.sh`).

Diagnostics (not acceptance): before each behaviour, its reward on the real expert and random trajectories of
the evaluation (`reward_check.json`, two 'reward check' claims); `wm.connector_finetune_steps` stays 0 here.
"""

from common import config as config_lib
from world_models.configs import default


def get_config(arg=None):
  arg = config_lib.parse_arg(
    arg,
    smoke=False,
    stickman=False,
    methods='genrl+vlm_reward+genrl_data_free+genrl_no_aligner',  # G1, G2 first: a cut run has them.
    modality='text',
    prompts='',  # '+'-joined prompts replacing the environment's four, e.g. 'arm pointing up+arm folded'.
  )
  c = default.get_config(','.join(k for k in ('smoke', 'stickman') if arg[k]) or None)
  c.experiment = 'gpu'
  c.behaviour.methods = tuple(m for m in arg.methods.split('+') if m)
  c.behaviour.modality = arg.modality
  if arg.prompts:
    c.behaviour.prompts = tuple(p.strip() for p in arg.prompts.split('+') if p.strip())
  c.acceptance.enabled = True
  # Every 1000 world-model steps (about a minute on an H200; 2500 in default.py): a 10-minute device call
  # cut in this stage loses less (the stickman lost 1000 steps at a call boundary, 2026-11-28).
  if not arg.smoke:
    c.wm.checkpoint_every = 1000
  return c
