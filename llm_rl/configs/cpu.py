"""A reduced `gpu` experiment that runs on a 2-core CPU in about 30-60 minutes (no GPU needed): a ~0.3M-parameter
character LM, chains of 2-3 steps, SFT stopped at 40 % greedy accuracy, 30 RL iterations of 16 prompts x 4
samples per method, K = 9, and the value analysis with 64-rollout ground truth. Same claims as the `gpu`
experiment; weaker evidence (one seed, small batches).

    python -m llm_rl.main --config=llm_rl/configs/cpu.py --workdir=runs/cpu/llm_rl/vineppo
"""

from llm_rl.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.experiment = 'cpu'
  c.task.update({'n_train': 5000, 'n_test': 256, 'max_steps': 3, 'test_max_steps': 3})
  c.layout.update({'prompt_len': 128, 'response_len': 48})
  c.model.update({'num_layers': 2, 'd_model': 96, 'num_heads': 3, 'mlp_dim': 256, 'bf16': False})
  c.sft.update(
    {
      'steps': 3000,
      'batch_size': 32,
      'learning_rate': 2e-3,
      'warmup_steps': 50,
      'log_every': 100,
      'checkpoint_every': 500,
      'stop_accuracy': 0.4,
      'eval_problems': 64,
      'min_steps_before_stop': 200,
    }
  )
  c.rl.update(
    {
      'iterations': 30,
      'prompts_per_iteration': 16,
      'samples_per_prompt': 4,
      'minibatch_size': 32,
      'learning_rate': 1e-4,
      'value_learning_rate': 3e-4,
      'sample_batch': 64,
      'eval_every': 5,
      'eval_problems': 256,
      'checkpoint_every': 5,
    }
  )
  c.analysis.update({'problems': 32, 'truth_rollouts': 64, 'max_states': 96, 'ranking_states': 16})
  return c
