"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {'thc_minatar': ['-m', 'rl_hparams.main', '--config=rl_hparams/configs/default.py:smoke']},
  'gpu': {'thc_minatar': ['-m', 'rl_hparams.main', '--config=rl_hparams/configs/default.py']},
  'paper': {'thc_atari100k': ['-m', 'rl_hparams.main', '--config=rl_hparams/configs/paper.py']},
}
