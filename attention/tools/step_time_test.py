"""Tests of the step-time tool's parsing and trace summary (the timing itself needs a device)."""

import gzip
import json
import os

import ml_collections
import pytest

from attention.tools import step_time


def test_parse_settings():
  assert step_time.parse_settings('base; xla:model.sb_implementation=xla,batch_size=8') == [
    ('base', {}),
    ('xla', {'model.sb_implementation': 'xla', 'batch_size': '8'}),
  ]
  with pytest.raises(ValueError, match='key=value'):
    step_time.parse_settings('bad:batch_size')
  with pytest.raises(ValueError, match='empty'):
    step_time.parse_settings(' ; ')


def test_apply_overrides_casts_to_the_replaced_type_and_copies():
  c = ml_collections.ConfigDict({'batch_size': 4, 'lr': 1e-3, 'flag': False, 'model': {'dtype': 'bfloat16'}})
  out = step_time.apply_overrides(
    c, {'batch_size': '8', 'lr': '0.5', 'flag': 'true', 'model.dtype': 'float32'}
  )
  assert (out.batch_size, out.lr, out.flag, out.model.dtype) == (8, 0.5, True, 'float32')
  assert (c.batch_size, c.model.dtype) == (4, 'bfloat16')
  with pytest.raises(ValueError, match='no key'):
    step_time.apply_overrides(c, {'model.nope': '1'})


def test_summarise_trace_counts_device_ops_per_step(tmp_path):
  run = tmp_path / 'plugins' / 'profile' / 'run1'
  os.makedirs(run)
  events = [
    {'ph': 'M', 'pid': 1, 'name': 'process_name', 'args': {'name': '/host:CPU'}},
    {'ph': 'M', 'pid': 2, 'name': 'process_name', 'args': {'name': '/device:GPU:0'}},
    {'ph': 'X', 'pid': 1, 'name': 'host_thing', 'dur': 1e6},
    {'ph': 'X', 'pid': 2, 'name': 'input_scatter_fusion', 'dur': 3000.0},
    {'ph': 'X', 'pid': 2, 'name': 'input_scatter_fusion', 'dur': 3000.0},
    {'ph': 'X', 'pid': 2, 'name': 'gemm', 'dur': 100.0},
  ]
  with gzip.open(run / 'vm.trace.json.gz', 'wt') as f:
    json.dump({'traceEvents': events}, f)
  rows = step_time.summarise_trace(str(tmp_path), steps=2, top=5)
  assert rows == [
    {'op': 'input_scatter_fusion', 'ms_per_step': 3.0, 'calls_per_step': 1.0},
    {'op': 'gemm', 'ms_per_step': 0.05, 'calls_per_step': 0.5},
  ]
  assert step_time.summarise_trace(str(tmp_path / 'none'), steps=1, top=5) == []
