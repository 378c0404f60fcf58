"""The paper's setting (Kazemnejad et al., arXiv 2410.01679, Table/§5 and the official configs; research note
llm.md §1.2-1.5), for GGUF conversions of its models and local data:

  models  RhoMath 1.1B (microsoft/rho-math-1b-v0.1) and DeepSeekMath 7B, each SFT'd on the target train set
          (the released SFT checkpoints realtreetune/rho-1b-sft-GSM8K, .../deepseekmath-7b-sft-GSM8K), as
          GGUF files at `model.gguf_path` (convert with llama.cpp's convert_hf_to_gguf.py; nothing is
          downloaded here);
  data    GSM8K train/test JSONL (task.source='reasoning_gym' is the offline stand-in; a GSM8K reader is
          eval_gsm.readers.read_gsm8k);
  RL      650 iterations (GSM8K; MATH 1000) of 64 problems x 8 samples, T 0.6 / top-p 0.9, 1024 new tokens,
          K = 9, at most 25 estimated states per trajectory, 2 epochs, minibatch 64, lr 1e-6, clip 0.2,
          KL 1e-4 (k3), whitened advantages; the critic (PPO) a copy of the SFT model, GAE gamma = lambda = 1.

Compute (paper, unverified): about 8 x A100/H100 for a day or more per 7B run; VinePPO 2x (7B) to 5x (1.1B)
slower per iteration than PPO, but fewer iterations to PPO's peak. Not run here.

    python -m llm_rl.main --config=llm_rl/configs/paper.py --config.model.gguf_path=/models/rho-1b-sft-gsm8k.gguf \
      --workdir=runs/paper/llm_rl/rho1b_gsm8k
"""

from llm_rl.configs import default


def get_config(arg=None):
  c = default.get_config(arg)
  c.experiment = 'paper'
  c.methods = ('vineppo', 'ppo')
  c.model.update({'kind': 'gguf', 'gguf_path': '', 'bf16': True})
  c.task.update(
    {
      'source': 'reasoning_gym',
      'rg_task': 'gsm_symbolic',
      'n_train': 7473,
      'n_test': 1319,
      'prompt': 'qa',
      'answer': 'marked',
    }
  )
  c.sft.enabled = False  # The released SFT checkpoints are the start.
  c.layout.update({'prompt_len': 512, 'response_len': 1024})
  c.rl.update(
    {
      'iterations': 650,
      'prompts_per_iteration': 64,
      'samples_per_prompt': 8,
      'epochs': 2,
      'minibatch_size': 64,
      'learning_rate': 1e-6,
      'value_learning_rate': 1e-6,
      'num_rollouts': 9,
      'max_value_steps': 25,
      'sample_batch': 512,
      'eval_every': 25,
      'eval_problems': 1319,
      'checkpoint_every': 10,
    }
  )
  c.analysis.update({'problems': 256, 'truth_rollouts': 256, 'max_states': 1024, 'ranking_states': 256})
  return c
