"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {'minatar': ['-m', 'rl_softmoe.main', '--config=rl_softmoe/configs/default.py:smoke']},
  'gpu': {'minatar': ['-m', 'rl_softmoe.main', '--config=rl_softmoe/configs/default.py']},
}
