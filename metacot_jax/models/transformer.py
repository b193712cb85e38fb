"""A decoder-only transformer with a policy (LM) head and a value (PRM) head.

One trunk, two heads: `logits_BxLxV` is the next-token policy, `value_logits_BxL`
the PRM's logit that the prefix ending at each position leads to a right answer.
The module is pure: a KV cache, when used, is passed in and returned.

Positions are explicit (`positions_BxL`), so one batch can hold rows at different
depths of decoding: with a cache, keys at cache slots `<= position` are visible
to a query, which is exactly causal attention over what that row has written.
Training rows may pack several examples (`data.examples.pack`): `segments_BxL`
numbers them, positions restart in each, and a token sees only its own example.

Positions enter as rotary embeddings of queries and keys (`position="rope"`), so
attention sees how far back a token is, not where it is: a step's arithmetic reads
the same at position 20 as at 150, after any number of backtracks. `"learned"` adds
a learned embedding per absolute position instead (runs from before RoPE).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp


POSITIONS = ("rope", "learned")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Size of the policy-value LM. Hashable: pass it as a static argument."""
  vocab_size: int
  max_len: int = 256
  d_model: int = 128
  num_layers: int = 4
  num_heads: int = 4
  d_ff: int = 512
  dtype: str = "float32"  # compute dtype ('bfloat16' on GPU/TPU); params and logits stay float32
  position: str = "rope"  # 'rope' (rotary, relative) or 'learned' (absolute embeddings)
  # the first `local_heads` heads of every layer see only the last `local_window` positions
  # (their own included); the rest see everything. A mask, no parameters.
  local_heads: int = 0
  local_window: int = 32

  def __post_init__(self):
    if self.dtype not in ("float32", "bfloat16"):
      raise ValueError(f"ModelConfig.dtype must be 'float32' or 'bfloat16', got {self.dtype!r}")
    if self.position not in POSITIONS:
      raise ValueError(f"ModelConfig.position must be one of {POSITIONS}, got {self.position!r}")
    if self.d_model % self.num_heads:
      raise ValueError(f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}")
    for field in ("vocab_size", "max_len", "d_model", "num_layers", "num_heads", "d_ff"):
      if getattr(self, field) <= 0:
        raise ValueError(f"ModelConfig.{field} must be positive, got {getattr(self, field)}")
    if not 0 <= self.local_heads <= self.num_heads:
      raise ValueError(f"ModelConfig.local_heads must be 0 to num_heads={self.num_heads}, got "
                       f"{self.local_heads}")
    if self.local_window < 1:
      raise ValueError(f"ModelConfig.local_window must be positive, got {self.local_window}")
    if self.position == "rope" and self.head_dim % 2:
      raise ValueError(f"rotary positions need an even head size, got d_model / num_heads = "
                       f"{self.head_dim}")

  @property
  def head_dim(self) -> int:
    return self.d_model // self.num_heads

  def flops_per_token(self, context: int) -> float:
    """Forward FLOPs per token (matmuls and attention), as in the PaLM appendix."""
    d, f, n = self.d_model, self.d_ff, self.num_layers
    matmul = n * (4 * d * d + 2 * d * f) + d * self.vocab_size + d * d + d
    return 2.0 * matmul + 2.0 * 2 * n * context * d


class KVCache(NamedTuple):
  """One layer's keys and values; slot t holds the token at position t.

  Heads before time, so attention reads the cache in place (a [B, T, H, K] layout
  made every decode step transpose the whole cache: 3x slower decoding).
  """
  k_BxHxTxK: jax.Array
  v_BxHxTxK: jax.Array


def init_cache(config: ModelConfig, batch: int) -> tuple[KVCache, ...]:
  shape = (batch, config.num_heads, config.max_len, config.head_dim)
  zeros = jnp.zeros(shape, config.dtype)
  return tuple(KVCache(zeros, zeros) for _ in range(config.num_layers))


def rotate(x_BxLxHxK, positions_BxL, base: float = 10_000.0):
  """Rotary position embedding (Su et al., 2021): channel pairs turned by angles proportional
  to the position, so that q . k depends on positions only through their gap. Pairs are
  (i, i + K/2), the split-half layout of GPT-NeoX, not adjacent channels."""
  half = x_BxLxHxK.shape[-1] // 2  # J = K / 2 below
  freqs_J = base ** (-jnp.arange(half, dtype=jnp.float32) / half)
  angles_BxLx1xJ = (positions_BxL[..., None].astype(jnp.float32) * freqs_J)[:, :, None, :]
  cos, sin = jnp.cos(angles_BxLx1xJ), jnp.sin(angles_BxLx1xJ)
  x1, x2 = jnp.split(x_BxLxHxK.astype(jnp.float32), 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).astype(x_BxLxHxK.dtype)


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD, positions_BxL, cache: KVCache | None, segments_BxL=None):
    cfg = self.config
    qkv = nn.DenseGeneral((3, cfg.num_heads, cfg.head_dim), dtype=cfg.dtype, name="qkv")
    q_BxLxHxK, k_BxLxHxK, v_BxLxHxK = jnp.moveaxis(qkv(x_BxLxD), 2, 0)
    if cfg.position == "rope":  # keys are cached rotated: each by its own position
      q_BxLxHxK, k_BxLxHxK = rotate(q_BxLxHxK, positions_BxL), rotate(k_BxLxHxK, positions_BxL)
    if cache is None:
      keys = jnp.swapaxes(k_BxLxHxK, 1, 2)
      values = jnp.swapaxes(v_BxLxHxK, 1, 2)
      key_pos = positions_BxL
    else:
      rows_Bx1 = jnp.arange(x_BxLxD.shape[0])[:, None]
      # advanced indices around a slice: the indexed [B, L] axes come first, as in k_BxLxHxK
      keys = cache.k_BxHxTxK.at[rows_Bx1, :, positions_BxL].set(k_BxLxHxK)
      values = cache.v_BxHxTxK.at[rows_Bx1, :, positions_BxL].set(v_BxLxHxK)
      cache = KVCache(keys, values)
      key_pos = jnp.broadcast_to(jnp.arange(cfg.max_len), (x_BxLxD.shape[0], cfg.max_len))
    gap_BxLxT = positions_BxL[:, :, None] - key_pos[:, None, :]
    visible_BxLxT = gap_BxLxT >= 0
    if segments_BxL is not None:  # packed rows (no cache): attend within one's own example
      visible_BxLxT &= segments_BxL[:, :, None] == segments_BxL[:, None, :]
    visible_Bx1xLxT = visible_BxLxT[:, None]
    if cfg.local_heads:  # local heads: only the last local_window positions
      local_Hx1x1 = (jnp.arange(cfg.num_heads) < cfg.local_heads)[:, None, None]
      visible_Bx1xLxT = visible_Bx1xLxT & ~(local_Hx1x1 & (gap_BxLxT[:, None] >= cfg.local_window))
    scores_BxHxLxT = jnp.einsum("blhk,bhtk->bhlt", q_BxLxHxK, keys) / jnp.sqrt(cfg.head_dim)
    # finfo.min rather than -inf: a fully masked row then stays finite (uniform), never NaN.
    scores_BxHxLxT = jnp.where(visible_Bx1xLxT, scores_BxHxLxT,
                               jnp.finfo(scores_BxHxLxT.dtype).min)
    probs_BxHxLxT = jax.nn.softmax(scores_BxHxLxT.astype(jnp.float32), axis=-1).astype(cfg.dtype)
    out_BxLxHxK = jnp.einsum("bhlt,bhtk->blhk", probs_BxHxLxT, values)
    out_BxLxD = nn.DenseGeneral(cfg.d_model, axis=(-2, -1), dtype=cfg.dtype, name="out")(out_BxLxHxK)
    return out_BxLxD, cache


class Block(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x_BxLxD, positions_BxL, cache, segments_BxL=None):
    cfg = self.config
    h, cache = Attention(cfg, name="attn")(nn.LayerNorm(dtype=cfg.dtype)(x_BxLxD),
                                           positions_BxL, cache, segments_BxL)
    x_BxLxD = x_BxLxD + h
    h = nn.Dense(cfg.d_ff, dtype=cfg.dtype)(nn.LayerNorm(dtype=cfg.dtype)(x_BxLxD))
    h = nn.Dense(cfg.d_model, dtype=cfg.dtype)(nn.gelu(h))
    return x_BxLxD + h, cache


class PolicyValueLM(nn.Module):
  """`(tokens, positions, cache, segments) -> (logits, value_logits, cache)`."""
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens_BxL, positions_BxL=None, cache=None, segments_BxL=None):
    cfg = self.config
    if segments_BxL is not None and cache is not None:
      raise ValueError("segments (packed training rows) and a KV cache cannot be combined")
    if segments_BxL is not None and positions_BxL is None:
      raise ValueError("packed rows need their positions (restarting in each example) beside "
                       "the segments; data.examples.pack gives both")
    if cfg.position == "learned" and cache is None and tokens_BxL.shape[1] > cfg.max_len:
      raise ValueError(f"rows of {tokens_BxL.shape[1]} tokens do not fit a model with learned "
                       f"positions for {cfg.max_len}; cut the rows or build it with a longer "
                       "max_len")
    if positions_BxL is None:
      positions_BxL = jnp.broadcast_to(jnp.arange(tokens_BxL.shape[1]), tokens_BxL.shape)
    x_BxLxD = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype, name="embed")(tokens_BxL)
    if cfg.position == "learned":
      pos_emb = self.param("pos_embed", nn.initializers.normal(0.02), (cfg.max_len, cfg.d_model))
      x_BxLxD = x_BxLxD + pos_emb[positions_BxL].astype(cfg.dtype)
    new_cache = []
    for i in range(cfg.num_layers):
      x_BxLxD, layer_cache = Block(cfg, name=f"block_{i}")(
          x_BxLxD, positions_BxL, None if cache is None else cache[i], segments_BxL)
      new_cache.append(layer_cache)
    x_BxLxD = nn.LayerNorm(dtype=cfg.dtype, name="final_norm")(x_BxLxD)
    logits_BxLxV = nn.Dense(cfg.vocab_size, dtype=cfg.dtype, name="lm_head")(x_BxLxD)
    h = nn.gelu(nn.Dense(cfg.d_model, dtype=cfg.dtype, name="value_hidden")(x_BxLxD))
    value_logits_BxL = nn.Dense(1, dtype=cfg.dtype, name="value_head")(h)[..., 0]
    return (logits_BxLxV.astype(jnp.float32), value_logits_BxL.astype(jnp.float32),
            None if cache is None else tuple(new_cache))


def init_params(config: ModelConfig, rng: jax.Array):
  tokens = jnp.zeros((1, min(8, config.max_len)), jnp.int32)
  return PolicyValueLM(config).init(rng, tokens)["params"]


def forward(params, config: ModelConfig, tokens_BxL, positions_BxL=None, cache=None,
            segments_BxL=None):
  """Pure forward pass; returns (logits_BxLxV, value_logits_BxL, cache)."""
  return PolicyValueLM(config).apply({"params": params}, tokens_BxL, positions_BxL, cache,
                                     segments_BxL)


def count_params(params) -> int:
  return sum(x.size for x in jax.tree.leaves(params))
