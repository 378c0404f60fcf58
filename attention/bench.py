"""Kernel benchmark: stick-breaking (Pallas, XLA reference) against softmax (cuDNN, JAX Pallas), one process.

    python -m attention.bench                                  # default grid, bf16, causal
    python -m attention.bench --shapes=4,16,4096,128 --out=bench.json
    python -m attention.bench --smoke                          # CPU: tiny shapes, interpret mode

For every ``B,H,T,D`` it times forward and forward+backward (median over ``--repeats`` rounds of
``--iters`` calls, after compilation), reports TFLOP/s with the causal matmul convention (forward
``2*B*H*T^2*D``, forward+backward 3.5x that), the ratio to cuDNN, and the temporary memory XLA allocates for
the forward+backward program (``compiled.memory_analysis().temp_size_in_bytes``; a T x T buffer shows up
here). Before timing, each stick-breaking kernel is checked against the XLA reference on a small slice.
Implementations that are not available on the backend (cuDNN off GPU) or do not fit are reported as
skipped with the reason, never silently dropped.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Callable, Dict, List

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string('shapes', '', 'Semicolon-separated B,H,T,D; default: the grid in DEFAULT_SHAPES.')
flags.DEFINE_string(
  'impls',
  'sb_pallas,sb_xla,cudnn,softmax_pallas',
  'Comma-separated implementations (semicolons when a Mosaic variant sb_mosaic:FIELD=V,... is listed).',
)
flags.DEFINE_string('dtype', 'bfloat16', 'Input dtype.')
flags.DEFINE_integer('kv_heads', 0, 'K/V heads for GQA (0: same as H).')
flags.DEFINE_integer('iters', 10, 'Calls per timing round.')
flags.DEFINE_bool('fwd_only', False, 'Time the forward only (kernel variants whose backward is not wanted).')
flags.DEFINE_integer('repeats', 5, 'Timing rounds (median reported).')
flags.DEFINE_float('xla_limit_gib', 24.0, 'Skip the XLA reference when its fp32 T x T logits exceed this.')
flags.DEFINE_string('out', '', 'Write the rows as JSON here.')
flags.DEFINE_bool('smoke', False, 'Tiny CPU run in interpret mode (tests the benchmark itself).')
flags.DEFINE_string('block_sizes', '', 'Override BlockSizes fields, e.g. block_q=128,block_k=64.')
flags.DEFINE_string('mosaic_block_sizes', '', 'Override MosaicBlockSizes fields, e.g. stages=3,scan_parts=1.')
flags.DEFINE_string(
  'tune',
  '',
  'Semicolon-separated BlockSizes overrides to time kernel by kernel '
  '(forward, dq, dk/dv) on the first shape, instead of the comparison.',
)

DEFAULT_SHAPES = [(8, 16, 1024, 64), (8, 16, 1024, 128), (4, 16, 4096, 64), (4, 16, 4096, 128),
                  (2, 16, 8192, 64), (2, 16, 8192, 128)]  # fmt: skip
SMOKE_SHAPES = [(1, 2, 64, 32)]


def causal_flops(b: int, h: int, t: int, d: int, backward: bool) -> float:
  fwd = 2.0 * b * h * t * t * d  # QK^T and PV over the causal half: 4*B*H*T^2*D / 2
  return fwd * (3.5 if backward else 1.0)


def _time(fn: Callable, args, iters: int, repeats: int) -> float:
  import jax

  jax.block_until_ready(fn(*args))  # compile + warm up
  jax.block_until_ready(fn(*args))
  rounds = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    for _ in range(iters):
      out = fn(*args)
    jax.block_until_ready(out)
    rounds.append((time.perf_counter() - t0) / iters)
  return statistics.median(rounds)


def make_impls(interpret: bool, block_sizes, mosaic_block_sizes=None) -> Dict[str, Callable]:
  """name -> f(q, k, v) returning the attention output (a single array, for a uniform loss)."""
  import jax

  from attention import ops
  from common import nn

  def sb(impl):
    def f(q, k, v):
      sizes = mosaic_block_sizes if impl == 'mosaic' else block_sizes
      o, rem = ops.stick_breaking_attention(q, k, v, implementation=impl, interpret=interpret,
                                            block_sizes=sizes)  # fmt: skip
      return o + rem[..., None].astype(o.dtype)

    return f

  def cudnn(q, k, v):
    return nn.softmax_attention(q, k, v, implementation='cudnn')

  def softmax_pallas(q, k, v):
    from jax.experimental.pallas.ops.gpu import attention as pallas_attention

    if k.shape[2] != q.shape[2]:
      rep = q.shape[2] // k.shape[2]
      k, v = jax.numpy.repeat(k, rep, axis=2), jax.numpy.repeat(v, rep, axis=2)
    return pallas_attention.mha(q, k, v, segment_ids=None, sm_scale=q.shape[-1] ** -0.5, causal=True,
                                interpret=interpret)  # fmt: skip

  return {'sb_pallas': sb('triton'), 'sb_mosaic': sb('mosaic'), 'sb_xla': sb('xla'), 'cudnn': cudnn,
          'softmax_pallas': softmax_pallas}  # fmt: skip


def check_against_reference(fn: Callable, q, k, v) -> Dict[str, float]:
  """Relative L2 error of output and input gradients against the XLA reference, on the given inputs."""
  import jax
  import jax.numpy as jnp

  from attention import reference

  def ref(q, k, v):
    o, rem = reference.stick_breaking_attention_reference(q, k, v)
    return o + rem[..., None].astype(o.dtype)

  def loss(f):
    return lambda q, k, v: jnp.sum(f(q, k, v).astype(jnp.float32) * ct)

  ct = jax.random.normal(jax.random.PRNGKey(7), q.shape, jnp.float32)
  out = {}
  for name, a, b in zip(
    ('o', 'dq', 'dk', 'dv'),
    (fn(q, k, v),) + jax.grad(loss(fn), argnums=(0, 1, 2))(q, k, v),
    (ref(q, k, v),) + jax.grad(loss(ref), argnums=(0, 1, 2))(q, k, v),
  ):
    a, b = a.astype(jnp.float32), b.astype(jnp.float32)
    out[name] = float(jnp.linalg.norm(a - b) / jnp.maximum(jnp.linalg.norm(b), 1e-30))
  return out


def bench_shape(shape, impl_names: List[str], impls, dtype, kv_heads: int, iters: int, repeats: int,
                xla_limit_gib: float, on_gpu: bool, fwd_only: bool = False) -> List[dict]:  # fmt: skip
  import jax
  import jax.numpy as jnp

  b, h, t, d = shape
  kh = kv_heads or h
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  q = jax.random.normal(keys[0], (b, t, h, d), dtype)
  k = jax.random.normal(keys[1], (b, t, kh, d), dtype)
  v = jax.random.normal(keys[2], (b, t, kh, d), dtype)
  rows = []
  for name in impl_names:
    row = {'impl': name, 'B': b, 'H': h, 'KV': kh, 'T': t, 'D': d, 'dtype': str(jnp.dtype(dtype))}
    if (name in ('cudnn', 'softmax_pallas') or name.startswith('sb_mosaic')) and not on_gpu:
      rows.append({**row, 'skipped': 'needs a GPU'})
      continue
    if name == 'sb_xla' and b * h * t * t * 4 * 3 / 2**30 > xla_limit_gib:
      rows.append({**row, 'skipped': f'T x T fp32 logits exceed {xla_limit_gib} GiB'})
      continue
    fn = impls[name]
    fwd = jax.jit(fn)
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v).astype(jnp.float32)), argnums=(0, 1, 2)))
    try:
      if (name == 'sb_pallas' or name.startswith('sb_mosaic')) and not fwd_only:
        n = min(t, 512)
        row['check_rel_err'] = check_against_reference(fn, q[:1, :n, :2], k[:1, :n, : max(1, 2 * kh // h)],
                                                        v[:1, :n, : max(1, 2 * kh // h)])  # fmt: skip
      tf = _time(fwd, (q, k, v), iters, repeats)
      if fwd_only:
        row.update(fwd_ms=tf * 1e3, fwd_tflops=causal_flops(b, h, t, d, False) / tf / 1e12)
        rows.append(row)
        continue
      tb = _time(grad, (q, k, v), iters, repeats)
      mem = grad.lower(q, k, v).compile().memory_analysis()
    except Exception as e:  # noqa: BLE001 -- report OOM / lowering failures as rows, keep benchmarking
      rows.append({**row, 'skipped': f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'})
      logging.warning('%s %s failed: %s', name, shape, e)
      continue
    row.update(
      fwd_ms=tf * 1e3,
      fwd_bwd_ms=tb * 1e3,
      fwd_tflops=causal_flops(b, h, t, d, False) / tf / 1e12,
      fwd_bwd_tflops=causal_flops(b, h, t, d, True) / tb / 1e12,
      temp_bytes=int(getattr(mem, 'temp_size_in_bytes', -1)) if mem is not None else -1,
    )
    rows.append(row)
  base = next((r for r in rows if r['impl'] == 'cudnn' and 'fwd_ms' in r), None)
  for r in rows:
    if base is not None and 'fwd_ms' in r:
      r['fwd_vs_cudnn'] = base['fwd_ms'] / r['fwd_ms']
      if 'fwd_bwd_ms' in r:
        r['fwd_bwd_vs_cudnn'] = base['fwd_bwd_ms'] / r['fwd_bwd_ms']
  return rows


def parse_block_sizes(spec: str, head_dim: int):
  """'block_q=128,scan=matmul' -> BlockSizes (defaults for the head dim, fields overridden)."""
  import dataclasses

  from attention import kernel_gpu

  fields = dict(kv.split('=') for kv in spec.split(',') if kv)
  typed = {k: (v if k == 'scan' else int(v)) for k, v in fields.items()}
  return dataclasses.replace(kernel_gpu.BlockSizes.for_head_dim(head_dim), **typed)


def tune(shape, specs: List[str], dtype, kv_heads: int, iters: int, repeats: int) -> List[dict]:
  """Times the three GPU kernels separately for each block-size candidate."""
  import functools

  import jax
  import jax.numpy as jnp

  from attention import kernel_gpu as kg

  b, h, t, d = shape
  kh = kv_heads or h
  keys = jax.random.split(jax.random.PRNGKey(0), 4)
  q = jax.random.normal(keys[0], (b, t, h, d), dtype)
  k = jax.random.normal(keys[1], (b, t, kh, d), dtype)
  v = jax.random.normal(keys[2], (b, t, kh, d), dtype)
  do = jax.random.normal(keys[3], (b, t, h, d), dtype)
  dr = jnp.zeros((b, h, t), jnp.float32)
  rows = []
  for spec in specs:
    row = {'spec': spec, 'B': b, 'H': h, 'T': t, 'D': d}
    try:
      bs = parse_block_sizes(spec, d).fit(t)
      kw = dict(scale=d**-0.5, bs=bs, seq_len=t, interpret=False)
      fwd = jax.jit(functools.partial(kg._forward, seg=None, save_snap=False, **kw))
      fwd_snap = jax.jit(functools.partial(kg._forward, seg=None, save_snap=True, **kw))
      dq = jax.jit(functools.partial(kg._dq_call, seg=None, **kw))
      dkv = jax.jit(functools.partial(kg._dkv_call, seg=None, **kw))
      csnap = fwd_snap(q, k, v)[2]
      psnap = dq(q, k, v, do=do, dr=dr, csnap=csnap)[1]
      row['fwd_ms'] = _time(lambda q, k, v: fwd(q, k, v)[0], (q, k, v), iters, repeats) * 1e3
      row['fwd_snap_ms'] = _time(lambda q, k, v: fwd_snap(q, k, v)[0], (q, k, v), iters, repeats) * 1e3
      row['dq_ms'] = _time(lambda q, k, v: dq(q, k, v, do=do, dr=dr, csnap=csnap)[0], (q, k, v), iters,
                           repeats) * 1e3  # fmt: skip
      row['dkv_ms'] = _time(lambda q, k, v: dkv(q, k, v, do=do, dr=dr, csnap=csnap, psnap=psnap)[0],
                            (q, k, v), iters, repeats) * 1e3  # fmt: skip
      total = row['fwd_snap_ms'] + row['dq_ms'] + row['dkv_ms']
      row['fwd_tflops'] = causal_flops(b, h, t, d, False) / row['fwd_ms'] / 1e9
      row['fwd_bwd_tflops_est'] = causal_flops(b, h, t, d, True) / total / 1e9
    except Exception as e:  # noqa: BLE001 -- a candidate that does not compile is a result too
      row['skipped'] = f'{type(e).__name__}: {str(e).splitlines()[0][:200]}'
    print(json.dumps(row), flush=True)
    rows.append(row)
  return rows


def format_table(rows: List[dict]) -> str:
  head = '| impl | B | H | T | D | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | vs cuDNN (f / f+b) | temp MiB |'
  lines = [head, '|' + '---|' * 11]
  for r in rows:
    if 'skipped' in r:
      lines.append(
        f'| {r["impl"]} | {r["B"]} | {r["H"]} | {r["T"]} | {r["D"]} | skipped: {r["skipped"]} |||||| '
      )
      continue
    ratio = (
      f'{r["fwd_vs_cudnn"]:.2f} / {r.get("fwd_bwd_vs_cudnn", float("nan")):.2f}'
      if 'fwd_vs_cudnn' in r
      else '-'
    )
    fb = f'{r["fwd_bwd_ms"]:.3f} | {r["fwd_bwd_tflops"]:.1f}' if 'fwd_bwd_ms' in r else '- | -'
    mem = f'{r["temp_bytes"] / 2**20:.0f}' if 'temp_bytes' in r else '-'
    lines.append(
      f'| {r["impl"]} | {r["B"]} | {r["H"]} | {r["T"]} | {r["D"]} | {r["fwd_ms"]:.3f} | {r["fwd_tflops"]:.1f} | '
      f'{fb} | {ratio} | {mem} |'
    )
  return '\n'.join(lines)


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp

  from common import results

  on_gpu = jax.default_backend() in ('gpu', 'cuda')
  if FLAGS.shapes:
    shapes = [tuple(int(x) for x in s.split(',')) for s in FLAGS.shapes.split(';') if s]
  else:
    shapes = SMOKE_SHAPES if FLAGS.smoke else DEFAULT_SHAPES
  dtype = jnp.dtype(FLAGS.dtype)
  if FLAGS.tune:
    rows = tune(shapes[0], FLAGS.tune.split(';'), dtype, FLAGS.kv_heads, FLAGS.iters, FLAGS.repeats)
    if FLAGS.out:
      with open(FLAGS.out, 'w') as f:
        json.dump({'tune': rows, 'run': results.run_info()}, f, indent=1)
    return
  bs = parse_block_sizes(FLAGS.block_sizes, shapes[0][3]) if FLAGS.block_sizes else None
  from attention.kernel_mgpu import MosaicBlockSizes

  mbs = MosaicBlockSizes.parse(FLAGS.mosaic_block_sizes) if FLAGS.mosaic_block_sizes else None
  impls = make_impls(interpret=not on_gpu, block_sizes=bs, mosaic_block_sizes=mbs)
  names = [n for n in FLAGS.impls.split(';' if ';' in FLAGS.impls else ',') if n]
  for n in names:
    if n.startswith('sb_mosaic:'):  # a variant: sb_mosaic:scan_parts=1,stages=2
      impls[n] = make_impls(not on_gpu, bs, MosaicBlockSizes.parse(n.split(':', 1)[1]))['sb_mosaic']
  for n in names:
    if n not in impls:
      raise app.UsageError(f'unknown implementation {n!r}; choose from {", ".join(impls)}')
  iters, repeats = (1, 1) if FLAGS.smoke else (FLAGS.iters, FLAGS.repeats)
  rows = []
  for shape in shapes:
    rows += bench_shape(
      shape, names, impls, dtype, FLAGS.kv_heads, iters, repeats, FLAGS.xla_limit_gib, on_gpu, FLAGS.fwd_only
    )
    print(format_table([r for r in rows if (r['B'], r['H'], r['T'], r['D']) == shape]), flush=True)
    if FLAGS.out:  # after every shape, so a run cut short keeps what it measured
      with open(FLAGS.out, 'w') as f:
        json.dump({'rows': rows, 'run': results.run_info()}, f, indent=1)
  print(format_table(rows))


if __name__ == '__main__':
  app.run(main)
