"""Compiles and runs the Mosaic GPU forward once per head dim, for Mosaic's dump switches (PTX, SASS, ptxas
resource usage: registers, spills) or a profiler such as Nsight Compute (attention/PERF.md).

    MOSAIC_GPU_DUMP_SASS=1 MOSAIC_GPU_DUMP_PTXAS=1 MOSAIC_GPU_DUMP_TO=/tmp/dump \\
      python -m attention.tools.mosaic_dump --head_dims=64,128

    ncu --kernel-name regex:mosaic --launch-skip 1 --launch-count 1 --section ComputeWorkloadAnalysis \\
      python -m attention.tools.mosaic_dump --head_dims=64 --shape=4,16,4096

    (--backward runs forward+backward, so the dq and dk/dv kernels are launched too: three Mosaic kernels
    per call, e.g. `--launch-skip 3 --launch-count 3`.)

Then `python -m attention.tools.mosaic_dump --count=/tmp/dump` prints, per dumped SASS file, how many
instructions of each opcode class the kernel has (whole kernel and the longest loop body).
"""

from __future__ import annotations

import collections
import glob
import os
import re

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('head_dims', '64,128', 'Head dims to compile.')
flags.DEFINE_string('block_sizes', '', 'MosaicBlockSizes fields, e.g. block_k=128.')
flags.DEFINE_string('shape', '1,2,1024', 'B,H,T of the compiled call (D from --head_dims).')
flags.DEFINE_integer('calls', 1, 'Calls after compiling (a profiler can pick one).')
flags.DEFINE_bool(
  'backward', False, 'Run forward+backward (the dq and dk/dv kernels too) instead of the forward.'
)
flags.DEFINE_string('count', '', 'Count opcodes in the SASS files of this dump folder instead of compiling.')

CLASSES = {
  'mufu': ('MUFU',),
  'tensor': ('HGMMA', 'WGMMA', 'HMMA'),
  'fp32': ('FADD', 'FMUL', 'FFMA', 'FMNMX', 'FSETP', 'FSEL', 'FCHK', 'FRND'),
  'convert': ('F2F', 'F2FP', 'I2F', 'F2I'),
  'int': ('IADD3', 'IMAD', 'ISETP', 'LOP3', 'SHF', 'LEA', 'IABS', 'SEL', 'PRMT', 'MOV'),
  'shuffle': ('SHFL',),
  'memory': ('LDS', 'STS', 'LDG', 'STG', 'LDL', 'STL', 'UTMALDG', 'UTMASTG', 'SYNCS', 'BAR'),
}


def count_sass(text: str) -> dict:
  ops = re.findall(r'/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)(?:\.[A-Z0-9_.]+)?', text)
  by_class = collections.Counter()
  for op in ops:
    cls = next((c for c, names in CLASSES.items() if op in names), 'other')
    by_class[cls] += 1
  return {'total': len(ops), **dict(by_class), 'top': collections.Counter(ops).most_common(12)}


def main(argv):
  del argv
  if FLAGS.count:
    for path in sorted(glob.glob(os.path.join(FLAGS.count, '**', '*'), recursive=True)):
      if os.path.isfile(path) and ('sass' in path.lower()):
        print(path, count_sass(open(path, errors='replace').read()))
    return
  import jax
  import jax.numpy as jnp

  from attention import kernel_mgpu

  bs = kernel_mgpu.MosaicBlockSizes.parse(FLAGS.block_sizes)
  b, h, t = (int(x) for x in FLAGS.shape.split(','))
  for d in (int(x) for x in FLAGS.head_dims.split(',')):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(key, (b, t, h, d), jnp.bfloat16) for key in keys)
    if FLAGS.backward:

      def loss(q, k, v):
        o, _ = kernel_mgpu.stick_breaking_attention_mosaic(q, k, v, block_sizes=bs)
        return jnp.sum(o.astype(jnp.float32) ** 2)

      f = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
    else:
      f = jax.jit(lambda q, k, v: kernel_mgpu.forward(q, k, v, scale=d**-0.5, block_sizes=bs))
    for _ in range(1 + FLAGS.calls):
      jax.block_until_ready(f(q, k, v))
    print('ran head dim', d, flush=True)


if __name__ == '__main__':
  app.run(main)
