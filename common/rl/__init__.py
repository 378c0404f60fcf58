"""Value-based deep RL shared by the RL projects: replay, targets, Q-network heads and the DQN/DER agents.

* `replay`: a fixed-capacity circular replay buffer that is a pytree (uniform or prioritized sampling, n-step
  windows that stop at the write head).
* `targets`: n-step returns, double-DQN targets, Huber/MSE TD losses, the C51 projection.
* `networks`: `QNetwork`, a plain/dueling/distributional head over any torso; `MatmulConv`, `nn.Conv` as a
  patch matmul (a vmapped `nn.Conv` becomes a slow grouped convolution).
* `games`: the game families (MinAtar via gymnax, Atari 100k via `atari`): checking a config's games and making
  their envs (for Atari, a whole-game raw-reward evaluation env).
* `atari`: Atari 2600 games (ale-py, the `atari` extra) behind the gymnax API with the Atari 100k protocol,
  the emulators on the host behind one `pure_callback` per vector step (in this process or, `host_workers`,
  in worker processes); human/random score tables.
* `ale_host`: `atari`'s host side in numpy and ale-py only (no JAX: the worker processes import it): batch
  stepping of the emulators, the exact area resize, the worker loop.
* `dqn`: `make_train(env, env_params, network, Config) -> Agent` (`init`, `run_chunk`, `train`, `evaluate`):
  DQN, DER and DrQ(eps) as one jitted, scanned loop whose numeric hyper-parameters (`HParams`) are traced, so
  `jax.jit(jax.vmap(agent.train))` runs seeds and sweeps in one program.

Submodules are imported on first use (`from common.rl import dqn`).
"""

import importlib

__all__ = ['ale_host', 'atari', 'dqn', 'games', 'networks', 'replay', 'targets']


def __getattr__(name):
  if name in __all__:
    return importlib.import_module(f'{__name__}.{name}')
  raise AttributeError(f"module 'common.rl' has no attribute '{name}'")
