"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {'vineppo': ['-m', 'llm_rl.main', '--config=llm_rl/configs/default.py:smoke']},
  'gpu': {'vineppo': ['-m', 'llm_rl.main', '--config=llm_rl/configs/default.py']},
  'paper': {'vineppo': ['-m', 'llm_rl.main', '--config=llm_rl/configs/paper.py']},
}
