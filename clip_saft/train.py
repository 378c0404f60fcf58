"""SAFT experiment: pretrain a mini-CLIP (or load CLIP weights), then compare fine-tuning methods.

1. `pretrain`: contrastive pretraining on the procedural web stream, one jitted scanned chunk per logging
   interval, images and captions rendered inside the step from (seed, step); checkpointed and resumable.
2. `run_methods`: for each few-shot seed, the zero-shot head (prompt ensemble), the SAFT mask (and its
   random and magnitude ablations), then every method of `config.finetune.methods`, each evaluated on the
   in-distribution and shifted splits and on the held-out ID validation split `id_val` (for choosing learning
   rates, `clip_saft.select`; never in a claim of the run itself). Finished (seed, method) results are JSON
   markers in the workdir, so a resumed run skips them.
3. Claims: `smoke` checks mechanics (exact k, frozen bits, falling losses, WiSE ends, converter round trip);
   `gpu` checks P1, P2 then C1-C3 (research note §5.2).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from clip_saft import baselines
from clip_saft import data
from clip_saft import saft
from common import checkpoint
from common import clip
from common import config as config_lib
from common import metrics
from common import results
from common import schedules
from common.errors import ConfigError

METHODS = ('zero_shot', 'lp', 'full_ft', 'lp_ft', 'flyp', 'saft', 'saft_random', 'saft_magnitude', 'wise_ft')


@flax.struct.dataclass
class PretrainState:
  step: jax.Array
  params: dict
  opt_state: optax.OptState
  rng: jax.Array


_COMPILED = {}


def cached(name: str, config, build):
  """`build()` once per (name, config): jitted closures are reused by later calls in the same process (a
  resumed run, the tests), so each function compiles once."""
  key = (name, json.dumps(config_lib.to_dict(config), sort_keys=True, default=str))
  if key not in _COMPILED:
    _COMPILED[key] = build()
  return _COMPILED[key]


def clip_config(config) -> clip.CLIPConfig:
  m = config.model
  return clip.CLIPConfig(
    image_size=config.data.image_size,
    patch_size=m.patch_size,
    vision_width=m.vision_width,
    vision_layers=m.vision_layers,
    vision_heads=m.vision_heads,
    embed_dim=m.embed_dim,
    context_length=m.context_length,
    vocab_size=data.make_tokenizer().vocab_size if config.tokenizer == 'word' else 49408,
    text_width=m.text_width,
    text_layers=m.text_layers,
    text_heads=m.text_heads,
    quick_gelu=m.quick_gelu,
    dtype=m.dtype,
  )


def check_config(config) -> None:
  unknown = [m for m in config.finetune.methods if m not in METHODS]
  if unknown:
    raise ConfigError(f"unknown finetune method '{unknown[0]}'; choose from {', '.join(METHODS)}")
  for density in (config.saft.density, *config.saft.densities):
    saft.check_density(density)
  if config.saft.eligibility not in saft.ELIGIBILITY:
    raise ConfigError(f"saft.eligibility must be one of {saft.ELIGIBILITY}, got '{config.saft.eligibility}'")
  if config.saft.score not in saft.SCORES:
    raise ConfigError(f"saft.score must be one of {saft.SCORES}, got '{config.saft.score}'")
  if config.tokenizer not in ('word', 'clip_bpe'):
    raise ConfigError(f"tokenizer must be 'word' or 'clip_bpe', got '{config.tokenizer}'")
  data.check_web_knobs(config.data.web_shape_noise, config.data.web_photo_fraction)
  val_size = config.data.get('val_size', 0)
  if not isinstance(val_size, int) or isinstance(val_size, bool) or val_size < 0:
    raise ConfigError(f'data.val_size must be an int >= 0 (0: no id_val split), got {val_size!r}')
  if data.VAL_SPLIT in config.data.eval_splits:
    raise ConfigError(
      f"data.eval_splits must not name '{data.VAL_SPLIT}' (it would count as OOD); set data.val_size"
    )
  every, log_every = config.pretrain.eval_every, config.pretrain.log_every
  if not isinstance(every, int) or every < 0 or (every and every % log_every):
    raise ConfigError(
      f'pretrain.eval_every must be 0 (off) or a positive multiple of pretrain.log_every ({log_every}), '
      f'got {every!r}'
    )


def make_tokenizer(config):
  if config.tokenizer == 'clip_bpe':
    return clip.ClipBPETokenizer(config.tokenizer_vocab or None)
  return data.make_tokenizer()


def model_input(images):
  """Procedural images in [0, 1] -> roughly zero-mean, unit-scale inputs."""
  return (images - 0.5) / 0.25


# ----------------------------------------------------------------------------------------------------------
# 1. Contrastive pretraining on the web stream.


def web_spec(config) -> dict:
  """The web split's arrays with our knobs (`data.web_shape_noise`, `data.web_photo_fraction`)."""
  d = config.data
  return data.spec_arrays(data.SPLITS['web'], d.web_shape_noise, d.web_photo_fraction)


def make_pretrain(config, model, tokenizer):
  c = config.pretrain
  lr = schedules.warmup_cosine(c.lr, max(c.steps, 1), warmup_steps=min(c.warmup_steps, max(c.steps - 1, 0)))
  # Weight decay on matrices and embeddings only, as CLIP: not on gains, biases or the logit scale.
  decay = lambda params: jax.tree.map(lambda x: x.ndim >= 2, params)  # noqa: E731
  tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(lr, weight_decay=c.weight_decay, mask=decay))
  captioner = data.Captioner(tokenizer, config.model.context_length, config.data.caption_dropout)
  spec = web_spec(config)
  num_classes, size = config.data.num_classes, config.data.image_size

  def init(rng):
    rng_init, rng_loop = jax.random.split(rng)
    params = clip.init_params(clip_config(config), rng_init)
    return PretrainState(
      step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params), rng=rng_loop
    )

  def step(state, _):
    # The web batch is a function of (seed, step): chunk `step` of the web split.
    key = data.split_key(config.seed, 'web', state.step)
    _, factors = data.split_factors(key, spec, True, 0, c.batch_size, num_classes)
    images = model_input(data.render(factors, size))
    tokens = captioner(factors)

    def loss_fn(params):
      img, txt, scale = model.apply({'params': params}, images, tokens)
      return clip.contrastive_loss(img, txt, scale)

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    out = {
      'loss': loss,
      'grad_norm': optax.tree.norm(grads),
      'update_norm': optax.tree.norm(updates),
      'param_norm': optax.tree.norm(params),
      'logit_scale': jnp.exp(params['logit_scale']),
    }
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), out

  @functools.partial(jax.jit, static_argnums=1, donate_argnums=0)
  def chunk(state, length):
    state, per_step = jax.lax.scan(step, state, None, length=length)
    return state, jax.tree.map(lambda v: v[-1], per_step)

  return init, chunk


def pretrain(config, workdir, model, tokenizer, stop_after: int | None = None, evaluator=None):
  """Pretrained CLIP params (resumes from the workdir's checkpoints); `(params, [(step, loss)])`.

  `stop_after`: return after this many steps, as a pre-empted job would (the resume test).
  `pretrain.eval_every` > 0: every that many steps and at the last, the zero-shot accuracy of the current
  params (`evaluator`, built here if None) goes into the same metrics row as the loss:
  `pretrain/zero_shot_id` (first eval split) and `pretrain/zero_shot_ood` (mean of the others).
  """
  if config.init_checkpoint:
    with np.load(config.init_checkpoint) as f:
      state_dict = dict(f)
    return clip.from_openai_state_dict(state_dict, clip_config(config)), []
  init, chunk = cached('pretrain', config, lambda: make_pretrain(config, model, tokenizer))
  c = config.pretrain
  if c.eval_every and evaluator is None:
    evaluator = Evaluator(config, model, tokenizer)
  history = []
  with checkpoint.Checkpointer(os.path.join(workdir, 'pretrain'), every=c.checkpoint_every, keep=2) as ckpt:
    state, start = ckpt.restore_or_init(init(jax.random.PRNGKey(config.seed)))
    # Restored arrays are committed to a device, fresh ones not; committing both keeps one compilation.
    state = jax.device_put(state, jax.local_devices()[0])
    with metrics.MetricWriter(workdir, resume_step=start) as writer:
      for begin, end in metrics.chunks(c.steps, c.log_every, start=start, desc='pretrain'):
        state, last = chunk(state, end - begin)
        if c.eval_every and (end % c.eval_every == 0 or end == c.steps):
          last = {**last, **evaluator.zero_shot(state.params)}
        writer.write(end, {'pretrain': last})
        ckpt.save(end, state, force=end == c.steps)
        if stop_after is not None and end >= stop_after:
          return state.params, []
  for row in metrics.read_metrics(workdir):
    if 'pretrain/loss' in row:
      history.append((row['step'], row['pretrain/loss']))
  return state.params, history


# ----------------------------------------------------------------------------------------------------------
# 2. Tasks: the few-shot train set and the evaluation splits.


def classnames(config):
  if config.data.source == 'procedural':
    return list(data.SHAPES[: config.data.num_classes])
  return data.read_class_list(config.folders.class_list)[1]


_FOLDER_TRAIN = {}


def folder_train_val(config):
  """`(val_items, rest_items)` of the ImageNet train folder: `data.val_size` images held out for `id_val`
  (stratified over classes, drawn from `config.seed`), the few-shot sets drawn from the rest. Listed once."""
  f = config.folders
  key = (f.imagenet_train_dir, f.class_list, config.data.get('val_size', 0), config.seed)
  if key not in _FOLDER_TRAIN:
    wnids, _ = data.read_class_list(f.class_list)
    items = data.read_class_folders(f.imagenet_train_dir, wnids)
    _FOLDER_TRAIN[key] = data.hold_out(items, key[2], config.seed)
  return _FOLDER_TRAIN[key]


def load_eval_sets(config):
  """{split: (images or None, labels, class subset or None, batch iterator factory)}; with `data.val_size` > 0
  also `id_val`: held-out images of the training distribution (procedural: its own split stream; folders:
  images held out of the train folder, never in a few-shot set)."""
  out = {}
  val_size = config.data.get('val_size', 0)
  if config.data.source == 'procedural':
    splits = config.data.eval_splits + (('shortcut_test',) if config.finetune.shortcut_diagnostic else ())
    sizes = [(split, config.data.eval_size) for split in splits] + (
      [(data.VAL_SPLIT, val_size)] if val_size else []
    )
    for split, size in sizes:
      images, labels, _ = data.make_split(
        config.seed, split, size, config.data.num_classes, config.data.image_size,
        chunk=config.data.render_chunk,
      )  # fmt: skip
      out[split] = {'images': model_input(images), 'labels': labels, 'classes': None}
    return out
  wnids, _ = data.read_class_list(config.folders.class_list)
  sources = {'imagenet_val': (config.folders.imagenet_val_dir, False, False)}
  sources.update(
    {
      name: (config.folders[key], by_index, subset)
      for name, (key, by_index, subset) in data.IMAGENET_VARIANTS.items()
    }
  )
  for split in config.data.eval_splits:
    root, by_index, subset = sources[split]
    items = data.read_class_folders(root, wnids, subset=subset, by_index=by_index)
    classes = sorted({label for _, label in items}) if subset else None
    out[split] = {'items': items, 'classes': classes}
  if val_size:
    out[data.VAL_SPLIT] = {'items': folder_train_val(config)[0], 'classes': None}
  return out


def load_train_set(config, ft_seed, split='train'):
  if config.data.source == 'procedural':
    n = config.data.num_classes * config.data.shots
    images, labels, _ = data.make_split(
      config.seed, split, n, config.data.num_classes, config.data.image_size, index=ft_seed,
      chunk=config.data.render_chunk,
    )  # fmt: skip
    return model_input(images), labels
  items = data.few_shot(folder_train_val(config)[1], config.data.shots, ft_seed)  # Never an id_val image.
  images, labels = data.load_images(items, config.data.image_size)
  return jnp.asarray(data.clip_normalize(images)), jnp.asarray(labels)


def batches(split, batch_size, size):
  if 'images' in split:
    for start in range(0, split['labels'].shape[0], batch_size):
      yield split['images'][start : start + batch_size], split['labels'][start : start + batch_size]
    return
  if 'uint8' not in split:  # Folder splits are decoded once, kept as uint8, and reused by every method.
    split['uint8'], split['labels_np'] = data.load_images(split['items'], size)
  for start in range(0, split['labels_np'].shape[0], batch_size):
    chunk = split['uint8'][start : start + batch_size]
    yield data.clip_normalize(chunk), split['labels_np'][start : start + batch_size]


def features(encode, params, split, batch_size, size):
  """Normalised image features of a split, in fixed-size (padded) batches: one compilation."""
  feats, labels = [], []
  for images, y in batches(split, batch_size, size):
    n = images.shape[0]
    if n < batch_size:
      images = jnp.concatenate([images, jnp.zeros((batch_size - n,) + images.shape[1:], images.dtype)])
    feats.append(np.asarray(encode(params, images))[:n])
    labels.append(np.asarray(y))
  return np.concatenate(feats), np.concatenate(labels)


# ----------------------------------------------------------------------------------------------------------
# 3. Methods.


class Evaluator:
  """Zero-shot evaluation with the prompt-ensemble head: jitted encoders, prompts and the evaluation sets
  (rendered or listed once), shared by pretraining (`pretrain.eval_every`) and the methods."""

  def __init__(self, config, model, tokenizer):
    self.config = config
    self.names = classnames(config)
    self.num_classes = len(self.names)
    self.ensemble = data.PROMPT_TEMPLATES if config.data.source == 'procedural' else data.IMAGENET_TEMPLATES
    ctx = config.model.context_length
    self.eval_tokens = baselines.prompt_tokens(tokenizer, self.names, self.ensemble, ctx)
    self.encode, self.head = cached('encoders', config, lambda: baselines.make_encoders(model))
    self.eval_sets = load_eval_sets(config)

  def evaluate(self, clip_params, head=None, splits=None) -> dict:
    """Accuracy per split; `head` None: the prompt-ensemble head of `clip_params`'s text tower."""
    if head is None:
      head = self.head(clip_params, self.eval_tokens, self.num_classes)
    out = {}
    for name, split in self.eval_sets.items():
      if splits is not None and name not in splits:
        continue
      feats, labels = features(
        self.encode, clip_params, split, self.config.eval_batch, self.config.data.image_size
      )
      out[name] = baselines.accuracy(feats, head, labels, split['classes'])
    return out

  def zero_shot(self, clip_params) -> dict:
    """{'zero_shot_id': first eval split, 'zero_shot_ood': mean of the others (absent if none)}."""
    splits = self.config.data.eval_splits
    acc = self.evaluate(clip_params, splits=splits)
    out = {'zero_shot_id': acc[splits[0]]}
    if len(splits) > 1:
      out['zero_shot_ood'] = ood_mean(acc, self.config)
    return out


class Runner:
  """Everything the methods share for one run: model, jitted functions, prompts, evaluation sets."""

  def __init__(self, config, model, tokenizer, params0, evaluator: Evaluator | None = None):
    self.config = config
    self.model = model
    self.params0 = jax.device_put(params0, jax.local_devices()[0])  # Committed, as pretrain's output.
    self.evaluator = evaluator or Evaluator(config, model, tokenizer)
    ev = self.evaluator
    self.names, self.num_classes, self.head = ev.names, ev.num_classes, ev.head
    ctx = config.model.context_length
    train_templates = ev.ensemble if config.finetune.templates == 'ensemble' else ev.ensemble[:1]
    self.train_tokens = baselines.prompt_tokens(tokenizer, self.names, train_templates, ctx)
    f = config.finetune
    common_args = dict(optimizer=f.optimizer, weight_decay=f.weight_decay, clip_norm=f.clip_norm,
                       batch_size=f.batch_size, num_classes=self.num_classes)  # fmt: skip
    self._make = lambda kind: cached(  # noqa: E731
      f'finetune_{kind}',
      config,
      lambda: baselines.make_finetune(
        model, kind=kind, steps=f.steps, warmup_steps=f.warmup_steps, **common_args
      ),
    )
    self.mask_grad = cached(
      'mask_grad', config, lambda: baselines.make_mask_grad(model, num_classes=self.num_classes)
    )

  def finetune(self, kind, params, mask, images, labels, lr, rng):
    return self._make(kind)(params, mask, images, labels, self.train_tokens, jnp.float32(lr), rng)

  def evaluate(self, clip_params, head=None, splits=None) -> dict:
    return self.evaluator.evaluate(clip_params, head, splits)


def wrap(clip_params, head):
  return {'clip': clip_params, 'head': head}


def tree_where_frozen_changed(params, params0, mask) -> int:
  """How many entries outside `mask` differ from theta_0 in any bit."""
  changed = 0
  for p, q, m in zip(jax.tree.leaves(params), jax.tree.leaves(params0), jax.tree.leaves(mask)):
    p, q = np.asarray(p), np.asarray(q)
    differs = p.view(np.uint32) != q.view(np.uint32)
    changed += int(np.sum(differs & ~np.asarray(m)))
  return changed


def run_seed(runner: Runner, ft_seed: int, workdir: str) -> dict:
  """All methods for one few-shot seed -> {method: {'acc': {split: acc}, ...}}; markers make it resumable."""
  config, f = runner.config, runner.config.finetune
  marker = os.path.join(workdir, 'methods', f'seed{ft_seed}.json')
  done = results.read_json(marker) or {}
  images, labels = load_train_set(config, ft_seed)
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), ft_seed)
  params0 = runner.params0
  head0 = runner.head(params0, runner.train_tokens, runner.num_classes)
  p0 = wrap(params0, head0)
  none = jax.tree.map(lambda x: np.zeros(np.shape(x), bool), p0)
  eligible = saft.eligible_tree(params0, config.saft.eligibility)
  out = dict(done)

  def record(name, payload):
    out[name] = payload
    results.write_json(marker, out)

  # Masks: SAFT's gradient score (one pass over the train set, float32) and the ablations.
  t0 = time.time()
  mask_batches = [
    (images[s : s + config.saft.mask_batch], labels[s : s + config.saft.mask_batch])
    for s in range(0, labels.shape[0], config.saft.mask_batch)
  ]
  grad_fn = lambda p, b: runner.mask_grad(wrap(p, head0), b[0], b[1], runner.train_tokens)['clip']  # noqa: E731
  scores = saft.accumulate_scores(grad_fn, params0, mask_batches, config.saft.score)
  masks = {}
  for density in sorted({config.saft.density, *config.saft.densities}):
    masks[f'saft@{density:g}'] = saft.top_k_mask(scores, eligible, density)
  masks['saft_random'] = saft.random_mask(jax.random.fold_in(rng, 7), params0, eligible, config.saft.density)
  masks['saft_magnitude'] = saft.magnitude_mask(params0, eligible, config.saft.density)
  mask_seconds = time.time() - t0
  headline = f'saft@{config.saft.density:g}'
  n_eligible = sum(int(np.size(p)) for p, e in zip(jax.tree.leaves(params0), jax.tree.leaves(eligible)) if e)
  k = saft.num_selected(n_eligible, config.saft.density)

  def train(kind, mask_clip, head_mask, lr, start=p0, key=0):
    mask = {'clip': mask_clip, 'head': np.full(np.shape(head0), head_mask)}
    params, losses = runner.finetune(kind, start, mask, images, labels, lr, jax.random.fold_in(rng, key))
    return params, np.asarray(losses), mask

  def evaluate(params, kind='text'):
    head = clip.normalize(params['head']) if kind == 'head' else None
    return runner.evaluate(params['clip'], head)

  methods = f.methods
  if 'zero_shot' in methods and 'zero_shot' not in done:
    record('zero_shot', {'acc': runner.evaluate(params0)})
  ft_params = None
  if any(m in methods for m in ('full_ft', 'wise_ft')) and not {'full_ft', 'wise_ft@1'} <= set(done):
    full = saft.full_mask(params0, eligible)
    ft_params, losses, mask = train('text', full, False, f.lr, key=1)
    record('full_ft', {'acc': evaluate(ft_params), 'losses': losses.tolist(), 'lr': f.lr})
  if 'wise_ft' in methods and ft_params is not None:
    for alpha in f.wise_alphas:
      mixed = baselines.wise(params0, ft_params['clip'], alpha)
      payload = {'acc': runner.evaluate(mixed), 'alpha': alpha}
      if alpha in (0.0, 1.0):
        target = params0 if alpha == 0.0 else ft_params['clip']
        payload['bit_identical'] = tree_where_frozen_changed(mixed, target, none['clip']) == 0
      record(f'wise_ft@{alpha:g}', payload)
  saft_runs = (
    [(name, m) for name, m in masks.items() if name.startswith('saft@')] if 'saft' in methods else []
  )
  saft_runs += [(name, masks[name]) for name in ('saft_random', 'saft_magnitude') if name in methods]
  for i, (name, mask_clip) in enumerate(saft_runs):
    if name in done:
      continue
    params, losses, mask = train('text', mask_clip, False, f.saft_lr, key=10 + i)
    payload = {'acc': evaluate(params), 'losses': losses.tolist(), 'lr': f.saft_lr}
    payload['mask_count'] = int(sum(np.sum(m) for m in jax.tree.leaves(mask_clip)))
    payload['k'] = k
    payload['frozen_changed'] = tree_where_frozen_changed(params['clip'], params0, mask_clip)
    payload['masked_moved'] = int(
      sum(np.sum((np.asarray(p) != np.asarray(q)) & m) for p, q, m in
          zip(jax.tree.leaves(params['clip']), jax.tree.leaves(params0), jax.tree.leaves(mask_clip)))
    )  # fmt: skip
    payload['mask_per_tensor'] = saft.mask_summary(mask_clip)
    payload['mask_seconds'] = mask_seconds
    record(name, payload)
  if ('lp' in methods or 'lp_ft' in methods) and not {'lp', 'lp_ft'} <= set(done):
    lp_params, losses, _ = train('head', none['clip'], True, f.lp_lr, key=2)
    record('lp', {'acc': evaluate(lp_params, 'head'), 'losses': losses.tolist(), 'lr': f.lp_lr})
    if 'lp_ft' in methods:
      visual = saft.eligible_tree(params0, 'image')
      lpft, losses, _ = train('head', saft.full_mask(params0, visual), True, f.lr, start=lp_params, key=3)
      record('lp_ft', {'acc': evaluate(lpft, 'head'), 'losses': losses.tolist(), 'lr': f.lr})
  if 'flyp' in methods and 'flyp' not in done:
    params, losses, _ = train('flyp', saft.full_mask(params0, eligible), False, f.lr, key=4)
    record('flyp', {'acc': evaluate(params), 'losses': losses.tolist(), 'lr': f.lr})
  if f.shortcut_diagnostic and 'shortcut' not in done:
    record('shortcut', shortcut_diagnostic(runner, ft_seed, rng, eligible, k))
  out['headline'] = headline
  return out


def shortcut_diagnostic(runner, ft_seed, rng, eligible, k):
  """Research note §6.10: train where colour predicts the class 90 % of the time, test with random colours.
  The pilot saw SAFT not helping here; the numbers are reported as they come out."""
  config, f = runner.config, runner.config.finetune
  images, labels = load_train_set(config, ft_seed, split='shortcut_train')
  params0 = runner.params0
  head0 = runner.head(params0, runner.train_tokens, runner.num_classes)
  p0 = wrap(params0, head0)
  grad_fn = lambda p, b: runner.mask_grad(wrap(p, head0), b[0], b[1], runner.train_tokens)['clip']  # noqa: E731
  bs = config.saft.mask_batch
  scores = saft.accumulate_scores(grad_fn, params0, [(images[s : s + bs], labels[s : s + bs]) for s in
                                                range(0, labels.shape[0], bs)], config.saft.score)  # fmt: skip
  out = {'zero_shot': runner.evaluate(params0, splits=('shortcut_test',))['shortcut_test']}
  for name, mask_clip, lr in (
    ('full_ft', saft.full_mask(params0, eligible), f.lr),
    ('saft', saft.top_k_mask(scores, eligible, config.saft.density), f.saft_lr),
  ):
    mask = {'clip': mask_clip, 'head': np.zeros(np.shape(head0), bool)}
    params, _ = runner.finetune('text', p0, mask, images, labels, lr, jax.random.fold_in(rng, 99))
    out[name] = runner.evaluate(params['clip'], splits=('shortcut_test',))['shortcut_test']
    if name == 'full_ft':
      mixed = baselines.wise(params0, params['clip'], 0.5)
      out['wise_ft@0.5'] = runner.evaluate(mixed, splits=('shortcut_test',))['shortcut_test']
  return out


# ----------------------------------------------------------------------------------------------------------
# 4. Claims and the whole experiment.


def ood_mean(acc: dict, config) -> float:
  ood = [s for s in config.data.eval_splits[1:] if s in acc]
  return float(np.mean([acc[s] for s in ood])) if ood else float('nan')


def summarize(per_seed: list[dict], config) -> dict:
  """Mean over seeds of ID (first eval split) and OOD-average accuracy for every method row, and of the
  held-out ID validation accuracy `id_val` where the run has that split (runs before 2026-11-28 do not)."""
  id_split = config.data.eval_splits[0]
  rows = {}
  for name in per_seed[0]:
    if not isinstance(per_seed[0][name], dict) or 'acc' not in per_seed[0][name]:
      continue
    ids = [s[name]['acc'][id_split] for s in per_seed]
    oods = [ood_mean(s[name]['acc'], config) for s in per_seed]
    splits = {k: float(np.mean([s[name]['acc'][k] for s in per_seed])) for k in per_seed[0][name]['acc']}
    rows[name] = {'id': float(np.mean(ids)), 'ood': float(np.mean(oods)), 'splits': splits}
    if data.VAL_SPLIT in splits:
      rows[name]['id_val'] = splits[data.VAL_SPLIT]
  return rows


def falls(losses, per_epoch: int = 0) -> bool:
  """Whether a loss curve falls: the mean over the last complete epoch is below the first epoch's (each
  epoch sees every training image once); without epochs, the last half of the points against the first."""
  losses = np.asarray(losses, np.float64)
  if not np.all(np.isfinite(losses)) or len(losses) < 2:
    return False
  if per_epoch and len(losses) >= 2 * per_epoch:
    epochs = len(losses) // per_epoch
    return bool(losses[(epochs - 1) * per_epoch : epochs * per_epoch].mean() < losses[:per_epoch].mean())
  half = len(losses) // 2
  return bool(losses[-half:].mean() < losses[:half].mean())


def smoke_claims(seed0: dict, pretrain_history, roundtrip_ok: bool, config) -> list:
  head = seed0[seed0['headline']]
  claims = [
    results.Claim('SAFT mask holds exactly k entries', paper=head['k'], measured=head['mask_count'],
                  passed=head['mask_count'] == head['k'], unit='entries', criterion='measured == k'),
    results.Claim.at_most('frozen entries changed after AdamW (weight decay on)', paper=0,
                          measured=head['frozen_changed'], threshold=0, unit='entries',
                          note=f"bitwise; {head['masked_moved']} masked entries moved"),
  ]  # fmt: skip
  per_epoch = max(1, config.data.num_classes * config.data.shots // config.finetune.batch_size)
  falling = {
    'pretraining': falls([loss for _, loss in pretrain_history]) if pretrain_history else True,
    'full FT': falls(seed0['full_ft']['losses'], per_epoch),
    'SAFT': falls(head['losses'], per_epoch),
  }
  claims.append(
    results.Claim('losses fall (pretraining, full FT, SAFT)', paper='falls',
                  measured=', '.join(f'{k}: {v}' for k, v in falling.items()), passed=all(falling.values()),
                  criterion='FT: last epoch mean < first epoch mean; pretraining: last half < first half')
  )  # fmt: skip
  ends = [
    seed0.get('wise_ft@0', {}).get('bit_identical', False),
    seed0.get('wise_ft@1', {}).get('bit_identical', False),
    seed0.get('wise_ft@0', {}).get('acc') == seed0['zero_shot']['acc'],
    seed0.get('wise_ft@1', {}).get('acc') == seed0['full_ft']['acc'],
  ]
  claims.append(
    results.Claim('WiSE-FT alpha 0 / 1 equal zero-shot / fine-tuned', paper='equal', measured=str(all(ends)),
                  passed=all(ends), criterion='weights bit-identical and accuracies equal')
  )  # fmt: skip
  claims.append(
    results.Claim('converter round trip (OpenAI names)', paper='exact', measured=str(roundtrip_ok),
                  passed=roundtrip_ok, criterion='to_openai -> from_openai bit-identical')
  )  # fmt: skip
  return claims


def gpu_claims(rows: dict, config) -> list:
  a = config.acceptance
  zs, ft = rows['zero_shot'], rows['full_ft']
  head = rows[f'saft@{config.saft.density:g}']
  rnd = rows.get('saft_random')
  p1 = zs['id'] >= a.p1_zero_shot_id and zs['ood'] >= a.p1_zero_shot_ood
  p2 = ft['id'] - zs['id'] >= a.p2_ft_id_gain and zs['ood'] - ft['ood'] >= a.p2_ft_ood_loss
  pre = ' (invalid: preconditions failed)' if not (p1 and p2) else ''
  claims = [
    results.Claim('P1 zero-shot is CLIP-like (ID, OOD avg)', paper=f'>= {a.p1_zero_shot_id}, {a.p1_zero_shot_ood}',
                  measured=f"{zs['id']:.3f}, {zs['ood']:.3f}", passed=bool(p1), unit='accuracy',
                  criterion='both thresholds'),
    results.Claim('P2 full FT gains ID and forgets OOD', paper=f'+{a.p2_ft_id_gain}, -{a.p2_ft_ood_loss}',
                  measured=f"{ft['id'] - zs['id']:+.3f}, {ft['ood'] - zs['ood']:+.3f}", passed=bool(p2),
                  unit='accuracy vs zero-shot', criterion='both thresholds'),
  ]  # fmt: skip
  c1 = head['ood'] - ft['ood']
  claims.append(results.Claim.at_least('C1 SAFT 0.1 % OOD avg over full FT' + pre, paper=0.0515, measured=c1,
                                       threshold=a.c1_saft_over_ft_ood, unit='accuracy'))  # fmt: skip
  c2 = abs(head['id'] - ft['id'])
  claims.append(results.Claim.at_most('C2 SAFT ID within reach of full FT' + pre, paper='comparable', measured=c2,
                                      threshold=a.c2_saft_id_gap, unit='|accuracy gap|'))  # fmt: skip
  if rnd is not None:
    c3 = head['ood'] - rnd['ood']
    claims.append(results.Claim.at_least('C3 gradient mask OOD avg over random mask' + pre, paper='better',
                                         measured=c3, threshold=a.c3_grad_over_random_ood, unit='accuracy'))  # fmt: skip
  if pre:  # Without the preconditions a claim cannot pass, whatever its number.
    claims = [c if c.name.startswith('P') else dataclasses.replace(c, passed=False) for c in claims]
  return claims


def paper_claims(rows: dict, config) -> list:
  """Full scale: SAFT 0.1 % against conventional fine-tuning on the average of the four ImageNet variants."""
  gain = rows[f'saft@{config.saft.density:g}']['ood'] - rows['full_ft']['ood']
  return [
    results.Claim.at_least('SAFT 0.1 % OOD avg over full FT (ImageNet variants)', paper=0.0515, measured=gain,
                           threshold=config.acceptance.paper_min_gain, unit='accuracy',
                           note='half the paper gain'),
  ]  # fmt: skip


def train_and_evaluate(config, workdir: str) -> dict:
  start_time = time.time()
  check_config(config)
  tokenizer = make_tokenizer(config)
  model = clip.CLIP(clip_config(config))
  evaluator = Evaluator(config, model, tokenizer)  # Evaluation sets rendered once, for both stages.
  params0, history = pretrain(config, workdir, model, tokenizer, evaluator=evaluator)
  roundtrip = clip.from_openai_state_dict(
    clip.to_openai_state_dict(params0, clip_config(config)), clip_config(config)
  )
  roundtrip_ok = all(
    np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(params0), jax.tree.leaves(roundtrip))
  )
  runner = Runner(config, model, tokenizer, params0, evaluator)
  per_seed = []
  for ft_seed in config.ft_seeds:
    per_seed.append(run_seed(runner, ft_seed, workdir))
  rows = summarize(per_seed, config)
  if config.claims == 'smoke':
    claims = smoke_claims(per_seed[0], history, roundtrip_ok, config)
  elif config.claims == 'paper':
    claims = paper_claims(rows, config)
  else:
    claims = gpu_claims(rows, config)
  plots = []
  if history:
    results.plot_curves(os.path.join(workdir, 'pretrain_loss.png'), {'contrastive': tuple(zip(*history))},
                        xlabel='step', ylabel='loss')  # fmt: skip
    plots.append('pretrain_loss.png')
  names = list(rows)
  results.plot_bars(os.path.join(workdir, 'ood_accuracy.png'), {n: rows[n]['ood'] for n in names},
                    ylabel='OOD average accuracy')  # fmt: skip
  plots.append('ood_accuracy.png')
  extra = {'rows': rows, 'shortcut': [s.get('shortcut') for s in per_seed], 'per_seed': per_seed}
  results.write_results(workdir, project='clip_saft', experiment=config.claims, claims=claims, plots=plots,
                        wall_clock_s=time.time() - start_time, extra=extra)  # fmt: skip
  return rows
