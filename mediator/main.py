"""A manager paying incentives to factories: `python -m mediator.main --config=mediator/configs/default.py[:smoke]
--workdir=DIR`."""

from common import app
from mediator import train

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
