"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {'gap': ['-m', 'eval_gsm.main', '--config=eval_gsm/configs/default.py:smoke']},
  'gpu': {'gap': ['-m', 'eval_gsm.main', '--config=eval_gsm/configs/default.py']},
}
