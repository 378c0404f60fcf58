"""VinePPO vs PPO, GRPO and RLOO: `python -m llm_rl.main --config=llm_rl/configs/default.py[:smoke] --workdir=DIR`;
the config's docstring gives the experiment and its expected result."""

from common import app
from llm_rl import train

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
