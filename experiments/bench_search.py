"""Batched mctx MCTS against the same MCTS run node by node in Python.

Both searches use the same model, K candidates per expansion, simulations, seed
argument (not the same random draws) and PUCT rule (mctx.muzero_policy: c1=1.25,
c2=19652, Q min-max normalised by parent and siblings, terminal discount 0, no root
noise). The batched search is `mcts.run` in tree mode: one jitted program, every
simulation expands all B problems with one LM call. The sequential search is how TS-LLM and ToT run:
Python selects a leaf of one problem's tree, then one jitted call (batch 1) of
`step_mdp.child` + `step_mdp.expand` generates its K candidates, and so on,
problem by problem. Like mctx, it expands exactly one node per simulation (a
terminal leaf too), so both do the same LM work per simulation.

Prints simulations/s for each (total simulations done / wall time, compile
excluded; each the best of 3 runs), the LM's achieved FLOP/s inside
the batched search against a plain batched forward pass (`flops_ratio=`), and
last `ratio=<batched / sequential>`.

    python -m experiments.bench_search [--batch 64 --num_simulations 16 --K 4
                                        --sequential_problems 8 --checkpoint DIR]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_decode import best_time
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.models import ModelConfig, init_params
from metacot_jax.models.transformer import forward
from metacot_jax.search import mcts, step_mdp
from metacot_jax.search.mcts import MCTSConfig
from metacot_jax.search.step_mdp import Node, SearchConfig
from metacot_jax.search.step_parser import StepFormat
from metacot_jax.tasks import game24

PB_C_INIT, PB_C_BASE = 1.25, 19652.0  # mctx.muzero_policy defaults
_STATIC = ("model", "fmt", "newline_id", "search")


@functools.partial(jax.jit, static_argnames=_STATIC)
def expand_root(params, rng, root: Node, *, model, fmt, newline_id, search):
  """One root [1]: (node with candidates, prior [K], value [])."""
  root, prior_1xK = step_mdp.expand(params, rng, root, model=model, fmt=fmt,
                                    newline_id=newline_id, cfg=search)
  return root, prior_1xK[0], root.value[0]


@functools.partial(jax.jit, static_argnames=_STATIC)
def expand_child(params, rng, parent: Node, action_1, *, model, fmt, newline_id, search):
  """mctx's recurrent_fn for one node [1]: (child, prior [K], reward, discount, value)."""
  child = step_mdp.child(parent, action_1, search)
  child, prior_1xK = step_mdp.expand(params, rng, child, model=model, fmt=fmt,
                                     newline_id=newline_id, cfg=search)
  if not search.use_verifier:
    child = step_mdp.learned_scores(child)
  terminal = child.terminal[0]
  return (child, prior_1xK[0], jnp.where(terminal, child.score[0], 0.0),
          jnp.where(terminal, 0.0, 1.0), jnp.where(terminal, 0.0, child.value[0]))


def _softmax(x_K):
  e = np.exp(x_K - x_K.max())
  return e / e.sum()


class PythonMCTS:
  """mctx.muzero_policy's search for one problem, node by node on the host."""

  def __init__(self, num_simulations: int, k: int, max_depth: int, seed: int):
    n = num_simulations + 1
    self.visits = np.zeros(n, np.int64)
    self.values = np.zeros(n)
    self.parents = np.full(n, -1)
    self.action_from_parent = np.full(n, -1)
    self.children = np.full((n, k), -1)
    self.prior_NxK = np.zeros((n, k), np.float32)
    self.child_values_NxK = np.zeros((n, k))
    self.child_visits_NxK = np.zeros((n, k), np.int64)
    self.rewards_NxK = np.zeros((n, k))
    self.discounts_NxK = np.zeros((n, k))
    self.embeddings: list = [None] * n
    self.root_invalid_K = np.zeros(k, bool)
    self.max_depth = max_depth
    self.noise = np.random.default_rng(seed)

  def set_node(self, index, embedding, prior_K, value):
    self.embeddings[index] = embedding
    self.prior_NxK[index] = prior_K
    self.values[index] = value
    self.visits[index] += 1

  def select(self, node: int, depth: int) -> int:
    """pUCT with Q min-max normalised over the node's value and its visited children."""
    visits_K, n = self.child_visits_NxK[node], self.visits[node]
    pb_c = PB_C_INIT + math.log((n + PB_C_BASE + 1.0) / PB_C_BASE)
    policy_K = math.sqrt(n) * pb_c * _softmax(self.prior_NxK[node]) / (visits_K + 1)
    q_K = self.rewards_NxK[node] + self.discounts_NxK[node] * self.child_values_NxK[node]
    value = self.values[node]
    safe_K = np.where(visits_K > 0, q_K, value)
    lo, hi = min(value, safe_K.min()), max(value, safe_K.max())
    q_K = (np.where(visits_K > 0, q_K, lo) - lo) / max(hi - lo, 1e-8)
    score_K = q_K + policy_K + 1e-7 * self.noise.random(q_K.shape[0])
    if depth == 0:  # mctx masks invalid actions at the root only
      score_K = np.where(self.root_invalid_K, -np.inf, score_K)
    return int(np.argmax(score_K))

  def simulate(self) -> tuple[int, int]:
    """Descends until an unvisited action or max_depth: (parent, action)."""
    node, depth = 0, 0
    while True:
      action = self.select(node, depth)
      nxt, depth = self.children[node, action], depth + 1
      if nxt < 0 or depth >= self.max_depth:
        return node, action
      node = nxt

  def backward(self, leaf: int):
    value = self.values[leaf]
    while leaf != 0:
      parent, action = self.parents[leaf], self.action_from_parent[leaf]
      value = self.rewards_NxK[parent, action] + self.discounts_NxK[parent, action] * value
      count = self.visits[parent]
      self.values[parent] = (self.values[parent] * count + value) / (count + 1)
      self.visits[parent] = count + 1
      self.child_values_NxK[parent, action] = self.values[leaf]
      self.child_visits_NxK[parent, action] += 1
      leaf = parent

  def run(self, expand_root, expand_child) -> int:
    """The whole search; returns the number of expansions (LM calls in the benchmark).

    expand_root() -> (embedding, prior_K, value); expand_child(sim, parent_embedding, action)
    -> (embedding, prior_K, reward, discount, value): mctx's root and recurrent_fn, with
    numpy numbers (the embeddings may stay on the device)."""
    root, prior_K, value = expand_root()
    self.set_node(0, root, prior_K, value)
    self.root_invalid_K = prior_K <= np.finfo(np.float32).min  # expand's mask, as mctx gets it
    num_simulations = len(self.visits) - 1
    for sim in range(num_simulations):
      parent, action = self.simulate()
      index = self.children[parent, action]
      index = sim + 1 if index < 0 else index
      child, prior_K, reward, discount, value = expand_child(sim, self.embeddings[parent],
                                                             action)
      self.set_node(index, child, prior_K, value)
      self.children[parent, action] = index
      self.rewards_NxK[parent, action], self.discounts_NxK[parent, action] = reward, discount
      self.parents[index], self.action_from_parent[index] = parent, action
      self.backward(index)
    return num_simulations + 1


def sequential_search(params, root_1: Node, seed: int, num_simulations: int, kw: dict
                      ) -> tuple[PythonMCTS, int]:
  """One problem's MCTS with one jitted LM call per expansion; returns (tree, LM calls)."""
  key = lambda i: np.array([seed, i], np.uint32)

  def root_fn():
    root, prior_K, value = expand_root(params, key(0), root_1, **kw)
    return root, *jax.device_get((prior_K, value))

  def child_fn(sim, parent, action):
    child, *numbers = expand_child(params, key(sim + 1), parent,
                                   np.array([action], np.int32), **kw)
    return child, *jax.device_get(numbers)

  tree = PythonMCTS(num_simulations, kw["search"].num_candidates, kw["search"].max_depth, seed)
  return tree, tree.run(root_fn, child_fn)


def timed(fn):
  start = time.perf_counter()
  out = jax.block_until_ready(fn())
  return out, time.perf_counter() - start


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=64, help="problems in the batched search")
  parser.add_argument("--num_simulations", type=int, default=16)
  parser.add_argument("--K", type=int, default=4, help="candidates per expansion")
  parser.add_argument("--sequential_problems", type=int, default=8,
                      help="problems searched node by node (sims/s scales honestly)")
  parser.add_argument("--max_step_tokens", type=int, default=20)
  parser.add_argument("--max_len", type=int, default=128)
  parser.add_argument("--d_model", type=int, default=128)
  parser.add_argument("--num_layers", type=int, default=4)
  parser.add_argument("--num_heads", type=int, default=4)
  parser.add_argument("--checkpoint", default=None,
                      help="restore params from this train checkpoint dir (model flags must match)")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args(argv)

  tok = Tokenizer()
  model = ModelConfig(vocab_size=tok.vocab_size, max_len=args.max_len, d_model=args.d_model,
                      num_layers=args.num_layers, num_heads=args.num_heads,
                      d_ff=4 * args.d_model)
  params = jax.jit(init_params, static_argnums=0)(model, jax.random.PRNGKey(args.seed))
  if args.checkpoint:
    from metacot_jax.train import Checkpoints, OptimizerConfig, create_train_state
    state = create_train_state(None, model, OptimizerConfig(), params=params)
    params = Checkpoints(args.checkpoint).restore(state)[1].params
  puzzles = game24.solvable_puzzles()
  problems = [game24.make(puzzles[i]) for i in np.linspace(0, len(puzzles) - 1, args.batch,
                                                            dtype=int)]
  search = SearchConfig(num_candidates=args.K, max_step_tokens=args.max_step_tokens)
  cfg = MCTSConfig(num_simulations=args.num_simulations, policy="puct", mode="tree",
                   temperature=0.0, dirichlet_fraction=0.0,
                   max_num_considered_actions=min(4, args.K))
  kw = dict(model=model, fmt=StepFormat.from_tokenizer(tok), newline_id=tok.newline_id,
            search=search)
  roots = jax.device_put(step_mdp.root_nodes(problems, tok, model, search))
  rng = jax.random.PRNGKey(args.seed + 1)
  b, s, k, t = args.batch, args.num_simulations, args.K, model.max_len
  print(f"device={jax.devices()[0].device_kind} cores={os.cpu_count()} "
        f"batch={b} K={k} sims={s} max_step_tokens={args.max_step_tokens} T={t} "
        f"d_model={model.d_model} layers={model.num_layers} "
        f"params={'checkpoint' if args.checkpoint else 'random'}")

  # Batched: one mctx search over all B problems.
  run = mcts.run.lower(params, rng, roots, cfg=cfg, **kw).compile()
  out = run(params, rng, roots)
  t_batched = best_time(lambda: run(params, rng, roots), repeats=3)
  sims_batched = b * s / t_batched
  print(f"batched mctx: {t_batched:.2f} s for {b}x{s} simulations, {sims_batched:,.1f} sims/s")

  # Sequential: node by node, one LM call per expansion, on a few problems.
  n_seq = min(args.sequential_problems, b)
  one = lambda i: jax.tree.map(lambda x: x[i:i + 1], roots)
  firsts = [one(i) for i in range(n_seq)]
  sequential_search(params, firsts[0], args.seed, 2, kw)  # compile both calls

  def sequential_pass() -> tuple[float, int]:
    start, calls = time.perf_counter(), 0
    for i, root in enumerate(firsts):
      calls += sequential_search(params, root, args.seed + i, s, kw)[1]
    return time.perf_counter() - start, calls
  t_seq, calls = min(sequential_pass() for _ in range(3))
  sims_seq = n_seq * s / t_seq
  print(f"sequential python: {t_seq:.2f} s for {n_seq}x{s} simulations ({calls} LM calls, "
        f"{1e3 * t_seq / calls:.1f} ms each), {sims_seq:,.1f} sims/s")

  # FLOPs the batched search computes: every one of the S+1 expand calls prefills the
  # full [T] buffer of all B rows (terminal ones too) and decodes B*K rows until every
  # row has stopped, at most max_step_tokens steps; attention always spans the T cache.
  per_token = model.flops_per_token(t)
  nodes = float(np.sum(out.nodes))
  search_flops = (s + 1) * (b * t + b * k * args.max_step_tokens) * per_token
  useful_flops = float(np.sum(out.tokens_processed)) * per_token
  bound = ("an upper bound: trained params stop decoding early" if args.checkpoint else
           "random params never stop all rows early")
  print(f"search LM work: {(s + 1) * b} expansions computed ({nodes / k:.0f} of live nodes), "
        f"{search_flops / 1e9:.1f} GFLOP computed (decode at max_step_tokens steps a call: "
        f"{bound}), {useful_flops / 1e9:.1f} GFLOP of it on live tokens")

  tokens_NxT = jnp.asarray(np.random.default_rng(0).integers(3, tok.vocab_size, (b * k, t)),
                           jnp.int32)
  fwd = jax.jit(lambda p, x: forward(p, model, x)[:2])
  jax.block_until_ready(fwd(params, tokens_NxT))
  t_fwd = min(timed(lambda: fwd(params, tokens_NxT))[1] for _ in range(2))
  fwd_flops = per_token * b * k * t
  search_rate, fwd_rate = search_flops / t_batched, fwd_flops / t_fwd
  print(f"LM FLOP/s: batched search {search_rate / 1e9:.1f} G, plain forward "
        f"[{b * k}, {t}] {fwd_rate / 1e9:.1f} G")
  print(f"flops_ratio={search_rate / fwd_rate:.2f}")
  print(f"ratio={sims_batched / sims_seq:.1f}")


if __name__ == "__main__":
  main()
