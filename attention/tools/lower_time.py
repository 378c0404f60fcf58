"""Times tracing and lowering (for CUDA, on any machine) of the gradient of `--layers` chained Mosaic GPU
stick-breaking calls, and counts the Mosaic kernels in the lowered module (attention/PERF.md, v5):

    python -m attention.tools.lower_time --layers=18 --shape=8,4096,12,64

Lowering for CUDA needs no GPU, so this measures on a CPU machine the part of a model's compile time that
grows with the number of kernel call sites.
"""

from __future__ import annotations

import time

from absl import app, flags

FLAGS = flags.FLAGS


def main(argv):
  del argv
  import jax
  import jax.numpy as jnp

  from attention import kernel_mgpu

  b, t, h, d = (int(x) for x in FLAGS.shape.split(','))
  q = jax.ShapeDtypeStruct((b, t, h, d), jnp.bfloat16)

  def loss(q, k, v):
    x = q
    for _ in range(FLAGS.layers):
      x = kernel_mgpu.stick_breaking_attention_mosaic(x, k, v)[0]
    return jnp.sum(x.astype(jnp.float32))

  start = time.perf_counter()
  lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, q, q).lower(lowering_platforms=('cuda',))
  seconds = time.perf_counter() - start
  text = lowered.as_text()
  print(
    f'{FLAGS.layers} layers, shape {FLAGS.shape}: trace and lower {seconds:.1f} s; '
    f"{text.count('custom_call @mosaic_gpu')} Mosaic kernels, 'mosaic_gpu' named {text.count('mosaic_gpu')} times"
  )


if __name__ == '__main__':
  # Defined here, not at import (WORKSPACE.md: helper programs share the suite's one flag registry).
  flags.DEFINE_integer('layers', 18, 'Chained attention calls (one per layer).')
  flags.DEFINE_string('shape', '8,4096,12,64', 'B,T,H,D of each call (bfloat16).')
  app.run(main)
