"""The main job: Game of 24 from data to trained policies, searched and compared.

    python -m experiments.game24_mcts --workdir runs/default [--preset quick|default|long|full] \
        [--config.search.num_candidates=8 ...]

Pipeline (the numbered phases of `main`, as README.md lists them): TFDS data -> CoT SFT
of the policy-value LM (policy on solutions, PRM on solver-labelled walks) -> Meta-CoT
SFT on symbolic search traces -> greedy in-context evaluation of both -> MCTS over a
grid of budgets on the test split, and the baselines -> PRM calibration -> Meta-STaR
rounds (and as many STaR rounds for the CoT baseline) -> RL with a discount gamma per run.
Every phase stores its result in `results.json` and training phases checkpoint
with orbax: the same command resumes a killed run. `report.md` sets the figures
beside the anchors of Tree of Thoughts, TS-LLM and Stream of Search.

Every batch is split over all devices (a `data` mesh; params replicated), on one
host or, launched once per host with `JAX_COORDINATOR_ADDRESS`, `JAX_NUM_PROCESSES`
and `JAX_PROCESS_ID` set (or on a TPU pod / in an `srun` step of several tasks), on several.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

from experiments import configs, report
from metacot_jax import scale
from metacot_jax.data import examples, load_game24
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot import evaluate as metacot_eval
from metacot_jax.metacot import (from_generations, from_search, repair, round0, trace,
                                 value_labels)
from metacot_jax.metacot.reward import TraceReward
from metacot_jax.models import ModelConfig, count_params
from metacot_jax.runs import RunDir, write_arrays
from metacot_jax.search import baselines
from metacot_jax.search import evaluate as search_eval
from metacot_jax.search.mcts import MCTSConfig
from metacot_jax.search.step_mdp import PolicyValue, SearchConfig
from metacot_jax.search.step_parser import StepFormat
from metacot_jax.tasks import game24
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step, train
from metacot_jax.train.alphazero import alphazero_step
from metacot_jax.train.rl import RLConfig
from metacot_jax.train.rl_loop import train_rl, updates_done


def _preset_from_argv(argv: list[str]) -> str:
  """The preset must be known before flags parse, since it sets the config's defaults."""
  for i, arg in enumerate(argv):
    if arg.startswith("--preset="):
      return arg.split("=", 1)[1]
    if arg == "--preset" and i + 1 < len(argv):
      return argv[i + 1]
  return "default"


def repeated_overrides(argv: list[str]) -> list[str]:
  """The `--config.` fields `argv` gives more than once (with one dash or two; a flagfile's
  are not seen). They must be refused: absl keeps the last value of a number, but
  ml_collections joins a tuple field's values (`(2,)` then `(4,)` gives `(2, 4)`)."""
  names = ["--" + arg.lstrip("-").split("=", 1)[0] for arg in argv
           if arg.startswith(("--config.", "-config."))]
  return sorted({name for name in names if names.count(name) > 1})


_PRESET = _preset_from_argv(sys.argv)
flags.DEFINE_enum("preset", "default", configs.PRESETS, "Size of the run.")
flags.DEFINE_string("workdir", None, "Run directory: checkpoints, results, report.", required=True)
_CONFIG = config_flags.DEFINE_config_dict(
    "config", configs.get_config(_PRESET if _PRESET in configs.PRESETS else "default"),
    "Overrides, e.g. --config.sft.steps=2000.")


def load_problems(cfg, run: RunDir):
  data_dir = cfg.data.data_dir or str(run.path / "tfds")
  manual_dir = cfg.data.manual_dir or None
  # one process prepares the TFDS files, the others then read them
  splits = scale.primary_first(lambda: {s: list(load_game24(s, data_dir, manual_dir))
                                        for s in ("train", "test", "hard")})
  sizes = {"train": cfg.data.train_puzzles, "test": cfg.data.test_puzzles,
           "hard": cfg.data.hard_puzzles}
  problems = {s: [game24.make(ex["numbers"].tolist()) for ex in splits[s][:sizes[s]]]
              for s in splits}
  amt = {s: [float(ex["amt_seconds"]) for ex in splits[s][:sizes[s]]] for s in splits}
  return problems, amt, splits["test"][0]["ranking"].decode()


def walk_data(cfg, train_p):
  """Random legal walks: PRM labels on training puzzles, and (optionally) policy loss on
  each step's arithmetic, also on the unsolvable multisets (no solution, no PRM label)."""
  d = cfg.data
  walks = examples.walk_examples(train_p, d.walks_per_problem, cfg.seed,
                                 arithmetic_loss=d.walk_arithmetic_loss)
  if d.walk_arithmetic_loss and d.unsolvable_walks:
    extra = [game24.make(p) for p in game24.unsolvable_puzzles()]
    walks += examples.walk_examples(extra, d.unsolvable_walks, cfg.seed + 1,
                                    arithmetic_loss=d.walk_arithmetic_loss, value_labels=False)
  return walks


def model_config(tokenizer: Tokenizer, c, flag: str = "model") -> ModelConfig:
  """The `ModelConfig` of `config.<flag>`; a bad value is a usage error naming the flag."""
  try:
    return ModelConfig(vocab_size=tokenizer.vocab_size, max_len=c.max_len, d_model=c.d_model,
                       num_layers=c.num_layers, num_heads=c.num_heads, d_ff=c.d_ff,
                       dtype=c.dtype, position=c.position, local_heads=c.local_heads,
                       local_window=c.local_window)
  except ValueError as e:
    raise app.UsageError(f"--config.{flag}: {e}") from None


def run_tokenizer(cfg) -> Tokenizer:
  """The tokenizer of a run: with `data.back_lists_tried`, `trace.TRIED_PIECES` one token each
  (a run's checkpoints fit only the vocabulary they were trained with)."""
  return Tokenizer(trace.TRIED_PIECES if cfg.data.get("back_lists_tried", False) else ())


def model_configs(cfg, tokenizer: Tokenizer) -> tuple[ModelConfig, ModelConfig]:
  """(CoT model, Meta-CoT model). With `metacot_sft.init_from_cot` their shapes must agree
  (the compute dtype and local heads may differ: neither changes the parameters); checked
  before any work."""
  cot = model_config(tokenizer, cfg.model)
  metacot = model_config(tokenizer, cfg.metacot_model, "metacot_model")
  if cfg.metacot_sft.init_from_cot and _param_changes(cot, metacot, max_len=True):
    raise app.UsageError(
        "metacot_sft.init_from_cot starts the Meta-CoT model from the CoT model's weights, so "
        f"config.metacot_model needs config.model's shape: got {metacot} and {cot}; make "
        "them equal or set --config.metacot_sft.init_from_cot=False")
  return cot, metacot


def sft(cfg, run: RunDir, name: str, model: ModelConfig, tc, data_fn, mesh, init_params=None,
        step=None, keep_data=False):
  """Trains (or resumes, or restores when finished) one training phase; returns its state.

  `data_fn()` builds the training arrays; it is not called when the phase has finished.
  With `keep_data` they are kept on disk until the phase ends, so a resumed phase trains on
  them again rather than on a rebuild (for data from search or sampling).
  `step` defaults to the SFT step (policy and PRM losses).
  """
  opt = OptimizerConfig(learning_rate=tc.learning_rate, warmup_steps=tc.warmup_steps,
                        total_steps=tc.steps)
  if init_params is not None:  # the train step donates its state: keep the caller's params
    init_params = jax.tree.map(jnp.copy, init_params)
  state = scale.replicate(
      create_train_state(jax.random.PRNGKey(cfg.seed), model, opt, params=init_params), mesh)
  checkpoints = run.checkpoints(name)
  if checkpoints.latest_step() == tc.steps:
    state = checkpoints.restore(state)[1]
  else:
    run.forget_log(name, after_step=checkpoints.latest_step() or 0)  # logged again on resume
    step = functools.partial(step or functools.partial(
        sft_step, config=model, value_weight=cfg.value_weight,
        unlikelihood_weight=cfg.unlikelihood_weight, unlikelihood_form=cfg.unlikelihood_form),
        micro_batches=tc.micro_batches)
    data = (run.kept_arrays(name, data_fn, json.dumps(cfg.to_dict(), sort_keys=True))
            if keep_data else data_fn())
    state, _ = train(state, data, step, num_steps=tc.steps, batch_size=tc.batch_size,
                     seed=cfg.seed, checkpoints=checkpoints,
                     checkpoint_every=tc.checkpoint_every, config_to_save=cfg.to_dict(),
                     log_fn=lambda s, m: run.log(name, s, m), desc=name, mesh=mesh)
  checkpoints.close()
  if keep_data:
    run.forget_arrays(name)
  return state


def evaluate_search(cfg, run: RunDir, prefix: str, problems, params, model: ModelConfig,
                    tokenizer: Tokenizer, mesh):
  """MCTS (verifier or learned value, tree or play, every budget) and every baseline on
  `problems`, one results key per method and budget (under `prefix`)."""
  for use_verifier in (True, False):
    search = search_config(cfg, use_verifier)
    for mode in ("tree", "play"):
      for sims in cfg.search.simulations:
        mc = MCTSConfig(num_simulations=sims, policy=cfg.search.policy, mode=mode,
                        max_num_considered_actions=search.num_candidates)
        key = f"{prefix}mcts/{'verifier' if use_verifier else 'learned'}/{mode}/{sims}"
        method = search_eval.mcts_method(params, model, tokenizer, search, mc)
        result = run.phase(key, lambda: search_eval.batched(
            method, problems, tokenizer, model, search, batch_size=cfg.search.batch_size,
            seed=cfg.seed, mesh=mesh))
        print(f"{key}: {result['accuracy']:.1%} at {result['nodes']:.1f} nodes, "
              f"{result['tokens_generated']:.0f} tokens")

  search = search_config(cfg, use_verifier=True)
  fmt = StepFormat.from_tokenizer(tokenizer, search.max_numbers)
  kw = dict(model=model, fmt=fmt, newline_id=tokenizer.newline_id, search=search)
  methods = {f"bfs/{b}": functools.partial(baselines.beam, beam_width=b, score="value", **kw)
             for b in cfg.baselines.beam_widths}
  methods |= {f"beam/{b}": functools.partial(baselines.beam, beam_width=b, score="logprob", **kw)
              for b in cfg.baselines.beam_widths}
  for order, name in (("value", "best_first"), ("dfs", "dfs")):
    methods |= {f"{name}/{e}": functools.partial(baselines.best_first, max_expansions=e,
                                                 order=order, **kw)
                for e in cfg.baselines.expansions}
  for key, fn in methods.items():
    result = run.phase(prefix + key, lambda: search_eval.batched(
        lambda rng, roots: fn(params, rng, roots), problems, tokenizer, model,
        search, batch_size=cfg.search.batch_size, seed=cfg.seed, mesh=mesh))
    print(f"{prefix}{key}: {result['accuracy']:.1%} at {result['nodes']:.1f} nodes")

  def sampling_curves():
    samples = baselines.sample_n(params, jax.random.PRNGKey(cfg.seed), problems, tokenizer,
                                 model, cfg.baselines.samples, cfg.eval.max_new_tokens,
                                 mesh=mesh)
    return baselines.sample_curves(samples, problems)
  curves = run.phase(prefix + "sampling", sampling_curves)
  for name, curve in curves.items():
    print(f"{prefix}{name}: " + ", ".join(f"k={k} {a:.1%}"
                                          for k, a in zip(curve["k"], curve["accuracy"])))


def reinforce(cfg, run: RunDir, name: str, model: ModelConfig, reference, gamma: float,
              prompts, reward_fn, mesh):
  """Trains (or resumes, or restores when finished) one RL run from `reference`."""
  c = cfg.rl
  rl_cfg = RLConfig(gamma=gamma, length_unit=c.length_unit, beta=c.beta,
                    group_size=c.group_size, estimator=c.estimator, clip_eps=c.clip_eps,
                    epochs=c.epochs, max_new_tokens=c.max_new_tokens,
                    micro_batches=c.micro_batches)
  steps = c.updates * c.epochs
  opt = OptimizerConfig(learning_rate=c.learning_rate, warmup_steps=min(5, steps),
                        total_steps=steps, end_lr_fraction=1.0)
  state = scale.replicate(
      create_train_state(None, model, opt, params=jax.tree.map(jnp.copy, reference)), mesh)
  checkpoints = run.checkpoints(name)
  done = updates_done(checkpoints, c.epochs)
  if done >= c.updates:
    state = checkpoints.restore(state)[1]
  else:
    run.forget_log(name, after_step=done)  # its rows count updates
    state, _ = train_rl(state, reference, model, rl_cfg, prompts, reward_fn,
                        num_updates=c.updates, problems_per_update=c.problems_per_update,
                        seed=cfg.seed, checkpoints=checkpoints,
                        checkpoint_every=c.checkpoint_every, config_to_save=cfg.to_dict(),
                        log_fn=lambda u, m: run.log(name, u, m),
                        stop_ids=(Tokenizer.eos_id,), desc=name, mesh=mesh)
  checkpoints.close()
  return state


def rl_evaluation(cfg, tokenizer: Tokenizer, model: ModelConfig, params, problems,
                  mesh) -> dict:
  """One greedy generation per test puzzle (accuracy, tokens) and sampled success rate."""
  greedy = metacot_eval.in_context(params, model, tokenizer, problems,
                                   batch_size=cfg.eval.batch_size, mesh=mesh)
  sampled = metacot_eval.sampled(params, model, tokenizer, problems,
                                 samples=cfg.rl.eval_samples,
                                 max_new_tokens=cfg.rl.max_new_tokens,
                                 rng=jax.random.PRNGKey(cfg.seed), mesh=mesh)
  keep = ("accuracy", "correct", "mean_tokens", "mean_steps", "mean_backtracks",
          "illegal_step_rate", "solved_after_backtrack_rate", "mean_tokens_right", "mean_tokens_wrong",
          "cut_off_rate", "cut_off_legal_rate", "repeated_step_rate", "first_error_kinds",
          "example")
  return {k: greedy[k] for k in keep} | sampled


# Unlikelihood targets kept per Meta-CoT example (`examples.encode`): symbolic traces hold at
# most 7 (1,344 traces of 200 puzzles); a longer generation keeps its first 16.
MAX_AVOIDS = 16


# Model fields that runs from before they existed used (configs saved then lack them).
LEGACY_MODEL_DEFAULTS = {"dtype": "float32", "position": "learned", "local_heads": 0,
                         "local_window": 32}


def with_legacy_model_defaults(config: dict) -> dict:
  """A saved config with the model fields it predates filled in as they were then."""
  config = dict(config)
  for flag in ("model", "metacot_model"):
    if flag in config:
      config[flag] = {**LEGACY_MODEL_DEFAULTS, **config[flag]}
  return config


def _param_changes(then: ModelConfig, now: ModelConfig, max_len: bool = False) -> list[str]:
  """`field=old value` where `now` changes what the parameters depend on: not the compute
  dtype or the local heads (masks), nor max_len between RoPE models (it sizes only the cache)
  unless `max_len` asks for it."""
  skip = {"dtype", "local_heads", "local_window"}
  skip |= {"max_len"} if then.position == now.position == "rope" and not max_len else set()
  return [f"{f.name}={getattr(then, f.name)}" for f in dataclasses.fields(then)
          if f.name not in skip and getattr(then, f.name) != getattr(now, f.name)]


def check_models_unchanged(run: RunDir, cot: ModelConfig, metacot: ModelConfig, tokenizer):
  """A run resumes only with the models that wrote its checkpoints: otherwise one clear error
  before any work that names every field to set, not a failed restore deep inside. Each
  checkpoint folder holds the config that wrote it; `sft_cot`, `sft_cot_matched` and the CoT
  baseline's STaR rounds `star_cot_<r>` are the CoT model's, the rest the Meta-CoT model's."""
  folder = run.path / "checkpoints"
  wanted = {}
  for path in sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []:
    of_cot = path.name in ("sft_cot", "sft_cot_matched") or path.name.startswith("star_cot_")
    flag, now = ("model", cot) if of_cot else ("metacot_model", metacot)
    checkpoints = run.checkpoints(path.name)
    saved = checkpoints.restore_config()
    checkpoints.close()
    if saved is None:
      continue
    if "data" not in wanted and run_tokenizer(ConfigDict(saved)).vocab != tokenizer.vocab:
      lists_tried = saved.get("data", {}).get("back_lists_tried", False)  # the vocabulary
      wanted["data"] = [f"--config.data.back_lists_tried={lists_tried}"]
    if flag in wanted:
      continue
    then = model_config(tokenizer, ConfigDict(with_legacy_model_defaults(saved)[flag]), flag)
    changes = _param_changes(then, now)
    if changes:
      wanted[flag] = [f"--config.{flag}.{change}" for change in changes]
  if wanted:
    fields = [f for flag in ("model", "metacot_model", "data") for f in wanted.get(flag, [])]
    raise app.UsageError(f"{run.path} holds checkpoints of other models; resume with "
                         f"{' '.join(fields)}, or use a new --workdir")


def check_batches_divide(cfg, devices: int):
  """Training batches split evenly over the devices, and each micro-batch too (evaluation
  batches are padded): fails before any work with the fields to change."""
  phases = {"sft": cfg.sft, "metacot_sft": cfg.metacot_sft}  # only the phases that run
  if cfg.star.rounds:
    phases["star.sft"] = cfg.star.sft
    if cfg.star.alphazero.steps:
      phases["star.alphazero"] = cfg.star.alphazero
  # (flag, value, the multiple it must be): rows split over devices, then into micro-batches
  fields = [(f"{k}.batch_size", c.batch_size, devices * c.micro_batches)
            for k, c in phases.items()]
  if cfg.rl.gammas:
    rows = devices * cfg.rl.micro_batches  # the rollouts: problems_per_update x group_size
    fields.append(("rl.problems_per_update", cfg.rl.problems_per_update,
                   math.lcm(devices, rows // math.gcd(rows, cfg.rl.group_size))))
  bad = [(flag, value, unit) for flag, value, unit in fields if value % unit]
  if bad:
    raise app.UsageError(
        f"batches must split evenly over {devices} device(s) and their micro_batches: "
        + ", ".join(f"{flag}={value} is not a multiple of {unit}" for flag, value, unit in bad)
        + "; e.g. " + " ".join(f"--config.{flag}={-(-value // unit) * unit}"
                               for flag, value, unit in bad)
        + ", or fewer micro_batches (they count slices of the whole batch, over all devices)")


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
  if flags.FLAGS.preset != _PRESET:  # e.g. `-preset=quick` or a flagfile: too late for defaults
    raise app.UsageError(f"the config was built for preset {_PRESET!r} but --preset is "
                         f"{flags.FLAGS.preset!r}: write it on the command line as "
                         "--preset=NAME or --preset NAME")
  repeated = repeated_overrides(sys.argv)
  if repeated:
    raise app.UsageError(f"{', '.join(repeated)} given more than once: give each config field "
                         "once (a tuple field given twice would take both values joined)")
  cfg.preset = flags.FLAGS.preset
  scale.initialize_distributed()
  mesh = scale.data_mesh()
  try:
    configs.check(cfg)
  except ValueError as e:
    raise app.UsageError(str(e)) from None
  check_batches_divide(cfg, scale.mesh_size(mesh))
  tokenizer = run_tokenizer(cfg)
  cot_model, metacot_model = model_configs(cfg, tokenizer)
  run = RunDir(flags.FLAGS.workdir)
  try:
    run.lock()
  except RuntimeError as e:
    raise app.UsageError(str(e)) from None
  check_models_unchanged(run, cot_model, metacot_model, tokenizer)
  if "config" in run.results:  # a run from before a model field: compare as it was
    run.results["config"] = with_legacy_model_defaults(run.results["config"])
  changes = run.config_changes(cfg.to_dict())
  if changes:
    logging.warning("%s was started with another config (%s): its finished phases keep their "
                    "results and the rest run with this one; use a new --workdir to redo "
                    "everything", run.path, "; ".join(changes))
    run.save("config_changes", run.results.get("config_changes", []) + changes)
  run.save("config", cfg.to_dict())
  run.save("devices", {"count": jax.device_count(), "processes": jax.process_count(),
                       "kind": jax.devices()[0].device_kind})

  # 1. Data: the Game of 24 splits (TFDS).
  problems, amt, ranking = load_problems(cfg, run)
  train_p, test_p, hard_p = problems["train"], problems["test"], problems["hard"]
  run.save("data", {"ranking": ranking, **{s: len(p) for s, p in problems.items()}})
  run.save("amt_hard", amt["hard"])
  print(f"data: {len(train_p)} train / {len(test_p)} test / {len(hard_p)} hard puzzles "
        f"(ranking: {ranking})")

  # 2. CoT SFT: policy on clean solutions, PRM on solver-labelled walks (one trunk).
  walks = walk_data(cfg, train_p)

  def training_rows(exs, length: int, key: str, max_avoids: int = 0, **stats):
    """Token arrays of `exs` (packed several to a row with `data.pack`), with up to
    `max_avoids` unlikelihood targets each; sizes saved."""
    arrays, dropped = examples.encode(tokenizer, exs, length, max_avoids=max_avoids)
    n = len(arrays["tokens"])
    if cfg.data.pack:
      arrays = examples.pack(arrays)
    run.save(key, {**stats, "dropped_too_long": dropped, "examples": n,
                   "rows": len(arrays["tokens"]), "fill": examples.fill(arrays)})
    return arrays

  def cot_data(length: int, key: str):
    exs = examples.cot_examples(train_p, cfg.data.max_solutions, cfg.seed) + walks
    return training_rows(exs, length, key)
  cot_state = sft(cfg, run, "sft_cot", cot_model, cfg.sft,
                  lambda: cot_data(cfg.sft.length, "cot_data"), mesh)
  run.save("models", {"cot_params": count_params(cot_state.params)})

  # 3. Meta-CoT SFT on symbolic search traces (and the same walks), from the CoT model's
  # weights when the shapes agree (it can already compute) or from scratch.

  def metacot_data(traces, key):
    avoid = cfg.unlikelihood_weight > 0
    exs = [round0.trace_segments(p, lines, cfg.data.loss_variant, avoid=avoid)
           for p, lines in traces]
    lengths = [len(tokenizer.encode(trace.trace_text(lines))) for _, lines in traces]
    return training_rows(exs + walks, cfg.metacot_sft.length, key,
                         max_avoids=MAX_AVOIDS if avoid else 0, traces=len(traces),
                         mean_trace_tokens=float(np.mean(lengths)) if lengths else 0.0)

  # seeded, so the same traces each call: built once for Meta-CoT SFT and each round's mix
  symbolic = functools.cache(lambda: round0.symbolic_traces(
      train_p, cfg.data.traces_per_problem, cfg.seed, noise_scales=cfg.data.dfs_noise_scales,
      bfs_fraction=cfg.data.bfs_fraction, astar_fraction=cfg.data.astar_fraction,
      list_tried=cfg.data.back_lists_tried))
  init = cot_state.params if cfg.metacot_sft.init_from_cot else None
  metacot_state = sft(cfg, run, "sft_metacot", metacot_model, cfg.metacot_sft,
                      lambda: metacot_data(symbolic(), "metacot_data"), mesh, init_params=init)
  run.save("models", {**run.results["models"],
                      "metacot_params": count_params(metacot_state.params)})
  # 3b. The CoT-only baseline gets the Meta-CoT model's budget: metacot_sft's steps, batches
  # and schedule on CoT data, from the same CoT weights. It is the CoT model from here on.
  matched = cfg.metacot_sft.init_from_cot and cfg.metacot_sft.matched_cot
  if matched:
    cot_state = sft(cfg, run, "sft_cot_matched", cot_model, cfg.metacot_sft,
                    lambda: cot_data(cfg.metacot_sft.length, "cot_matched_data"), mesh,
                    init_params=cot_state.params)
  run.save("models", {**run.results["models"],
                      "cot_steps": cfg.sft.steps + matched * cfg.metacot_sft.steps,
                      "metacot_steps": (cfg.sft.steps * cfg.metacot_sft.init_from_cot
                                        + cfg.metacot_sft.steps)})

  # 4. One greedy generation each, no outside search or verifier; then given steps, to
  # tell wrong arithmetic from wrong choices, and traced steps, to tell steps after a backtrack.
  for name, state, model in (("cot", cot_state, cot_model),
                             ("metacot", metacot_state, metacot_model)):
    for split, ps in (("test", test_p), ("hard", hard_p)):
      result = run.phase(f"greedy/{name}/{split}", lambda: metacot_eval.in_context(
          state.params, model, tokenizer, ps, batch_size=cfg.eval.batch_size, mesh=mesh))
      print(f"greedy {name:8s} {split}: {result['accuracy']:.1%}, "
            f"{result['mean_tokens']:.0f} tokens, "
            f"{report.fmt(result.get('solved_after_backtrack_rate'), True)} solved after a "
            f"backtrack, {report.fmt(result.get('cut_off_rate'), True)} cut off by the length "
            "limit")
      print(f"  first errors: {report.first_errors(result)}; "
            f"{report.fmt(result.get('cut_off_legal_rate'), True)} cut off with every step legal, "
            f"{report.fmt(result.get('repeated_step_rate'), True)} with a step taken again")
    result = run.phase(f"arithmetic/{name}", lambda: metacot_eval.arithmetic(
        state.params, model, tokenizer, test_p, np.random.default_rng(cfg.seed),
        batch_size=cfg.eval.batch_size, mesh=mesh))
    print(f"given steps {name:8s} test: {result['result_accuracy']:.1%} results right, "
          f"{result['step_accuracy']:.1%} legal")
  # Teacher-forced symbolic traces of the test puzzles: steps after a backtrack against the rest.
  traced = run.phase("traced/metacot", lambda: metacot_eval.traced_steps(
      metacot_state.params, metacot_model, tokenizer,
      round0.symbolic_traces(test_p, 2, cfg.seed + 1, noise_scales=cfg.data.dfs_noise_scales,
                             list_tried=cfg.data.back_lists_tried),
      batch_size=cfg.eval.batch_size))
  print(f"traced steps metacot test: {report.fmt(traced['after_backtrack'], True)} written "
        f"right after a backtrack ({report.fmt(traced.get('after_backtrack_from_path'), True)} "
        f"below only the path to their state), {report.fmt(traced['elsewhere'], True)} elsewhere")
  hard = run.results["greedy/metacot/hard"]
  run.save("metacot_length_vs_amt", {"spearman": metacot_eval.rank_correlation(
      amt["hard"][:len(hard["tokens"])], hard["tokens"])})

  # 5. Search with the CoT policy as prior and its PRM as value: MCTS over budgets, then
  # the baselines on the same LM, interface and accounting; on the test split, and on the
  # first `search.hard_puzzles` of the hard split (keys prefixed `hard/`).
  splits = [("", test_p)] + ([("hard/", hard_p[:cfg.search.hard_puzzles])]
                             if cfg.search.hard_puzzles else [])
  for prefix, ps in splits:
    evaluate_search(cfg, run, prefix, ps, cot_state.params, cot_model, tokenizer, mesh)

  # 6. The PRM: calibration against outcome labels (solver) and Monte Carlo labels (LM).
  def prm_eval():
    rng = np.random.default_rng(cfg.seed)
    prefixes, outcome, _ = value_labels.random_prefixes(test_p, (1, 2), rng)
    predicted = value_labels.prefix_values(cot_state.params, cot_model, tokenizer, test_p,
                                           prefixes, mesh=mesh)
    mc = value_labels.lm_mc_values(cot_state.params, cot_model, tokenizer, test_p, prefixes,
                                   cfg.prm.mc_samples, cfg.eval.max_new_tokens - 30,
                                   jax.random.PRNGKey(cfg.seed), mesh=mesh)
    return {"vs_outcome": value_labels.calibration(predicted, outcome),
            "vs_mc": value_labels.calibration(predicted, mc),
            "outcome_accuracy": float(np.mean((np.asarray(predicted) > 0.5) == np.asarray(outcome))),
            "mean_mc": float(np.mean(mc)), "mean_outcome": float(np.mean(outcome))}
  prm = run.phase("prm", prm_eval)
  print(f"PRM: accuracy vs outcome {prm['outcome_accuracy']:.1%}, ECE vs outcome "
        f"{prm['vs_outcome']['ece']:.3f}, vs MC {prm['vs_mc']['ece']:.3f}")

  # 7. Meta-STaR: search with the current Meta-CoT policy on the train split (MCTS, or its
  # own in-context generations: star.source), keep the verified runs, linearize them,
  # fine-tune; then AlphaZero steps toward the search's weights at the roots (and the value
  # toward the outcome); repeat.
  policies = [metacot_state.params]
  star_search = search_config(cfg, use_verifier=True)
  star_mcts = MCTSConfig(num_simulations=cfg.star.simulations, policy=cfg.search.policy,
                         max_num_considered_actions=star_search.num_candidates)
  solved_ever: set[int] = set()
  star_p = train_p[:cfg.star.train_puzzles]
  # the policy target scores each candidate's choice of step (up to ' = '), not its arithmetic,
  # with the search's prior (per-token mean or sum)
  alphazero = functools.partial(alphazero_step, config=metacot_model,
                                value_weight=cfg.value_weight, choice_id=tokenizer.id_of(" = "),
                                mean=star_search.prior == "mean")
  for r in range(1, cfg.star.rounds + 1):
    name = f"star_{r}"
    targets_path = run.path / f"star_{r}_alphazero_targets.npz"

    def round_data(r=r, targets_path=targets_path):
      found, repaired = [], []  # verified traces (search or generations), repaired failures
      if cfg.star.source in ("search", "both"):  # MCTS trees, outside the model
        found, targets = from_search.search_traces(
            policies[-1], metacot_model, tokenizer, star_p, star_search, star_mcts,
            batch_size=cfg.search.batch_size, seed=cfg.seed + r,
            value_target=cfg.star.value_target, order=cfg.star.trace_order,
            list_tried=cfg.data.back_lists_tried, mesh=mesh)
        # before the SFT starts: a resumed round finds it
        scale.on_primary(lambda: write_arrays(targets_path, targets))
      if cfg.star.source in ("generations", "both"):  # the policy's own in-context searches
        generations = from_generations.sampled_generations(
            policies[-1], metacot_model, tokenizer, star_p, samples=cfg.star.generations,
            rng=jax.random.PRNGKey(cfg.seed + r), batch_size=cfg.search.batch_size, mesh=mesh)
        own, stats = from_generations.verified_generations(
            star_p, generations, list_tried=cfg.data.back_lists_tried)
        print(f"Meta-STaR round {r}: {stats['verified']} of {stats['generations']} sampled "
              f"generations verified, {stats['kept']} distinct legal ones kept "
              f"({stats['kept_with_backtracks']} with backtracks)")
        found += own
        if cfg.star.repair:  # and the failed ones, cut at their first mistake and finished
          repaired, repair_stats = repair.repaired_generations(
              star_p, generations, list_tried=cfg.data.back_lists_tried)
          stats.update(repair_stats)
          print(f"  {stats['failed']} failed ({stats['failed_with_a_loop']} with a loop), "
                f"{stats['repaired']} distinct repairs kept")
        run.save(f"star/{r}/generations", stats)
      run.save(f"star/{r}/solved", sorted({i for i, _ in found}))
      traces = [(star_p[i], lines) for i, lines in found + repaired]
      if cfg.star.keep_round0:
        traces += symbolic()
      return metacot_data(traces, f"star/{r}/data")

    init = policies[-1] if cfg.star.from_previous else metacot_state.params
    state = sft(cfg, run, name, metacot_model, cfg.star.sft, round_data, mesh, init_params=init,
                keep_data=True)
    if cfg.star.alphazero.steps:  # then the policy toward the search's choices at the roots
      state = sft(cfg, run, f"{name}_alphazero", metacot_model, cfg.star.alphazero,
                  lambda targets_path=targets_path: dict(np.load(targets_path)), mesh,
                  init_params=state.params, step=alphazero)
    policies.append(state.params)
    solved = run.results[f"star/{r}/solved"]

    def round_result():
      greedy = metacot_eval.in_context(state.params, metacot_model, tokenizer, test_p,
                                       batch_size=cfg.eval.batch_size, mesh=mesh)
      # train_solved_by_search: by the round's source, MCTS or the policy's own generations
      return {"greedy_test": greedy["accuracy"], "greedy_correct": greedy["correct"],
              "greedy_repeated_step_rate": greedy["repeated_step_rate"],
              "source": cfg.star.source, "train_solved_by_search": len(solved),
              "newly_solved": len(set(solved) - solved_ever) if r > 1 else len(solved)}
    result = run.phase(f"star/{r}", round_result)
    # the hard split too: 362 more puzzles to tell a round's change from noise
    hard = run.phase(f"star/{r}/hard", lambda: {
        k: v for k, v in metacot_eval.in_context(
            state.params, metacot_model, tokenizer, hard_p, batch_size=cfg.eval.batch_size,
            mesh=mesh).items() if k in ("accuracy", "correct", "mean_tokens",
                                        "repeated_step_rate")})
    solved_ever |= set(solved)
    print(f"Meta-STaR round {r}: greedy test {result['greedy_test']:.1%}, hard "
          f"{hard['accuracy']:.1%} ({report.fmt(hard.get('repeated_step_rate'), True)} with a "
          f"step taken again), {result['train_solved_by_search']} train puzzles solved by "
          f"{report.STAR_SOURCES[result.get('source', 'search')]} ({result['newly_solved']} new)")

  # 7b. The CoT-only baseline's own STaR rounds (star.matched_cot): it samples solutions to
  # the same train puzzles and fine-tunes on the verified ones with star.sft's schedule, so
  # the gap after the rounds compares two models given the same budget and self-training.
  cot_policies = [cot_state.params]
  for r in range(1, cfg.star.rounds + 1 if cfg.star.matched_cot else 1):

    def cot_round_data(r=r):
      generations = from_generations.sampled_generations(
          cot_policies[-1], cot_model, tokenizer, star_p, samples=cfg.star.generations,
          rng=jax.random.PRNGKey(cfg.seed + r), batch_size=cfg.search.batch_size, mesh=mesh)
      solutions, stats = from_generations.verified_solutions(star_p, generations)
      run.save(f"star_cot/{r}/generations", stats)
      print(f"CoT STaR round {r}: {stats['verified']} of {stats['generations']} sampled "
            f"solutions verified, {len(solutions)} distinct ones kept")
      exs = [examples.solution_example(star_p[i], steps, answer)
             for i, steps, answer in solutions]
      if cfg.star.keep_round0:  # as Meta-STaR keeps its round-0 traces: the solver's solutions
        exs += examples.cot_examples(train_p, cfg.data.max_solutions, cfg.seed)
      return training_rows(exs + walks, cfg.star.sft.length, f"star_cot/{r}/data",
                           solutions=len(solutions))

    init = cot_policies[-1] if cfg.star.from_previous else cot_state.params
    state = sft(cfg, run, f"star_cot_{r}", cot_model, cfg.star.sft, cot_round_data, mesh,
                init_params=init, keep_data=True)
    cot_policies.append(state.params)
    greedy = {split: run.phase(f"star_cot/{r}/{split}", lambda ps=ps: {
        k: v for k, v in metacot_eval.in_context(
            state.params, cot_model, tokenizer, ps, batch_size=cfg.eval.batch_size,
            mesh=mesh).items() if k in ("accuracy", "correct", "mean_tokens")})
        for split, ps in (("test", test_p), ("hard", hard_p))}
    meta = (run.results[f"star/{r}"]["greedy_test"], run.results[f"star/{r}/hard"]["accuracy"])
    print(f"CoT STaR round {r}: greedy test {greedy['test']['accuracy']:.1%}, hard "
          f"{greedy['hard']['accuracy']:.1%}; Meta-CoT after as many rounds "
          f"{100 * (meta[0] - greedy['test']['accuracy']):+.1f} and "
          f"{100 * (meta[1] - greedy['hard']['accuracy']):+.1f} points")

  # TS-LLM's table: MCTS accuracy for every (policy_i, value_j) pair of rounds.
  for i, policy in enumerate(policies):
    for j, value in enumerate(policies):
      pair = PolicyValue(policy, value) if i != j else policy
      method = search_eval.mcts_method(pair, metacot_model, tokenizer, star_search, star_mcts)
      run.phase(f"star/pairs/{i}/{j}", lambda: search_eval.batched(
          method, test_p[:cfg.star.pairs_puzzles], tokenizer, metacot_model, star_search,
          batch_size=cfg.search.batch_size, seed=cfg.seed, mesh=mesh)["accuracy"])

  # 8. RL from the last Meta-STaR policy, one run per discount gamma: the length frontier.
  rl_p = train_p[:cfg.rl.train_puzzles]
  rl_prompts = [tokenizer.encode(p.prompt(), bos=True) for p in rl_p]
  reference = policies[-1]
  evaluate_rl = lambda params: rl_evaluation(cfg, tokenizer, metacot_model, params, test_p,
                                             mesh)
  run.phase("rl/reference", lambda: evaluate_rl(reference))
  reward_fn = TraceReward(tokenizer, rl_p, cfg.rl.length_unit, cfg.rl.wrong_answer_reward)
  for gamma in map(float, cfg.rl.gammas):  # keys 'rl/1.0', whether typed 1 or 1.0
    state = reinforce(cfg, run, f"rl_gamma_{gamma}", metacot_model, reference, gamma,
                      rl_prompts, reward_fn, mesh)
    result = run.phase(f"rl/{gamma}", lambda: evaluate_rl(state.params))
    print(f"RL gamma={gamma}: greedy {result['accuracy']:.1%} at {result['mean_tokens']:.0f} "
          f"tokens; sampled {result['success_rate']:.1%} at {result['mean_trace_tokens']:.0f}")

  if scale.is_primary():
    report.write(run)
  print(f"wrote {run.results_path} and {run.path / 'report.md'}")


if __name__ == "__main__":
  app.run(main)
