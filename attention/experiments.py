"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {
    'stdlib_lm': ['-m', 'attention.main', '--config=attention/configs/default.py:smoke'],
  },
  'gpu': {
    'char_lm': ['-m', 'attention.main', '--config=attention/configs/char_lm.py'],
    'flipflop': ['-m', 'attention.main', '--config=attention/configs/flipflop.py'],
  },
  'paper': {
    'paper_lm': ['-m', 'attention.main', '--config=attention/configs/paper.py'],
  },
}
