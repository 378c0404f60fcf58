"""SAFT on CLIP: `python -m clip_saft.main --config=clip_saft/configs/default.py:smoke --workdir=...`."""

from clip_saft import train
from common import app

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
