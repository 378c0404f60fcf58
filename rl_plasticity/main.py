"""NE vs TD3 and plasticity baselines: `python -m rl_plasticity.main --config=rl_plasticity/configs/default.py[:smoke]
--workdir=DIR`."""

from common import app
from rl_plasticity import train

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
