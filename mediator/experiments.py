"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {'static': ['-m', 'mediator.main', '--config=mediator/configs/default.py:smoke']},
  'gpu': {
    'supply_chain': ['-m', 'mediator.main', '--config=mediator/configs/supply_chain.py'],
    'supply_chain_lost': ['-m', 'mediator.main', '--config=mediator/configs/supply_chain_lost.py'],
  },
  'paper': {
    'static': ['-m', 'mediator.main', '--config=mediator/configs/default.py:seeds=16'],
    'supply_chain': [
      '-m',
      'mediator.main',
      '--config=mediator/configs/supply_chain.py:seeds=16,updates=5000',
    ],
  },
}
