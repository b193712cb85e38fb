"""Meta-CoT traces from the model's own searches: mctx trees, linearized.

Node i of an mctx tree was made by simulation i (node 0 is the root), so reading the
nodes in index order replays the search as it happened: each node is one explored
step from its parent's state, and a jump to a node whose parent is not the
current state is a backtrack. The same expansions can be written depth-first instead, as
the symbolic traces the model first learned read (`TRACE_ORDERS`). Only trees that reached the target are kept, their
solution path checked by the verifier (Meta-STaR keeps verified runs); search with
`use_verifier=True`, as the main job does, so that the abandoned steps are legal too.
Every root also yields an AlphaZero target: the search's action weights over its
candidate steps, and its outcome.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

import jax
import numpy as np

from metacot_jax import scale
from metacot_jax.data.tokenizer import Tokenizer, fixed_size_chunks
from metacot_jax.metacot import trace
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.search import mcts, step_mdp
from metacot_jax.search.step_parser import StepFormat
from metacot_jax.tasks.countdown import Countdown
from metacot_jax.train import alphazero


# how a searched tree is written out: as the search ran, or as a depth-first search
TRACE_ORDERS = ("simulation", "depth_first")


def _state(node_state, count) -> tuple[Fraction, ...]:
  return tuple(sorted(Fraction(int(n), int(d)) for n, d in node_state[:int(count)]))


def tree_expansions(problem: Countdown, tokenizer: Tokenizer, nodes: step_mdp.Node,
                    parents: np.ndarray, order: str = "simulation"
                    ) -> tuple[list[trace.Expansion], list[int]] | None:
  """(expansions, solution path) of one problem's tree, or None.

  `nodes` holds one problem's tree embeddings ([S+1] leading axis), `parents` [S+1].
  Dead candidates (nothing appended) and nodes below terminal ones are skipped. `order`
  (one of TRACE_ORDERS): the explored prefix up to the goal in simulation order, or the
  same expansions in depth-first order (`trace.depth_first`).
  """
  if order not in TRACE_ORDERS:
    raise ValueError(f"unknown trace order {order!r}; choose one of {TRACE_ORDERS}")
  expansions, parent_of, index_of, solved_at = [], [], {}, None
  for i in range(1, len(parents)):
    p = int(parents[i])
    if p < 0 or nodes.terminal[p] or nodes.length[i] <= nodes.length[p]:
      continue
    if p > 0 and p not in index_of:  # below a skipped node: its state never reached
      continue
    step = tokenizer.decode(nodes.tokens[i][int(nodes.length[p]):int(nodes.length[i])]).rstrip("\n")
    parent_state = _state(nodes.state[p], nodes.count[p])
    child_state = _state(nodes.state[i], nodes.count[i])
    index_of[i] = len(expansions)
    parent_of.append(index_of.get(p, -1))
    expansions.append(trace.Expansion(parent_state, step, child_state, float(nodes.value[i])))
    if solved_at is None and nodes.answered[i] and child_state == (Fraction(problem.target),):
      solved_at = i
  if solved_at is None:
    return None
  path, i = [], solved_at
  while i > 0:
    path.append(index_of[i])
    i = int(parents[i])
  # the explored prefix up to the solution: what was searched before the goal was reached
  end = index_of[solved_at] + 1
  expansions, path = expansions[:end], sorted(path)
  if order == "depth_first":
    visit = trace.depth_first(parent_of[:end], path)
    position = {j: k for k, j in enumerate(visit)}
    expansions, path = [expansions[j] for j in visit], sorted(position[j] for j in path)
  return expansions, path


def search_traces(params, model: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
                  search: step_mdp.SearchConfig, cfg: mcts.MCTSConfig, *, batch_size: int,
                  seed: int, value_target: str = "outcome", order: str = "simulation",
                  list_tried: bool = False, mesh=None
                  ) -> tuple[list[tuple[int, list[trace.Line]]], dict[str, np.ndarray]]:
  """MCTS on every problem: (problem index, trace) for the verified trees, linearized
  in `order` (`tree_expansions`), and the AlphaZero targets of every root
  (`train.alphazero.search_targets`). Tree mode only: the trace is one tree, searched once
  from the root."""
  if cfg.mode != "tree":
    raise ValueError(f"search traces come from one tree per problem: MCTSConfig.mode must be "
                     f"'tree', got {cfg.mode!r}")
  if not problems:
    raise ValueError("search_traces got no problems")
  fmt = StepFormat.from_tokenizer(tokenizer, search.max_numbers)
  out, targets = [], []
  for start, chunk, real in fixed_size_chunks(problems, batch_size,
                                                   scale.chunk_size(batch_size, mesh)):
    roots = step_mdp.root_nodes(chunk, tokenizer, model, search)
    roots, policy_output = scale.to_host(mcts.tree_search(
        params, jax.random.fold_in(jax.random.PRNGKey(seed), start),
        scale.shard_batch(roots, mesh), model=model, fmt=fmt, newline_id=tokenizer.newline_id,
        search=search, cfg=cfg))
    tree = policy_output.search_tree
    solved = np.zeros(len(chunk), bool)
    for b in range(real):
      nodes = jax.tree.map(lambda x: x[b], tree.embeddings)
      found = tree_expansions(chunk[b], tokenizer, nodes, tree.parents[b], order)
      if found is not None:
        try:
          out.append((start + b, trace.linearize(chunk[b], *found, list_tried=list_tried)))
          solved[b] = True
        except trace.RepeatedStep:  # solved, but with tried-lists no trace of it is kept
          solved[b] = True
        except ValueError:  # the path is not a legal solution (possible without the verifier)
          continue
    batch = alphazero.search_targets(roots, policy_output, solved, value_target)
    targets.append({k: v[:real] for k, v in batch.items()})
  width = max(t["prefix"].shape[1] for t in targets)  # chunks' prefixes differ in width
  for t in targets:
    t["prefix"] = np.pad(t["prefix"], ((0, 0), (0, width - t["prefix"].shape[1])))
  return out, {k: np.concatenate([t[k] for t in targets]) for k in targets[0]}

