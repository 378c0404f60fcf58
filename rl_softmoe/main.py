"""SoftMoE penultimate layers on MinAtar: `python -m rl_softmoe.main --config=rl_softmoe/configs/default.py[:smoke]
--workdir=DIR`."""

from common import app
from rl_softmoe import train

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
