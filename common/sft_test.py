"""SFT: answer-only loss, the loss falls, resume equals an uninterrupted run, early stop, read-back."""

import jax
import ml_collections
import numpy as np
import pytest

from common import sft
from common.errors import ConfigError
from common.tokenizers import CharTokenizer

TOK = CharTokenizer('abcdefghij+=0123456789 \n')


def _lm(**overrides):
  lm = ml_collections.ConfigDict(
    {
      'num_layers': 1,
      'd_model': 16,
      'num_heads': 2,
      'mlp_dim': 32,
      'rope_theta': 10_000.0,
      'bf16': False,
      'steps': 40,
      'batch_size': 8,
      'seq_len': 15,
      'learning_rate': 1e-2,
      'warmup_steps': 2,
      'weight_decay': 0.0,
      'grad_clip': 1.0,
      'log_every': 10,
      'checkpoint_every': 10,
    }
  )
  lm.update(overrides)
  return lm


def _data():
  texts = [(f'{a}+{b}=', f'{a + b}') for a in range(5) for b in range(5)]
  return sft.encode_texts(TOK, texts, 15)


def test_encode_texts_masks_only_the_answer_and_eos():
  data, mask, dropped = sft.encode_texts(TOK, [('1+2=', '3'), ('x' * 30, 'y')], 7)
  assert dropped == 1 and data.shape == (1, 8) and data.dtype == np.uint8
  assert data[0].tolist() == [TOK.bos_id, *TOK.encode('1+2=3'), TOK.eos_id, TOK.pad_id]
  assert mask[0].tolist() == [False] * 5 + [True, True, False]  # '3' and eos.
  with pytest.raises(ConfigError, match='longer than seq_len'):
    sft.encode_texts(TOK, [('x' * 30, 'y')], 7)


def test_validate_names_the_key():
  with pytest.raises(ConfigError, match='lm.d_model .* multiple of lm.num_heads'):
    sft.validate(_lm(d_model=15))
  with pytest.raises(ConfigError, match='model.steps must be a positive int'):
    sft.validate(_lm(steps=0), prefix='model')


def test_fit_learns_resumes_identically_and_reads_back(tmp_path):
  data, mask, _ = _data()
  full, summary, _ = sft.fit(_lm(), str(tmp_path / 'a'), data, mask, TOK.vocab_size, 0, summary_file='s.json')
  assert summary['final_train_loss'] < 0.6 * summary['initial_train_loss']
  # Stopped at step 20 (the checkpoint is forced), then resumed without the stop: bitwise the same run.
  sft.fit(
    _lm(), str(tmp_path / 'c'), data, mask, TOK.vocab_size, 0, summary_file='s.json', stop_fn=_stop_at(20)
  )
  cont, summary_c, _ = sft.fit(
    _lm(), str(tmp_path / 'c'), data, mask, TOK.vocab_size, 0, summary_file='x.json'
  )
  assert summary_c['resumed_from'] == 20 and int(cont.step) == 40
  for x, y in zip(jax.tree.leaves(full.params), jax.tree.leaves(cont.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  sft.write_summary(str(tmp_path / 'a'), 's.json', summary)
  back, saved, _ = sft.fit(
    _lm(steps=99), str(tmp_path / 'a'), data, mask, TOK.vocab_size, 0, summary_file='s.json'
  )
  assert saved['read_back'] and int(back.step) == 40


def _stop_at(step):
  def stop_fn(state, end):
    return end >= step, {'probe': float(end)}

  return stop_fn


def test_stop_fn_ends_training_early_and_logs_its_metrics(tmp_path):
  data, mask, _ = _data()
  state, summary, _ = sft.fit(
    _lm(), str(tmp_path), data, mask, TOK.vocab_size, 0, summary_file='s.json', stop_fn=_stop_at(20)
  )
  assert int(state.step) == 20 and summary['stopped_at'] == 20
  rows = [r for r in (tmp_path / 'metrics.jsonl').read_text().splitlines() if r]
  assert len(rows) == 2 and '"eval/probe": 20.0' in rows[-1]
