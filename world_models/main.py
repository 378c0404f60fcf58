"""GenRL on a planar arm: `python -m world_models.main --config=world_models/configs/default.py:smoke --workdir=...`."""

from common import app
from world_models import train

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
