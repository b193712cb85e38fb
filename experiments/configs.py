"""Presets of the main job as `ml_collections.ConfigDict`s.

`quick` runs in a few minutes on a 2-core CPU (CI), `default` is the laptop run
of the README (about 35 minutes on 2 cores), `long` the default's models trained
three times as long on four times the symbolic traces, with Meta-STaR on the policy's own
verified generations of all 900 train puzzles (1h29m for seed 0, CI sharing the cores for
its first 29 minutes; about 60 minutes with MCTS on 300 instead), `full` is sized for one GPU or
TPU host. Every field can be overridden on the command line, e.g.
`--config.search.num_candidates=8`.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import ml_collections

PRESETS = ("quick", "default", "long", "full")
STAR_SOURCES = ("search", "generations", "both")


def default_manual_dir() -> str:
  """`$METACOT_GAME24_DIR`, else `../shared/data/game24` beside the repo if it exists, else ''."""
  env = os.environ.get("METACOT_GAME24_DIR")
  if env:
    return env
  beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data" / "game24"
  return str(beside_repo) if (beside_repo / "24.csv").is_file() else ""


def _model(max_len, d_model, num_layers, num_heads, d_ff, dtype="float32", position="rope",
           local_heads=0, local_window=32):
  """dtype: the compute dtype, 'float32' or 'bfloat16' (params and logits stay float32).
  position: 'rope' (rotary, relative) or 'learned' (absolute; runs from before RoPE).
  local_heads: heads per layer that see only the last local_window positions (0: none)."""
  return ml_collections.ConfigDict(dict(max_len=max_len, d_model=d_model, num_layers=num_layers,
                                        num_heads=num_heads, d_ff=d_ff, dtype=dtype,
                                        position=position, local_heads=local_heads,
                                        local_window=local_window))


def _train(steps, batch_size, learning_rate, warmup_steps, checkpoint_every, length,
           micro_batches=1):
  return ml_collections.ConfigDict(dict(
      steps=steps, batch_size=batch_size, learning_rate=learning_rate,
      warmup_steps=warmup_steps, checkpoint_every=checkpoint_every, length=length,
      micro_batches=micro_batches))


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""  # '' = <workdir>/tfds
  c.data.manual_dir = default_manual_dir()  # folder with ToT's 24.csv; '' = computed ranking
  c.data.train_puzzles = 900  # first N of the train split (ranks 1..900)
  c.data.test_puzzles = 100  # first N of the test split (ranks 901..1000)
  c.data.hard_puzzles = 362  # first N of the hard split (ranks 1001..1362)
  c.data.max_solutions = 8  # CoT: distinct solutions per training puzzle
  c.data.walks_per_problem = 4  # PRM: random legal walks per puzzle, labelled by the solver
  c.data.walk_arithmetic_loss = 1.0  # policy loss on each walk step's result and state (0: none)
  c.data.unsolvable_walks = 4  # arithmetic-only walks per unsolvable multiset (0: none)
  c.data.traces_per_problem = 4  # Meta-CoT: symbolic search traces per puzzle
  # each DFS trace blurs the solver's value with noise of one of these scales: larger scales,
  # more dead ends and backtracks (default traces: 80 tokens; (0.1, 0.2, 0.4): 53;
  # docs/experiments.md)
  c.data.dfs_noise_scales = (0.3, 0.6, 1.0)
  # shares of the symbolic traces from BFS and from A* (the same noise; the rest are DFS)
  c.data.bfs_fraction = 0.0
  c.data.astar_fraction = 0.0
  c.data.loss_variant = "all"  # Meta-CoT loss: 'all' | 'z_only' | 'mask_off_path'
  # each `back to` line lists the steps already tried from its state, `back to 2 4 6 (tried
  # 6 * 4)`: the models' loops take the step just undone again. Adds `back to `, ` (tried `
  # and `, ` to the tokenizer as one token each. Off: at 1.1M (32 traces, three rounds on
  # the policy's generations, seeds 0 and 1) the model wrote the lists right and still took a
  # listed step; test split level, hard 4.9 points lower (docs/experiments.md)
  c.data.back_lists_tried = False
  # several examples to a training row (attention kept inside each): 2-3x the real tokens per
  # row. Every preset packs; only the default's SFT batches were resized for it (star.sft and
  # the full preset's batches now carry 2-4x the examples per step at the same cost).
  c.data.pack = True

  # One architecture: the Meta-CoT model starts from the CoT model's weights.
  c.model = _model(192, 128, 4, 4, 512)
  c.metacot_model = _model(192, 128, 4, 4, 512)
  # Packed rows (data.pack) of ~3 examples each: a step of 10 x 192 CoT rows costs 0.7x one of
  # the 32 x 96 unpacked rows it replaces (0.172 vs 0.244 s on 2 cores), 12 x 192 Meta-CoT rows
  # 0.35x; these small models need many updates more than big batches.
  c.sft = _train(2700, 10, 2e-3, 100, 900, 192)
  c.metacot_sft = _train(1500, 12, 2e-3, 50, 500, 192)
  c.metacot_sft.init_from_cot = True
  # The CoT-only baseline then trains on as many more steps (metacot_sft's schedule, CoT data)
  # from the same weights, so both models see the same budget: 1,500 more CoT steps moved the
  # CoT model from 17% to 25% greedy on the test split (seed 0) and from 26% to 24% (seed 1),
  # level with Meta-CoT both times (docs/experiments.md).
  c.metacot_sft.matched_cot = True
  c.value_weight = 1.0
  # Weight of a loss on the Meta-CoT traces (0: off) against, at each step right after a
  # `back to` line, the token where each step already tried from that state would start (the
  # loop the greedy models fall into). Off: at 1.1M it stopped the loops and cost 4-22 test
  # points (docs/experiments.md).
  c.unlikelihood_weight = 0.0
  # 'token': -log(1 - p) of that token; 'pairwise': -log sigmoid of the written token's logit
  # minus that token's (train.losses.unlikelihood_loss)
  c.unlikelihood_form = "pairwise"

  c.search = ml_collections.ConfigDict()
  c.search.num_candidates = 4
  c.search.max_step_tokens = 20
  c.search.temperature = 1.0
  c.search.prior = "mean"
  # MCTS budgets evaluated. 8 only: 4 added 82 s (the default ran 30m33s with it) and, in tree
  # mode, cannot reach the goal (each of its simulations opens another root child: 0-1%)
  c.search.simulations = (8,)
  c.search.policy = "gumbel"
  c.search.batch_size = 50
  c.search.hard_puzzles = 0  # the search grid also runs on the first N hard puzzles (0: none)

  c.prm = ml_collections.ConfigDict()
  c.prm.mc_samples = 8  # completions per prefix for Monte Carlo value labels

  c.baselines = ml_collections.ConfigDict()
  c.baselines.beam_widths = (1, 4)  # BFS (PRM) and beam (log-prob) widths
  c.baselines.expansions = (4, 8)  # best-first and DFS budgets
  c.baselines.samples = 16  # N of sample-N: pass@k, maj@k, best-of-k for k <= N

  c.star = ml_collections.ConfigDict()
  c.star.rounds = 2
  c.star.simulations = 8  # MCTS budget per training puzzle
  c.star.train_puzzles = 100  # the first N training puzzles are searched each round
  c.star.pairs_puzzles = 50  # the (policy_i, value_j) table is measured on the first N test
  c.star.from_previous = True  # fine-tune the previous round's weights (else the round-0 model)
  c.star.keep_round0 = True  # mix the symbolic traces into every round
  # the searches' traces: 'depth_first' (as the symbolic ones read) or 'simulation' (as MCTS
  # ran; as a quarter of round 1's mix, 9 test points below depth-first: docs/experiments.md)
  c.star.trace_order = "depth_first"
  # where a round's traces come from: 'search' (MCTS trees), 'generations' (the policy's own
  # in-context searches, sampled at temperature 1, kept when verified and legal throughout:
  # STaR) or 'both'; star.generations samples per searched puzzle
  c.star.source = "search"
  c.star.generations = 8
  # with generations: also train on the failed ones, cut before their first mistake (an
  # illegal line or a step taken again: a loop) and finished by the solver (metacot/repair.py).
  # Off: at 1.1M from 32-trace models it cost 4-15 test points per round against the same
  # rounds without it (seeds 0 and 1, docs/experiments.md)
  c.star.repair = False
  # The CoT-only baseline gets as many rounds of STaR (its own verified solutions, sampled
  # star.generations per puzzle on the same puzzles, star.sft's schedule), so the gap after
  # the rounds compares two models given the same budget and the same self-training (only
  # star.alphazero's steps, off here, would be the Meta-CoT model's alone)
  c.star.matched_cot = True
  c.star.sft = _train(150, 32, 5e-4, 15, 75, 192)
  # AlphaZero steps after each round's SFT: policy toward mctx's action weights at the
  # searched roots, value toward 'outcome' (verified answer found) or 'q' (root Q-value).
  # Off by default (steps=0). A round's roots are few and it overfits fast: from a round's
  # SFT model at 12% greedy test accuracy (150 roots), 50 steps at lr 5e-4 gave 0%; 10 steps
  # at lr 1e-4, 13%.
  c.star.alphazero = _train(0, 32, 1e-4, 2, 50, 0)
  c.star.value_target = "outcome"

  # RL from the last Meta-STaR policy: E[gamma^|Z| r] - beta KL(pi || pi_ref), one run per gamma.
  c.rl = ml_collections.ConfigDict()
  c.rl.gammas = (1.0, 0.995, 0.99, 0.98)
  c.rl.length_unit = "tokens"  # |Z| in 'tokens' or 'steps'
  # r of an answer line that does not verify (a right one earns 1, no answer 0). 0 is the
  # paper's objective, under which a failing search earns 0 at any length and no gamma can
  # shorten it; > 0 asks it to answer, and at gamma < 1 to answer soon (docs/experiments.md,
  # "A reward for a wrong answer"). It must stay below min(gammas)^max_new_tokens, or a guess
  # at once out-earns a late right answer. GRPO divides by the group's spread, so in a group
  # with no right answer any value > 0 pushes as hard; the value orders the mixed groups.
  c.rl.wrong_answer_reward = 0.0
  c.rl.beta = 0.02
  c.rl.group_size = 8  # G samples per problem
  # 'grpo' | 'loo'. GRPO divides by the group's spread, so gamma^|Z| changes which samples
  # are preferred, not how fast the policy learns: with 'loo' a small gamma shrinks every
  # advantage (0.95^85 = 0.013) and RL stalls (docs/experiments.md, "RL frontier").
  c.rl.estimator = "grpo"
  c.rl.clip_eps = 0.2  # PPO clip (0 = plain REINFORCE)
  c.rl.epochs = 1
  c.rl.micro_batches = 1  # each update's gradient in this many slices of its rollouts (memory)
  c.rl.max_new_tokens = 150
  c.rl.updates = 12
  c.rl.problems_per_update = 8
  c.rl.learning_rate = 2e-4
  # the first N training puzzles (ToT's ranking: the easiest first). Indicative, not a
  # controlled comparison (docs/experiments.md): on a GPU, 80 updates on the 300 easiest raised
  # sampled test success but not greedy accuracy; 150 on all 900 raised both.
  c.rl.train_puzzles = 900
  c.rl.checkpoint_every = 10
  c.rl.eval_samples = 4  # sampled generations per test puzzle in the RL evaluation

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 100
  c.eval.max_new_tokens = 80  # whole CoT solutions (sampling baselines)

  if preset == "quick":
    c.data.train_puzzles, c.data.test_puzzles, c.data.hard_puzzles = 150, 50, 50
    c.data.max_solutions, c.data.walks_per_problem, c.data.traces_per_problem = 2, 1, 2
    c.data.unsolvable_walks = 1
    c.model = _model(192, 64, 2, 4, 256)
    c.metacot_model = _model(192, 64, 2, 4, 256)
    c.sft = _train(60, 16, 3e-3, 10, 30, 96)
    c.metacot_sft = _train(60, 16, 3e-3, 10, 30, 192)
    c.metacot_sft.init_from_cot = True
    c.metacot_sft.matched_cot = True
    c.search.simulations = (2, 4)
    c.star.rounds, c.star.simulations = 1, 4
    c.prm.mc_samples = 2
    c.baselines.beam_widths, c.baselines.expansions, c.baselines.samples = (2,), (3,), 4
    c.star.sft = _train(20, 16, 1e-3, 2, 10, 192)
    c.star.alphazero = _train(4, 8, 5e-4, 1, 2, 0)
    c.rl.gammas, c.rl.updates, c.rl.problems_per_update = (1.0, 0.99), 2, 4
    c.rl.group_size, c.rl.max_new_tokens, c.rl.eval_samples = 4, 100, 2
    c.search.batch_size = 50
    c.search.hard_puzzles = 0  # the tests' tiny run covers the hard split
    c.star.pairs_puzzles = 20
    c.eval.batch_size = 50
  elif preset == "long":
    # The 1.1M models' best measured config. Meta-CoT keeps gaining from steps and fresh
    # traces where CoT, whose clean solutions are few, stops: 4,500 Meta-CoT steps on 16
    # traces per puzzle gave 40%, 36% and 38% greedy on the test split (seeds 0-2) against
    # 30%, 28% and 30% on the default's 4, and the CoT baseline at the same 7,200 steps 19%,
    # 19% and 25%. At the default's 1,500 steps 16 traces gained nothing over seeds (34% and
    # 22% against 26% and 24%), and 32 traces gained nothing over 16 at 4,500 steps (+2 and
    # +3 points, seeds 0 and 1), nor with 24-row batches (35% and 44%; at 5.4M on a GPU those
    # gained 7.5 points over 16 traces). docs/experiments.md
    c.data.traces_per_problem = 16
    c.metacot_sft.steps, c.metacot_sft.checkpoint_every = 4500, 1500
    # Meta-STaR trains on the policy's own verified generations, 8 per train puzzle on all 900,
    # without the symbolic traces: from 32-trace models (35% and 44% greedy test, seeds 0 and 1;
    # this preset's 16-trace ones not run with it yet) round 1 gave 46% and 51% (hard
    # 22.1/23.5% -> 29.0/26.2%), round 2 45% and 48%, a third 49% and 48%. MCTS on 300 train
    # puzzles with the symbolic mix gained 3-4 points in round 1 on seeds 0-2 (40/36/38% ->
    # 43/39/42%) and fell back in round 2. docs/experiments.md
    c.star.source, c.star.train_puzzles, c.star.keep_round0 = "generations", 900, False
  elif preset == "full":
    c.data.max_solutions, c.data.walks_per_problem, c.data.traces_per_problem = 32, 16, 32
    # bfloat16 compute: 1.8x the float32 train step's tokens/s on an H100 (908k against 504k,
    # from two separate runs of bench_train_step, before it measured both dtypes in one; README)
    c.model = _model(512, 512, 8, 8, 2048, "bfloat16")
    c.metacot_model = _model(512, 512, 8, 8, 2048, "bfloat16")
    c.star.train_puzzles = 900
    c.star.pairs_puzzles = 100
    c.sft = _train(20_000, 256, 1e-3, 500, 1000, 96)
    # micro-batches keep one device's activations at 9-14 GB (python -m
    # experiments.bench_memory: without them Meta-CoT SFT needs 111.6 GB, RL 391.7 GB)
    c.metacot_sft = _train(20_000, 256, 1e-3, 500, 1000, 512, micro_batches=8)
    c.metacot_sft.init_from_cot = True
    c.metacot_sft.matched_cot = True
    c.search.num_candidates = 8
    c.search.simulations = (4, 8, 16, 32, 64)
    c.search.hard_puzzles = 362
    c.baselines.samples = 64
    c.search.batch_size = 100
    c.star.rounds, c.star.simulations = 3, 32
    c.star.sft = _train(4000, 256, 3e-4, 100, 500, 512, micro_batches=8)
    c.star.alphazero = _train(500, 256, 3e-4, 20, 250, 0, micro_batches=4)
    c.rl.updates, c.rl.problems_per_update, c.rl.group_size = 500, 64, 16
    c.rl.max_new_tokens = 450
    c.rl.micro_batches = 32
  return c


def check(c: ml_collections.ConfigDict) -> None:
  """Rejects, before any work, every value a later phase would fail on (some only hours in):
  a `ValueError` naming the `--config.` field to change."""
  # imported here: the presets above stay readable without the library
  from metacot_jax.data import loading
  from metacot_jax.metacot import round0, trace
  from metacot_jax.metacot.from_search import TRACE_ORDERS
  from metacot_jax.search.mcts import MCTSConfig
  from metacot_jax.search.step_mdp import SearchConfig
  from metacot_jax.train.alphazero import VALUE_TARGETS
  from metacot_jax.train.losses import UNLIKELIHOOD_FORMS
  from metacot_jax.train.rl import RLConfig
  from metacot_jax.train.state import OptimizerConfig

  def expect(ok: bool, field: str, what: str):
    if not ok:
      raise ValueError(f"--config.{field}={_get(c, field)!r}: {what}")

  def valid(field: str, build):
    try:
      build()
    except (ValueError, TypeError) as e:
      raise ValueError(f"--config.{field}: {e}") from None

  # a folder named but without ToT's ranking would silently switch to the computed one
  expect(not c.data.manual_dir or loading.game24_ranking(c.data.manual_dir) == "tot",
         "data.manual_dir", "holds no 24.csv: point it (or $METACOT_GAME24_DIR) at the folder "
         "holding Tree of Thoughts' 24.csv, or give --config.data.manual_dir='' for the "
         "computed ranking")
  whole = lambda v: isinstance(v, int) and not isinstance(v, bool)
  positive = lambda field: expect(whole(_get(c, field)) and _get(c, field) >= 1, field,
                                  "must be a whole number >= 1")
  for split in ("train", "test", "hard"):
    positive(f"data.{split}_puzzles")
  for field in ("data.max_solutions", "data.traces_per_problem", "eval.batch_size",
                "search.batch_size", "baselines.samples", "prm.mc_samples"):
    positive(field)
  for field in ("data.walks_per_problem", "data.unsolvable_walks", "star.rounds"):
    expect(whole(_get(c, field)) and _get(c, field) >= 0, field, "must be a whole number >= 0")
  weight = c.unlikelihood_weight
  expect(isinstance(weight, (int, float)) and not isinstance(weight, bool)
         and math.isfinite(weight) and weight >= 0, "unlikelihood_weight",
         "must be a number >= 0 (0 turns the unlikelihood loss off)")
  expect(c.unlikelihood_form in UNLIKELIHOOD_FORMS, "unlikelihood_form",
         f"choose one of {UNLIKELIHOOD_FORMS}")
  expect(c.data.loss_variant in trace.LOSS_VARIANTS, "data.loss_variant",
         f"choose one of {trace.LOSS_VARIANTS}")
  valid("data.dfs_noise_scales", lambda: round0.check_noise_scales(c.data.dfs_noise_scales))
  valid("data.bfs_fraction", lambda: round0.check_search_mix(c.data.bfs_fraction, 0.0))
  valid("data.astar_fraction", lambda: round0.check_search_mix(0.0, c.data.astar_fraction))
  valid("data.astar_fraction", lambda: round0.check_search_mix(c.data.bfs_fraction,
                                                               c.data.astar_fraction))
  # generations start after the prompt; the longest Game of 24 prompt, <bos> included
  from metacot_jax.data.tokenizer import Tokenizer
  prompt = len(Tokenizer().encode("Input: 13 13 13 13 -> 24\n", bos=True))
  expect(whole(c.search.hard_puzzles) and c.search.hard_puzzles >= 0, "search.hard_puzzles",
         "must be a whole number >= 0 (0 skips the hard split's searches)")
  # the PRM's Monte Carlo completions get eval.max_new_tokens - 30 tokens (room for the prefix)
  expect(whole(c.eval.max_new_tokens) and c.eval.max_new_tokens > 30, "eval.max_new_tokens",
         "must be above 30 (whole solutions; the PRM's completions get 30 fewer)")
  expect(prompt + c.eval.max_new_tokens <= c.model.max_len, "eval.max_new_tokens",
         f"the CoT model's samples must fit it: at most model.max_len={c.model.max_len} less "
         f"the {prompt}-token prompt = {c.model.max_len - prompt}")

  phases = [("sft", "model"), ("metacot_sft", "metacot_model")]
  phases += [("star.sft", "metacot_model")] if c.star.rounds else []
  phases += [("star.sft", "model")] if c.star.rounds and c.star.matched_cot else []
  phases += [("star.alphazero", None)] if c.star.rounds and c.star.alphazero.steps else []
  for name, model in phases:
    for field in ("steps", "batch_size", "micro_batches", "checkpoint_every"):
      positive(f"{name}.{field}")
    tc = _get(c, name)
    valid(name, lambda: OptimizerConfig(tc.learning_rate, tc.warmup_steps, tc.steps))
    if model:
      max_len = _get(c, model).max_len
      expect(whole(tc.length) and 1 <= tc.length <= max_len, f"{name}.length",
             f"training rows must fit the model: 1 to {model}.max_len={max_len} tokens "
             f"(raise --config.{model}.max_len with it)")

  search = lambda: SearchConfig(num_candidates=c.search.num_candidates,
                                max_step_tokens=c.search.max_step_tokens, max_depth=3,
                                temperature=c.search.temperature, prior=c.search.prior)
  valid("search", search)
  # three steps after the prompt, in the CoT model's searches and the Meta-STaR model's
  max_len = min(c.model.max_len, c.metacot_model.max_len)
  expect(prompt + 3 * c.search.max_step_tokens <= max_len, "search.max_step_tokens",
         f"three steps after the {prompt}-token prompt must fit model.max_len and "
         f"metacot_model.max_len (the smaller is {max_len}): at most {(max_len - prompt) // 3}")
  k = c.search.num_candidates
  for sims in c.search.simulations:
    valid("search.simulations", lambda: MCTSConfig(num_simulations=sims, policy=c.search.policy,
                                                   max_num_considered_actions=k))
  for field in ("baselines.beam_widths", "baselines.expansions"):
    expect(all(whole(v) and v >= 1 for v in _get(c, field)), field,
           "each must be a whole number >= 1")
  if c.star.rounds:
    positive("star.train_puzzles")
    positive("star.pairs_puzzles")
    valid("star.simulations", lambda: MCTSConfig(num_simulations=c.star.simulations,
                                                 policy=c.search.policy,
                                                 max_num_considered_actions=k))
    expect(c.star.value_target in VALUE_TARGETS, "star.value_target",
           f"choose one of {VALUE_TARGETS}")
    expect(c.star.trace_order in TRACE_ORDERS, "star.trace_order",
           f"choose one of {TRACE_ORDERS}")
    expect(c.star.source in STAR_SOURCES, "star.source", f"choose one of {STAR_SOURCES}")
    if c.star.source != "search" or c.star.matched_cot:  # CoT's STaR samples too
      positive("star.generations")
    expect(c.star.source != "search" or not c.star.repair, "star.repair",
           "repairs finish the policy's failed generations: set star.source 'generations' or "
           "'both', or star.repair=False")
    expect(c.star.source != "generations" or not c.star.alphazero.steps, "star.alphazero.steps",
           "AlphaZero steps need the search's targets: set 0, or star.source 'search' or 'both'")
  if c.rl.gammas:
    for field in ("rl.updates", "rl.problems_per_update", "rl.train_puzzles",
                  "rl.checkpoint_every", "rl.eval_samples"):
      positive(field)
    r = c.rl
    puzzles = min(r.train_puzzles, c.data.train_puzzles)
    expect(r.problems_per_update <= puzzles, "rl.problems_per_update",
           f"each update draws this many distinct puzzles, but RL has {puzzles} "
           "(min of rl.train_puzzles and data.train_puzzles): lower it or give RL more puzzles")
    for gamma in r.gammas:
      valid("rl", lambda: RLConfig(gamma=gamma, length_unit=r.length_unit, beta=r.beta,
                                   group_size=r.group_size, estimator=r.estimator,
                                   clip_eps=r.clip_eps, epochs=r.epochs,
                                   max_new_tokens=r.max_new_tokens,
                                   micro_batches=r.micro_batches))
    valid("rl", lambda: OptimizerConfig(r.learning_rate, 0, r.updates * r.epochs))
    expect(0.0 <= r.wrong_answer_reward < 1.0, "rl.wrong_answer_reward",
           "must be in [0, 1), below a right answer's reward of 1")
    if r.wrong_answer_reward > 0:  # |Z| <= max_new_tokens, in tokens or in lines
      slowest = min(r.gammas) ** r.max_new_tokens  # a right answer at the length limit
      expect(r.wrong_answer_reward < slowest, "rl.wrong_answer_reward",
             f"must be below min(rl.gammas)^rl.max_new_tokens = {min(r.gammas)}^"
             f"{r.max_new_tokens} = {slowest:.3g}, else a wrong answer at once out-earns a "
             "right one found late (lower it, or raise the smallest gamma)")
    expect(len(set(map(float, r.gammas))) == len(r.gammas), "rl.gammas",
           "each gamma once (1 and 1.0 are the same run)")
    room = c.metacot_model.max_len - prompt
    expect(whole(r.max_new_tokens) and 1 <= r.max_new_tokens <= room, "rl.max_new_tokens",
           f"rollouts must fit the model: 1 to metacot_model.max_len={c.metacot_model.max_len} "
           f"less the {prompt}-token prompt = {room}")


def _get(c: ml_collections.ConfigDict, field: str):
  for part in field.split("."):
    c = c[part]
  return c
