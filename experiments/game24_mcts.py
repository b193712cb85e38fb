"""The main job: Game of 24 from data to trained policies, searched and compared.

    python -m experiments.game24_mcts --workdir runs/default [--preset quick|default|full] \
        [--config.search.num_candidates=8 ...]

Pipeline: TFDS data -> CoT SFT of the policy-value LM (policy on solutions, PRM on
solver-labelled walks) -> Meta-CoT SFT on symbolic search traces -> greedy
in-context evaluation of both -> MCTS over a grid of budgets on the test split.
Every phase stores its result in `results.json` and training phases checkpoint
with orbax: the same command resumes a killed run. `report.md` sets the figures
beside the anchors of Tree of Thoughts, TS-LLM and Stream of Search.
"""

from __future__ import annotations

import functools
import sys

import jax
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging
from ml_collections import config_flags

from experiments import configs, report
from metacot_jax.data import examples, load_game24
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot import evaluate as metacot_eval
from metacot_jax.metacot import round0
from metacot_jax.models import ModelConfig, count_params
from metacot_jax.runs import RunDir
from metacot_jax.search import evaluate as search_eval
from metacot_jax.search.mcts import MCTSConfig
from metacot_jax.search.step_mdp import SearchConfig
from metacot_jax.tasks import game24
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step, train


def _preset_from_argv(argv: list[str]) -> str:
  """The preset must be known before flags parse, since it sets the config's defaults."""
  for i, arg in enumerate(argv):
    if arg.startswith("--preset="):
      return arg.split("=", 1)[1]
    if arg == "--preset" and i + 1 < len(argv):
      return argv[i + 1]
  return "default"


_PRESET = _preset_from_argv(sys.argv)
flags.DEFINE_enum("preset", "default", configs.PRESETS, "Size of the run.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, results, report.", required=True)
_CONFIG = config_flags.DEFINE_config_dict(
    "config", configs.get_config(_PRESET if _PRESET in configs.PRESETS else "default"),
    "Overrides, e.g. --config.sft.steps=2000.")


def load_problems(cfg, run: RunDir):
  data_dir = cfg.data.data_dir or str(run.path / "tfds")
  manual_dir = cfg.data.manual_dir or None
  splits = {s: list(load_game24(s, data_dir, manual_dir)) for s in ("train", "test", "hard")}
  sizes = {"train": cfg.data.train_puzzles, "test": cfg.data.test_puzzles,
           "hard": cfg.data.hard_puzzles}
  problems = {s: [game24.make(ex["numbers"].tolist()) for ex in splits[s][:sizes[s]]]
              for s in splits}
  amt = {s: [float(ex["amt_seconds"]) for ex in splits[s][:sizes[s]]] for s in splits}
  return problems, amt, splits["test"][0]["ranking"].decode()


def model_config(tokenizer: Tokenizer, c) -> ModelConfig:
  return ModelConfig(vocab_size=tokenizer.vocab_size, max_len=c.max_len, d_model=c.d_model,
                     num_layers=c.num_layers, num_heads=c.num_heads, d_ff=c.d_ff)


def sft(cfg, run: RunDir, name: str, model: ModelConfig, tc, data: dict):
  """Trains (or resumes, or restores when finished) one SFT phase; returns its state."""
  opt = OptimizerConfig(learning_rate=tc.learning_rate, warmup_steps=tc.warmup_steps,
                        total_steps=tc.steps)
  state = create_train_state(jax.random.PRNGKey(cfg.seed), model, opt)
  checkpoints = run.checkpoints(name)
  step = functools.partial(sft_step, config=model, value_weight=cfg.value_weight)
  state, _ = train(state, data, step, num_steps=tc.steps, batch_size=tc.batch_size,
                   seed=cfg.seed, checkpoints=checkpoints, checkpoint_every=tc.checkpoint_every,
                   config_to_save=cfg.to_dict(), log_fn=lambda s, m: run.log(name, s, m),
                   desc=name)
  checkpoints.close()
  return state


def search_config(cfg, use_verifier: bool) -> SearchConfig:
  return SearchConfig(num_candidates=cfg.search.num_candidates,
                      max_step_tokens=cfg.search.max_step_tokens, max_depth=3,
                      temperature=cfg.search.temperature, prior=cfg.search.prior,
                      use_verifier=use_verifier)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  tfds.disable_progress_bar()
  cfg = _CONFIG.value
  cfg.preset = flags.FLAGS.preset
  run = RunDir(flags.FLAGS.workdir)
  tokenizer = Tokenizer()
  cot_model = model_config(tokenizer, cfg.model)
  metacot_model = model_config(tokenizer, cfg.metacot_model)
  run.save("config", cfg.to_dict())

  problems, amt, ranking = load_problems(cfg, run)
  train_p, test_p, hard_p = problems["train"], problems["test"], problems["hard"]
  run.save("data", {"ranking": ranking, **{s: len(p) for s, p in problems.items()}})
  print(f"data: {len(train_p)} train / {len(test_p)} test / {len(hard_p)} hard puzzles "
        f"(ranking: {ranking})")

  # 1. CoT SFT: policy on clean solutions, PRM on solver-labelled walks (one trunk).
  def cot_data():
    exs = (examples.cot_examples(train_p, cfg.data.max_solutions, cfg.seed)
           + examples.walk_examples(train_p, cfg.data.walks_per_problem, cfg.seed))
    return examples.encode(tokenizer, exs, cfg.sft.length)[0]
  cot_state = sft(cfg, run, "sft_cot", cot_model, cfg.sft, cot_data())
  run.save("models", {"cot_params": count_params(cot_state.params)})

  # 2. Meta-CoT SFT on symbolic search traces.
  def metacot_data():
    traces = round0.symbolic_traces(train_p, cfg.data.traces_per_problem, cfg.seed)
    exs = [round0.trace_segments(p, lines, cfg.data.loss_variant) for p, lines in traces]
    arrays, dropped = examples.encode(tokenizer, exs, cfg.metacot_sft.length)
    run.save("metacot_data", {"traces": len(traces), "dropped_too_long": dropped,
                              "examples": int(arrays["tokens"].shape[0])})
    return arrays
  metacot_state = sft(cfg, run, "sft_metacot", metacot_model, cfg.metacot_sft, metacot_data())
  run.save("models", {**run.results["models"],
                      "metacot_params": count_params(metacot_state.params)})

  # 3. One greedy generation each, no outside search or verifier.
  for name, state, model in (("cot", cot_state, cot_model),
                             ("metacot", metacot_state, metacot_model)):
    for split, ps in (("test", test_p), ("hard", hard_p)):
      result = run.phase(f"greedy/{name}/{split}", lambda: metacot_eval.in_context(
          state.params, model, tokenizer, ps, batch_size=cfg.eval.batch_size))
      print(f"greedy {name:8s} {split}: {result['accuracy']:.1%}, "
            f"{result['mean_tokens']:.0f} tokens")
  hard = run.results["greedy/metacot/hard"]
  run.save("metacot_length_vs_amt", {"spearman": metacot_eval.rank_correlation(
      amt["hard"][:len(hard["tokens"])], hard["tokens"])})

  # 4. MCTS with the CoT policy as prior and its PRM as value, over budgets.
  for use_verifier in (True, False):
    search = search_config(cfg, use_verifier)
    for mode in ("tree", "play"):
      for sims in cfg.search.simulations:
        mc = MCTSConfig(num_simulations=sims, policy=cfg.search.policy, mode=mode,
                        max_num_considered_actions=search.num_candidates)
        key = f"mcts/{'verifier' if use_verifier else 'learned'}/{mode}/{sims}"
        method = search_eval.mcts_method(cot_state.params, cot_model, tokenizer, search, mc)
        result = run.phase(key, lambda: search_eval.batched(
            method, test_p, tokenizer, cot_model, search, batch_size=cfg.search.batch_size,
            seed=cfg.seed))
        print(f"{key}: {result['accuracy']:.1%} at {result['nodes']:.1f} nodes, "
              f"{result['tokens_generated']:.0f} tokens")

  report.write(run)
  print(f"wrote {run.results_path} and {run.path / 'report.md'}")


if __name__ == "__main__":
  app.run(main)
