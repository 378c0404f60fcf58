"""Advantage Alignment: `python -m opponent_shaping.main --config=opponent_shaping/configs/<x>.py[:smoke]
--workdir=DIR`; the configs' docstrings give each experiment and its expected result."""

from common import app
from opponent_shaping import train

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
