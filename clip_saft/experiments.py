"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {'default': ['-m', 'clip_saft.main', '--config=clip_saft/configs/default.py:smoke']},
  'gpu': {'shapeworld_shift': ['-m', 'clip_saft.main', '--config=clip_saft/configs/gpu.py']},
  'paper': {'imagenet_vit_b16': ['-m', 'clip_saft.main', '--config=clip_saft/configs/paper.py']},
}
