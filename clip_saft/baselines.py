"""Classifier heads, losses and the fine-tuning methods compared with SAFT.

All methods train through one masked step (`make_finetune`), so they differ only in data, not in code paths:

- zero-shot: the class embedding is the normalised mean over prompt templates of the normalised text
  embeddings (CLIP's prompt ensemble); no training.
- full FT: cross-entropy on the zero-shot-style head, the class prompts re-encoded by the trainable text
  tower at every step; every entry of both towers trainable.
- SAFT: the same loss and step, with the sparse mask from `saft.py` (gradient, random or magnitude mask).
- linear probe (LP): only a linear head (initialised from the zero-shot head) trains, on frozen features.
- LP-FT (Kumar et al. 2022): LP first, then FT of the image tower and head from the LP head.
- FLYP (Goyal et al. 2023): fine-tune both towers with CLIP's contrastive loss between images and their
  class prompts, then classify zero-shot style.
- WiSE-FT (Wortsman et al. 2022): theta = (1 - alpha) theta_0 + alpha theta_ft, no training.

The logit scale is frozen at its pretrained value in every method (research note §6.6).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clip_saft import saft
from common import clip
from common.errors import ConfigError

OPTIMIZERS = ('adamw', 'sgd')


def prompt_tokens(tokenizer, classnames: Sequence[str], templates: Sequence[str], context_length: int):
  """(C * T, L) tokens, class-major: row c * T + t is template t filled with class c."""
  texts = [t.format(c) for c in classnames for t in templates]
  return jnp.asarray(tokenizer(texts, context_length))


def class_embeddings(model: clip.CLIP, params, tokens, num_classes: int):
  """Prompt-ensemble head (C, E): mean over templates of normalised text features, renormalised."""
  feats = clip.normalize(model.apply({'params': params}, tokens, method=clip.CLIP.encode_text))
  feats = feats.reshape(num_classes, -1, feats.shape[-1]).mean(axis=1)
  return clip.normalize(feats)


def classify_logits(model: clip.CLIP, params, images, head):
  """scale * <normalised image features, head rows>; `head` rows are unit vectors."""
  img = clip.normalize(model.apply({'params': params}, images, method=clip.CLIP.encode_image))
  scale = model.apply({'params': params}, method=clip.CLIP.scale)
  return scale * img @ head.T


def cross_entropy(logits, labels, *, reduce='mean'):
  losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return losses.mean() if reduce == 'mean' else losses.sum()


def head_of(model, state_params, tokens, num_classes, kind):
  """The classifier of a method: the text tower's prompt ensemble ('text'), or a trained linear head."""
  if kind == 'text':
    return class_embeddings(model, state_params['clip'], tokens, num_classes)
  return clip.normalize(state_params['head'])


def classification_loss(model, params, images, labels, tokens, num_classes, kind, reduce='mean'):
  head = head_of(model, params, tokens, num_classes, kind)
  return cross_entropy(classify_logits(model, params['clip'], images, head), labels, reduce=reduce)


def flyp_loss(model, params, images, labels, tokens, num_classes):
  """FLYP: CLIP's symmetric contrastive loss between images and the (first-template) prompt of their class."""
  per_class = tokens.reshape(num_classes, -1, tokens.shape[-1])[:, 0]
  img = model.apply({'params': params['clip']}, images, method=clip.CLIP.encode_image)
  txt = model.apply({'params': params['clip']}, per_class[labels], method=clip.CLIP.encode_text)
  scale = model.apply({'params': params['clip']}, method=clip.CLIP.scale)
  return clip.contrastive_loss(img, txt, scale)


def make_direction(name: str, *, weight_decay: float, clip_norm: float, b1=0.9, b2=0.999, momentum=0.9):
  """The optimizer without its learning rate (the step multiplies by -lr, so one compilation serves every
  method's lr): AdamW = clip -> Adam direction -> + wd * theta; SGD = clip -> momentum -> + wd * theta."""
  if name not in OPTIMIZERS:
    raise ConfigError(f"finetune optimizer must be one of {OPTIMIZERS}, got '{name}'")
  parts = [optax.clip_by_global_norm(clip_norm)] if clip_norm > 0 else []
  parts.append(optax.scale_by_adam(b1=b1, b2=b2) if name == 'adamw' else optax.trace(decay=momentum))
  parts.append(optax.add_decayed_weights(weight_decay))
  return optax.chain(*parts)


def cosine_lr(step, total_steps, base_lr, warmup_steps):
  step = jnp.asarray(step, jnp.float32)
  warm = base_lr * (step + 1) / jnp.maximum(warmup_steps, 1)
  progress = jnp.clip((step - warmup_steps) / jnp.maximum(total_steps - warmup_steps, 1), 0.0, 1.0)
  cos = base_lr * 0.5 * (1 + jnp.cos(jnp.pi * progress))
  return jnp.where(step < warmup_steps, warm, cos)


def make_finetune(model, *, kind: str, optimizer: str, weight_decay: float, clip_norm: float, steps: int,
                  batch_size: int, num_classes: int, warmup_steps: int = 0):  # fmt: skip
  """`finetune(params, mask, images, labels, tokens, lr, rng) -> (params, losses[steps])`: `steps` masked
  optimizer steps in one jitted scan. `kind`: 'text' (CE on the prompt-ensemble head), 'head' (CE on the
  linear head) or 'flyp' (contrastive). Minibatches: the train set permuted per epoch by fold_in(rng, epoch).

  Only `mask`'s True entries change: gradients and updates of the others are zeroed and `saft.apply_updates`
  keeps their bits. `mask`, `lr` and the data are traced: one compilation per `kind` serves every method.
  """
  direction = make_direction(optimizer, weight_decay=weight_decay, clip_norm=clip_norm)

  def loss_fn(params, images, labels, tokens):
    if kind == 'flyp':
      return flyp_loss(model, params, images, labels, tokens, num_classes)
    return classification_loss(model, params, images, labels, tokens, num_classes, kind)

  @jax.jit
  def finetune(params, mask, images, labels, tokens, lr, rng):
    tx = saft.masked(direction, mask)
    n = labels.shape[0]
    per_epoch = max(1, n // batch_size)

    def step(carry, i):
      params, opt_state = carry
      order = jax.random.permutation(jax.random.fold_in(rng, i // per_epoch), n)
      idx = jax.lax.dynamic_slice(order, ((i % per_epoch) * batch_size,), (batch_size,))
      loss, grads = jax.value_and_grad(loss_fn)(params, images[idx], labels[idx], tokens)
      direction_, opt_state = tx.update(grads, opt_state, params)
      rate = cosine_lr(i, steps, lr, warmup_steps)
      updates = jax.tree.map(lambda d: -rate * d, direction_)
      return (saft.apply_updates(params, updates, mask), opt_state), loss

    (params, _), losses = jax.lax.scan(step, (params, tx.init(params)), jnp.arange(steps))
    return params, losses

  return finetune


def make_mask_grad(model, *, num_classes: int):
  """`grad(params, images, labels, tokens)`: gradient of the summed CE on the prompt-ensemble head (SAFT's
  importance score comes from the same loss and head that training uses)."""

  @jax.jit
  def grad(params, images, labels, tokens):
    fn = lambda p: classification_loss(model, p, images, labels, tokens, num_classes, 'text', 'sum')  # noqa: E731
    return jax.grad(fn)(params)

  return grad


def make_encoders(model):
  """Jitted `(encode_images(clip_params, images), head(clip_params, tokens, C))`."""
  encode = jax.jit(lambda p, x: clip.normalize(model.apply({'params': p}, x, method=clip.CLIP.encode_image)))
  head = jax.jit(functools.partial(class_embeddings, model), static_argnums=2)
  return encode, head


def accuracy(features, head, labels, classes=None):
  """Top-1 accuracy of argmax over `head` (optionally restricted to class indices `classes`, as for
  ImageNet-A/R's 200-class subsets)."""
  logits = np.asarray(features) @ np.asarray(head).T
  if classes is not None:
    allowed = np.full(logits.shape[1], -np.inf)
    allowed[np.asarray(classes)] = 0.0
    logits = logits + allowed
  return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


def wise(params0, params_ft, alpha: float):
  """WiSE-FT weight interpolation (1 - alpha) theta_0 + alpha theta_ft. Exact at the ends: alpha = 0 gives
  theta_0 and alpha = 1 theta_ft bit for bit (x * 1 + y * 0 == x for finite y)."""
  return jax.tree.map(lambda a, b: (1.0 - alpha) * a + alpha * b, params0, params_ft)
