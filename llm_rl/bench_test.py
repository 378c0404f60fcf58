"""The throughput benchmark's rows on the smoke shape (speed itself is measured on a GPU, not asserted)."""

from common import config as config_lib
from llm_rl import bench


def test_bench_rows_count_every_generated_and_trained_token():
  config = config_lib.load_config('llm_rl/configs/default.py:smoke')
  rows = bench.sampling_rows(config, batch=4, new_tokens=8, repeats=1)
  assert [r['phase'] for r in rows] == ['sampling_kv_cache', 'sampling_recompute']
  assert all(r['tokens'] == 4 * 8 and r['tokens_per_s'] > 0 for r in rows)
  train = bench.training_row(config, repeats=1)
  assert train['tokens'] == config.rl.minibatch_size * (config.layout.prompt_len + config.layout.response_len)
