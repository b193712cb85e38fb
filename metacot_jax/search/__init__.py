"""Search over reasoning steps: the step MDP, mctx MCTS and the baselines."""

from metacot_jax.search import mcts, rational, step_mdp, step_parser
from metacot_jax.search.mcts import MCTSConfig
from metacot_jax.search.results import SearchOutput, pass_at_k, summarize
from metacot_jax.search.step_mdp import Node, SearchConfig
from metacot_jax.search.step_parser import StepFormat

__all__ = [
    "MCTSConfig", "Node", "SearchConfig", "SearchOutput", "StepFormat", "mcts", "pass_at_k",
    "rational", "step_mdp", "step_parser", "summarize",
]
