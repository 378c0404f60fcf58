"""Aligner: trained only on noisy video embeddings, it moves shifted ("text") embeddings toward the videos."""

import jax
import jax.numpy as jnp
import optax

from world_models import aligner as aligner_lib
from world_models.vlm import normalize


def test_aligner_closes_a_toy_text_video_gap():
  dim, clusters = 16, 4
  rng = jax.random.PRNGKey(0)
  centres = normalize(jax.random.normal(rng, (clusters, dim)))
  gap = normalize(jax.random.normal(jax.random.fold_in(rng, 1), (dim,)))
  # Text embeddings sit away from their videos along one shared direction (the modality gap).
  texts = normalize(centres + 0.8 * gap)
  model = aligner_lib.Aligner(dim=dim, hidden=16)
  params = model.init(rng, centres)['params']
  tx = optax.adam(3e-3)

  @jax.jit
  def train(params):
    def step(carry, i):
      params, opt = carry
      k = jax.random.fold_in(rng, i)
      videos = normalize(
        centres[jax.random.randint(k, (64,), 0, clusters)] + 0.05 * jax.random.normal(k, (64, dim))
      )
      loss, grad = jax.value_and_grad(lambda p: aligner_lib.aligner_loss(model, p, videos, k, 0.5))(params)
      updates, opt = tx.update(grad, opt, params)
      return (optax.apply_updates(params, updates), opt), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(200))
    return params, losses

  params, losses = train(params)
  assert float(losses[-20:].mean()) < float(losses[:20].mean())
  before = float(aligner_lib.cosine_distance(texts, centres))
  after = float(aligner_lib.cosine_distance(model.apply({'params': params}, texts), centres))
  assert after < 0.7 * before, (before, after)
