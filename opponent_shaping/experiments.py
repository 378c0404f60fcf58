"""What reproduce.py runs for each preset (plain data, read without importing the project)."""

EXPERIMENTS = {
  'smoke': {
    'ipd_tabular': ['-m', 'opponent_shaping.main', '--config=opponent_shaping/configs/default.py:smoke'],
  },
  'gpu': {
    'ipd_gru': ['-m', 'opponent_shaping.main', '--config=opponent_shaping/configs/ipd_gru.py'],
    'coin_game': ['-m', 'opponent_shaping.main', '--config=opponent_shaping/configs/coin_game.py'],
    'negotiation': ['-m', 'opponent_shaping.main', '--config=opponent_shaping/configs/negotiation.py'],
  },
  'paper': {
    'ipd_gru': ['-m', 'opponent_shaping.main', '--config=opponent_shaping/configs/ipd_gru.py:seeds=10'],
    'coin_game': [
      '-m',
      'opponent_shaping.main',
      '--config=opponent_shaping/configs/coin_game.py:seeds=10,updates=25400',
    ],
    'negotiation': [
      '-m',
      'opponent_shaping.main',
      '--config=opponent_shaping/configs/negotiation.py:seeds=10',
    ],
  },
}
