"""Q-network heads for the value-based agents: plain, dueling and distributional (C51), over any torso.

The agents in `common.rl.dqn` call the network on ONE observation at a time (they `jax.vmap` it over batches,
as Dopamine does), so a torso that tokenizes its input (SoftMoE) never mixes samples. A network maps one
observation to Q-values `[A]`, or to atom logits `[A, K]` for a distributional agent (`num_atoms = K > 1`).
Any Flax module with that contract works; `QNetwork` builds one from a torso (encoder and penultimate layers,
e.g. `common.nn.MLP(..., activate_final=True)` or a CNN followed by a SoftMoE block) and a head.
"""

from __future__ import annotations

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ['QNetwork']


class QNetwork(nn.Module):
  """`torso` followed by a linear Q head: plain, dueling (Wang et al., 2016), and/or C51 atoms.

  Output: `[A]` Q-values when `num_atoms == 1`, else `[A, num_atoms]` atom logits (the agent applies the
  softmax and the support). The dueling head combines a value stream and an advantage stream as
  `V + A - mean_a A` (per atom, as Dopamine's Rainbow does).

  Attributes:
    torso: maps one observation to a feature vector (its output is flattened); None uses the flattened
      observation itself.
    num_actions: number of discrete actions `A`.
    num_atoms: `K`; 1 for a scalar Q-value.
    dueling: use a dueling head.
  """

  torso: Optional[nn.Module]
  num_actions: int
  num_atoms: int = 1
  dueling: bool = False

  @nn.compact
  def __call__(self, obs: jax.Array) -> jax.Array:
    """Q-values `[A]` (or logits `[A, K]`) of one observation."""
    x = obs if self.torso is None else self.torso(obs)
    x = jnp.reshape(x, (-1,)).astype(jnp.float32)
    shape = (self.num_actions,) if self.num_atoms == 1 else (self.num_actions, self.num_atoms)
    advantage = nn.Dense(self.num_actions * self.num_atoms, name='advantage' if self.dueling else 'q')(x)
    advantage = advantage.reshape(shape)
    if not self.dueling:
      return advantage
    value = nn.Dense(self.num_atoms, name='value')(x).reshape((1,) + shape[1:])
    return value + advantage - jnp.mean(advantage, axis=0, keepdims=True)
