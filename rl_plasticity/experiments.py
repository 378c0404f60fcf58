"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {'pendulum': ['-m', 'rl_plasticity.main', '--config=rl_plasticity/configs/default.py:smoke']},
  'gpu': {
    'halfcheetah_rr1': ['-m', 'rl_plasticity.main', '--config=rl_plasticity/configs/gpu.py:env=halfcheetah'],
    'hopper_rr1': ['-m', 'rl_plasticity.main', '--config=rl_plasticity/configs/gpu.py:env=hopper'],
    'halfcheetah_rr4': [
      '-m',
      'rl_plasticity.main',
      '--config=rl_plasticity/configs/gpu.py:env=halfcheetah,stress',
    ],
    'hopper_rr4': ['-m', 'rl_plasticity.main', '--config=rl_plasticity/configs/gpu.py:env=hopper,stress'],
  },
  'paper': {
    'halfcheetah': ['-m', 'rl_plasticity.main', '--config=rl_plasticity/configs/paper.py:env=halfcheetah'],
    'hopper': ['-m', 'rl_plasticity.main', '--config=rl_plasticity/configs/paper.py:env=hopper'],
    'walker2d': ['-m', 'rl_plasticity.main', '--config=rl_plasticity/configs/paper.py:env=walker2d'],
    'ant': ['-m', 'rl_plasticity.main', '--config=rl_plasticity/configs/paper.py:env=ant'],
    'humanoid': ['-m', 'rl_plasticity.main', '--config=rl_plasticity/configs/paper.py:env=humanoid'],
  },
}
