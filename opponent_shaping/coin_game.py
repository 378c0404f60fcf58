"""Coin Game with the LOQA / Advantage Alignment rules (one coin, alternating owner, 4 moves, torus).

Rules (LOQA `coin_game.py`, the rule set of the AdAlign / LOQA league, arXiv 2406.14662):

- A `size` x `size` torus; two players; positions are (row, col) int32 pairs.
- Four actions and no "stay": 0 = right (col + 1), 1 = left (col - 1), 2 = down (row + 1), 3 = up (row - 1),
  all modulo `size`. Both players move simultaneously; they may share a cell.
- Exactly one coin is on the board. At reset its owner is uniform in {0, 1}, the players spawn on two
  distinct uniform cells and the coin on a uniform cell occupied by neither.
- Pickup: every player whose new cell is the coin's cell gets +1 (both can pick it up on the same step).
  If the non-owner picked it up, the owner additionally gets -2 (also when both picked it up together):
      r_i = picked_i - 2·[i = owner]·picked_{other}.
- After a pickup (and only then) the owner flips, owner <- 1 - owner, and a new coin spawns uniformly on a
  cell occupied by neither player's new position (`new_coin_every_turn = False`).
- Observation of agent i: 4 binary channels of `size` x `size`, flattened channel-major
  ([4, size, size] -> 4·size²): my position, the other's position, the coin if it is mine, the coin if it
  is the other's. Agent 2 sees the same channels with the roles swapped, so one policy serves both seats.
- Episodes have a fixed length (`episode_length`); there are no done flags.

Own-coin ratio = own pickups / all pickups; random play gives 0.5, Always-Cooperate self-play 1.0.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, ClassVar

import flax
import jax
import jax.numpy as jnp
import numpy as np

from common.errors import ConfigError

# (d_row, d_col) of each action: 0 right, 1 left, 2 down, 3 up.
MOVES = ((0, 1), (0, -1), (1, 0), (-1, 0))
ACTION_NAMES = ('right', 'left', 'down', 'up')
# Reward to the coin's owner when the other player picks the coin up.
OWNER_PENALTY = -2.0


@flax.struct.dataclass
class CoinGameState:
  """Player and coin positions (int32 (row, col)), the coin's owner and the step counter."""

  player_positions: jax.Array  # int32[2, 2]
  coin_position: jax.Array  # int32[2]
  coin_owner: jax.Array  # int32 scalar in {0, 1}
  t: jax.Array  # int32 scalar


def _check_int(game: str, name: str, value, minimum: int, reason: str = '') -> None:
  """Raises a one-line ConfigError (a ValueError) unless `value` is an int >= minimum."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    because = f' ({reason})' if reason else ''
    raise ConfigError(f'{game}: `{name}` must be an integer >= {minimum}{because}, got {value!r}')


def _torus_distance(cells: jax.Array, target: jax.Array, size: int) -> jax.Array:
  """Shortest number of moves between cells on the torus: Σ_axis min(|d| mod size, size - |d| mod size)."""
  delta = jnp.mod(cells - target, size)
  return jnp.sum(jnp.minimum(delta, size - delta), axis=-1)


@dataclasses.dataclass(frozen=True)
class CoinGame:
  """The LOQA / AdAlign Coin Game (rules in the module docstring).

  Attributes:
    size: side of the square torus; at least 2 (2 players and a free cell need size² >= 3).
    episode_length: number of steps the trainer scans from `reset`.
  """

  num_agents: ClassVar[int] = 2
  action_dims: ClassVar[tuple[int, ...]] = (4,)

  size: int = 3
  episode_length: int = 50

  def __post_init__(self):
    _check_int('CoinGame', 'size', self.size, 2, 'two players and a free cell for the coin need size² >= 3')
    _check_int('CoinGame', 'episode_length', self.episode_length, 1)

  @property
  def num_cells(self) -> int:
    return self.size * self.size

  @property
  def obs_dim(self) -> int:
    return 4 * self.num_cells

  def _cell_index(self, positions: jax.Array) -> jax.Array:
    """(row, col) -> row·size + col."""
    return positions[..., 0] * self.size + positions[..., 1]

  def _cell_position(self, index: jax.Array) -> jax.Array:
    """row·size + col -> int32 (row, col)."""
    return jnp.stack([index // self.size, index % self.size], axis=-1).astype(jnp.int32)

  def _uniform_index(self, u: jax.Array, count: jax.Array | int) -> jax.Array:
    """floor(u · count) for u ~ U[0, 1), clipped to count - 1 (guards float rounding): uniform on {0..count-1}."""
    return jnp.minimum(jnp.floor(u * count).astype(jnp.int32), count - 1)

  def _spawn_coin(self, player_positions: jax.Array, u: jax.Array) -> jax.Array:
    """The k-th cell occupied by neither player, k uniform over the free cells (inverse CDF of u ~ U[0, 1)).

    One uniform per spawn keeps the compiled step small (every PRNG draw adds a hash to compile).
    """
    occupied = jnp.any(
      jnp.arange(self.num_cells)[:, None] == self._cell_index(player_positions)[None, :], axis=-1
    )
    free_so_far = jnp.cumsum(~occupied)
    k = self._uniform_index(u, free_so_far[-1])
    return self._cell_position(jnp.argmax(free_so_far > k))

  def reset(self, key: jax.Array) -> CoinGameState:
    """Players on two distinct uniform cells, the coin uniform on a cell of neither, owner uniform, t = 0.

    The second player's cell is (first + 1 + U{0, ..., size² - 2}) mod size², uniform over the other cells.
    """
    u = jax.random.uniform(key, (4,))
    first = self._uniform_index(u[0], self.num_cells)
    second = (first + 1 + self._uniform_index(u[1], self.num_cells - 1)) % self.num_cells
    positions = self._cell_position(jnp.stack([first, second]))
    return CoinGameState(
      player_positions=positions,
      coin_position=self._spawn_coin(positions, u[2]),
      coin_owner=(u[3] < 0.5).astype(jnp.int32),
      t=jnp.zeros((), dtype=jnp.int32),
    )

  def observe(self, state: CoinGameState) -> jax.Array:
    """float32[2, 4·size²]: row i = [me, other, coin if mine, coin if other's], each one-hot over cells."""
    players = jax.nn.one_hot(self._cell_index(state.player_positions), self.num_cells, dtype=jnp.float32)
    coin = jax.nn.one_hot(self._cell_index(state.coin_position), self.num_cells, dtype=jnp.float32)
    is_mine = (jnp.arange(2) == state.coin_owner).astype(jnp.float32)[:, None]  # [2, 1]
    return jnp.concatenate([players, players[::-1], is_mine * coin, (1.0 - is_mine) * coin], axis=-1)

  def step(
    self, state: CoinGameState, actions: jax.Array, key: jax.Array
  ) -> tuple[CoinGameState, jax.Array, dict[str, jax.Array]]:
    """Both players move; pickups are paid, then the owner flips and a new coin spawns if anyone picked up.

    Args:
      state: current state.
      actions: int32[2, 1], 0 right, 1 left, 2 down, 3 up.
      key: PRNG key for the coin's respawn position.

    Returns:
      (next state, rewards float32[2], info) where info holds float32[2] 'own_pickup' (agent i picked up
      its own coin) and 'other_pickup' (agent i picked up the other's coin).
    """
    moves = jnp.asarray(MOVES, dtype=jnp.int32)[jnp.asarray(actions, dtype=jnp.int32)[:, 0]]
    positions = jnp.mod(state.player_positions + moves, self.size).astype(jnp.int32)
    picked = jnp.all(positions == state.coin_position[None, :], axis=-1)  # bool[2]
    is_owner = jnp.arange(2) == state.coin_owner
    own_pickup = picked & is_owner
    other_pickup = picked & ~is_owner
    rewards = picked.astype(jnp.float32) + OWNER_PENALTY * (is_owner & jnp.any(other_pickup)).astype(
      jnp.float32
    )
    any_pickup = jnp.any(picked)
    next_state = CoinGameState(
      player_positions=positions,
      coin_position=jnp.where(
        any_pickup, self._spawn_coin(positions, jax.random.uniform(key)), state.coin_position
      ),
      coin_owner=jnp.where(any_pickup, 1 - state.coin_owner, state.coin_owner).astype(jnp.int32),
      t=state.t + 1,
    )
    info = {'own_pickup': own_pickup.astype(jnp.float32), 'other_pickup': other_pickup.astype(jnp.float32)}
    return next_state, rewards, info

  def decode_observation(self, obs_row: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(my position, other's position, coin position, coin is mine) from one agent's observation row."""
    channels = jnp.reshape(obs_row, (4, self.num_cells))
    mine_coin = jnp.sum(channels[2]) > 0.5
    return (
      self._cell_position(jnp.argmax(channels[0])),
      self._cell_position(jnp.argmax(channels[1])),
      self._cell_position(jnp.argmax(channels[2] + channels[3])),
      mine_coin,
    )

  def fixed_policies(self) -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
    """Scripted opponents acting from their own observation row; each returns int32[1].

    - 'always_defect': a uniformly chosen move among those that minimise the torus distance to the coin,
      whoever owns it (one step along a shortest path).
    - 'always_cooperate': the same toward its own coin; when the coin is the other's, a uniformly chosen
      move that does not land on it.
    - 'random': a uniform move.
    """
    return dict(_fixed_policies(self))


@functools.lru_cache(maxsize=None)
def _fixed_policies(game: CoinGame) -> dict[str, Callable[[jax.Array, jax.Array], jax.Array]]:
  """Built once per game so the same function objects come back (stable static jit arguments).

  The closures capture no JAX arrays (only numpy), so a first call under a trace leaks no tracer.
  """
  moves = np.asarray(MOVES, dtype=np.int32)

  def move_scores(obs_row, key):
    me, _, coin, mine = game.decode_observation(obs_row)
    destinations = jnp.mod(me[None, :] + moves, game.size)
    distance = _torus_distance(destinations, coin[None, :], game.size).astype(jnp.float32)
    # Tie-break noise below 1/2 never overturns an integer difference of the scores.
    noise = jax.random.uniform(key, (4,), maxval=0.5)
    return distance, noise, mine

  def always_defect(obs_row, key):
    distance, noise, _ = move_scores(obs_row, key)
    return jnp.argmin(distance + noise)[None].astype(jnp.int32)

  def always_cooperate(obs_row, key):
    distance, noise, mine = move_scores(obs_row, key)
    toward_coin = jnp.argmin(distance + noise)
    avoid_coin = jnp.argmin((distance == 0).astype(jnp.float32) + noise)
    return jnp.where(mine, toward_coin, avoid_coin)[None].astype(jnp.int32)

  def random(obs_row, key):
    del obs_row
    return jax.random.randint(key, (1,), 0, 4, dtype=jnp.int32)

  return {'always_defect': always_defect, 'always_cooperate': always_cooperate, 'random': random}
