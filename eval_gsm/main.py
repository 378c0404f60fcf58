"""Compositional GSM: `python -m eval_gsm.main --config=eval_gsm/configs/default.py[:smoke] --workdir=DIR`;
the config's docstring gives the experiment and its expected result. `python -m eval_gsm.serve` serves a model
over an OpenAI-compatible HTTP API."""

from common import app
from eval_gsm import train

if __name__ == '__main__':
  app.run(train.train_and_evaluate)
