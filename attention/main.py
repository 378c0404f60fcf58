"""Stick-breaking attention, length generalisation: `python -m attention.main
--config=attention/configs/<x>.py[:smoke] --workdir=DIR`; the configs' docstrings give each experiment and
its expected result."""

from attention import train
from common import app

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
