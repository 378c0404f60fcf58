"""Hyper-parameter consistency sweeps and THC:

python -m rl_hparams.main --config=rl_hparams/configs/default.py[:smoke] --workdir=DIR
"""

from common import app
from rl_hparams import train

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
