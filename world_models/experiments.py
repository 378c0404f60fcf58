"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {
    'arm': ['-m', 'world_models.main', '--config=world_models/configs/default.py:smoke'],
    'stickman': ['-m', 'world_models.main', '--config=world_models/configs/default.py:smoke,stickman'],
  },
  'gpu': {
    'arm': ['-m', 'world_models.main', '--config=world_models/configs/gpu.py'],
    'stickman': ['-m', 'world_models.main', '--config=world_models/configs/gpu.py:stickman'],
  },
  'paper': {'arm': ['-m', 'world_models.main', '--config=world_models/configs/paper.py']},
}
