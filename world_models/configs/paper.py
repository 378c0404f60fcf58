"""GenRL at the paper's scale (documented; not run here).

Paper: Pietro Mazzaglia, Tim Verbelen, Bart Dhoedt, Aaron Courville, Sai Rajeswar, "GenRL: Multimodal-
foundation world models for generalization in embodied agents", NeurIPS 2024 (arXiv 2406.18043).

    python -m world_models.main --config=world_models/configs/paper.py --workdir=runs/paper/world_models

The official sizes (research note section 2.2-2.6): RSSM GRU deter 1024, hidden 1024, stoch 32 x 32 classes,
posterior from the observation embedding only; 64x64 frames, action repeat 2; CNN depth 48; decoder from stoch
(MSE); KL free 1.0, balance 0.85, scale 0.6; world-model Adam lr 1e-4, eps 1e-8, clip 1000; actor and critic
4 x 1024 with LayerNorm, Adam lr 3e-5, eps 1e-5, clip 100; gamma 0.99, lambda 0.95, slow critic copied every
100 updates, 5-95 percentile return normalisation; world-model batch 48 x 48; behaviour start states from
32 x 32 replay sequences, horizon 16; connector of the same sizes fed the 512-d InternVideo2 embedding x
sqrt(512), KL free 0, balance 0.8; aligner MLP U-Net 512 -> 256, noise 0.5.

Compute: 500k world-model + connector gradient steps per domain (the released checkpoints
`genrl_<domain>_500k_2.pt`), then 50k behaviour steps per task. On DreamerV3's published throughput (about
1M DMC-vision env steps per GPU-day at train ratio 512) this is roughly 2-4 GPU-days per domain for the world
model plus ~2-4 GPU-hours per task. The paper's tasks (DMC walker, cheetah, quadruped, stickman; 35 prompts)
and InternVideo2 embeddings need data and weights that are not available offline: this config keeps our
arm environment and tiny VLM at the paper's model sizes, so it runs, but it is not the paper's experiment.
Reading an external video-language model's embeddings from local files is not implemented yet.
"""

from common import config as config_lib
from world_models.configs import default


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False)
  c = default.get_config('smoke' if arg.smoke else None)
  c.experiment = 'paper'
  if not arg.smoke:
    c.vlm.embed_dim = 512
    c.wm.update(deter=1024, hidden=1024, stoch=32, classes=32, depth=48, batch_size=48, seq_len=48)
    c.wm.update(steps=500_000, log_every=1000, checkpoint_every=10_000)
    c.aligner.hidden = 256
    c.behaviour.update(hidden=1024, layers=4, batch_size=32, steps=50_000, log_every=1000)
    c.behaviour.update(checkpoint_every=10_000, data_free_batch=1024)
    c.behaviour.methods = ('genrl', 'genrl_data_free', 'genrl_no_aligner', 'vlm_reward')
    c.acceptance.enabled = True
  return c
