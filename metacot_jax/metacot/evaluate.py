"""In-context search: generations with no outside search or verifier, scored after the fact.

`in_context`: one greedy generation per problem, read back with `trace.parse` for
its facts (steps, backtracks, tokens). `sampled`: G generations per problem at
temperature 1, verified like the RL reward (a wrong answer counts 0 here). Only the
answer line is verified.
`arithmetic`: teacher-forced steps, to tell wrong sums from wrong plans.
`traced_steps`: teacher-forced search traces, to tell steps after a backtrack from the rest.
`accuracy_interval`, `paired_difference`, `rank_correlation`: the statistics the report
gives with them (scipy): on 100 test puzzles an accuracy of 24% has a 95% interval of
16.7-33.2%.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import scipy.stats

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot import trace
from metacot_jax.metacot.reward import TraceReward
from metacot_jax.models.sampling import SamplingConfig
from metacot_jax.models.transformer import ModelConfig, forward
from metacot_jax.search.greedy import generations, sample_prompts
from metacot_jax.tasks import countdown
from metacot_jax.tasks.countdown import Countdown


def in_context(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
               *, batch_size: int = 100, max_new_tokens: int | None = None, mesh=None) -> dict:
  """Greedy accuracy, and per problem: correct, generated tokens, steps, backtracks.

  `solved_after_backtrack_rate` is the share of problems solved by a generation that
  backtracked: in-context search that works, not a right first attempt. Lengths of right
  and wrong generations are apart, as the discount of RL only reaches the right ones.
  `cut_off_rate` is the share stopped by `max_new_tokens` before their end;
  `cut_off_legal_rate` the share cut off after one or more steps, every one legal: searches
  that needed only more room (the others had already gone wrong). `first_error_kinds` gives,
  for each of `trace.ERROR_KINDS`, the share of generations whose first error is of that kind.
  `repeated_step_rate` is the share with a step taken again from a state it was taken from
  before (`trace.ParsedTrace.repeated_steps`): mostly loops back into a branch just left.
  """
  width = max(len(tokenizer.encode(p.prompt(), bos=True)) for p in problems)
  max_new_tokens = max_new_tokens or config.max_len - width
  out = generations(params, config, tokenizer, problems, max_new_tokens=max_new_tokens,
                    batch_size=batch_size, mesh=mesh)
  texts = out.texts
  # as the sampler counted them (the end token included), not the decoded text re-encoded
  tokens = [int(n) for n in out.lengths]
  cut_off = [not bool(e) for e in out.ended]  # every token written, none of them the end
  facts = [trace.parse(p, t, cut_off=c) for p, t, c in zip(problems, texts, cut_off)]
  correct = [p.verify(f.answer).ok for p, f in zip(problems, facts)]
  backtracked = [f.backtracks > 0 for f in facts]
  mean_of = lambda right: (float(np.mean([n for n, c in zip(tokens, correct) if c == right]))
                           if right in correct else None)
  return {
      "accuracy": float(np.mean(correct)),
      "mean_tokens": float(np.mean(tokens)),
      "mean_steps": float(np.mean([f.steps for f in facts])),
      "mean_backtracks": float(np.mean([f.backtracks for f in facts])),
      "illegal_step_rate": float(np.mean([len(f.errors) > 0 for f in facts])),
      # of all generations, those whose first error is at a backtrack
      "illegal_at_backtrack_rate": float(np.mean([f.first_error_at_backtrack for f in facts])),
      "solved_after_backtrack_rate": float(np.mean([c and b for c, b in zip(correct, backtracked)])),
      "mean_tokens_right": mean_of(True), "mean_tokens_wrong": mean_of(False),
      "cut_off_rate": float(np.mean(cut_off)),
      "cut_off_legal_rate": float(np.mean([c and f.steps > 0 and not f.errors
                                           for c, f in zip(cut_off, facts)])),
      "repeated_step_rate": float(np.mean([f.repeated_steps > 0 for f in facts])),
      "first_error_kinds": {kind: float(np.mean([f.first_error_kind == kind for f in facts]))
                            for kind in trace.ERROR_KINDS},
      "correct": correct, "tokens": tokens,
      "steps": [f.steps for f in facts], "backtracks": [f.backtracks for f in facts],
      "example": texts[0],
  }


def arithmetic(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
               rng: np.random.Generator, *, batch_size: int = 100, mesh=None) -> dict:
  """How often the model completes a given step right, with the choice of step taken away.

  One random legal walk per problem; before each of its steps the model reads the
  prompt, the walk so far and the step's `a op b = `, and greedily writes the rest of
  the line. `result_accuracy`: the value `c` is right (also per step of the walk: deeper
  steps meet fractions and large values); `step_accuracy`: the whole line (`c` and the
  numbers left) is a legal step. Low rates mean illegal steps come from computing, high
  ones that they come from the context of the model's own choices.
  """
  prompts, heads, states, depths = [], [], [], []
  for p in problems:
    state, text = tuple(sorted(p.initial_state())), p.prompt()
    while len(state) > 1:
      depths.append(len(p.numbers) - len(state))
      kids = countdown.successors(state)
      step, child = kids[rng.integers(len(kids))]
      head = step.split("= ", 1)[0] + "= "
      prompts.append(tokenizer.encode(text + head, bos=True))
      heads.append(head)
      states.append(state)
      state, text = child, text + step + "\n"
  if not prompts:
    raise ValueError("arithmetic needs problems of two or more numbers (a step to complete)")
  cfg = SamplingConfig(24, 0.0, 0, (tokenizer.newline_id, tokenizer.eos_id))
  out = sample_prompts(params, config, prompts, cfg, jax.random.PRNGKey(0),
                       batch_size=batch_size, mesh=mesh)
  result_ok, step_ok = [], []
  for head, state, row in zip(heads, states, out.tokens_BxN):
    rest = tokenizer.decode(row).split("\n", 1)[0]
    a, op, b = head[:-3].split(" ")
    try:
      value = countdown.parse_number(rest.split(" (left:", 1)[0])
    except ValueError:
      value = None
    result_ok.append(value == countdown.apply_op(countdown.parse_number(a), op,
                                                 countdown.parse_number(b)))
    step_ok.append(countdown.check_step(state, head + rest).ok)
  result_ok, depths = np.asarray(result_ok), np.asarray(depths)
  return {"steps": len(prompts), "result_accuracy": float(result_ok.mean()),
          "step_accuracy": float(np.mean(step_ok)),
          "result_accuracy_by_depth": [float(result_ok[depths == d].mean())
                                       for d in range(depths.max() + 1)]}


@functools.partial(jax.jit, static_argnames=("config",))
def _greedy_hits(params, tokens_BxL, *, config: ModelConfig):
  """[B, L]: whether the argmax after tokens[:t] is tokens[t] (False at t = 0)."""
  logits_BxLxV, _, _ = forward(params, config, tokens_BxL)
  hits_BxL = jnp.argmax(logits_BxLxV[:, :-1], -1) == tokens_BxL[:, 1:]
  return jnp.pad(hits_BxL, ((0, 0), (1, 0)))


def traced_steps(params, config: ModelConfig, tokenizer: Tokenizer,
                 traces: Sequence[tuple[Countdown, Sequence[trace.Line]]], *,
                 batch_size: int = 100) -> dict:
  """How often the model writes each step's rest (`c (left: ...)`) exactly, reading a given
  search trace (teacher-forced): for steps right after a `back to` line and for the others.

  A model that computes each step from the line above it, whatever came before, scores
  alike; one whose arithmetic is tied to where in a trace it stands (absolute positions)
  fails after backtracks. `after_backtrack_from_path` scores the same steps with only the
  prompt and the path to their state above them (no `back to` line, none of the state's
  other children): what the rest of the search costs them. One forward pass per batch of
  rows; traces longer than the model's `max_len` are left out (`left_out`: they backtrack
  more than most).
  """
  rows, spans, path_spans = [], [], []  # spans: (row, start, end, after a backtrack)
  for problem, lines in traces:
    prompt = tokenizer.encode(problem.prompt(), bos=True)
    ids, after_back, row_spans, row_paths = list(prompt), False, [], []
    state = tuple(sorted(problem.initial_state()))
    path_to = {state: []}  # state -> the step lines that first reached it
    for line in lines:
      if line.tag in (trace.ON_PATH, trace.OFF_PATH):
        head, rest = line.text.split("= ", 1)
        ids += tokenizer.encode(head + "= ")
        start = len(ids)
        ids += tokenizer.encode(rest + "\n")
        row_spans.append((len(rows), start, len(ids), after_back))
        if after_back:
          path_ids = prompt + tokenizer.encode("".join(l + "\n" for l in path_to[state])
                                               + head + "= ")
          row_paths.append((path_ids, len(path_ids), tokenizer.encode(rest + "\n")))
        child = tuple(sorted(countdown.check_step(state, line.text).state))
        path_to.setdefault(child, path_to[state] + [line.text])
        state = child
      else:
        ids += tokenizer.encode(line.text + "\n")
        if line.tag == trace.BACK_TAG:
          state = trace.backtrack_target(line.text)
      after_back = line.tag == trace.BACK_TAG
    if len(ids) <= config.max_len:
      rows.append(ids)
      spans += row_spans
      path_spans += row_paths
  if not rows:
    raise ValueError(f"traced_steps needs traces of at most {config.max_len} tokens")
  path_rows = [head + rest for head, _, rest in path_spans]
  right = _rests_right(params, config, rows, [s[:3] for s in spans], batch_size)
  alone = _rests_right(params, config, path_rows,
                       [(i, a, a + len(rest)) for i, (_, a, rest) in enumerate(path_spans)],
                       batch_size)
  back = np.array([after for *_, after in spans])
  rate = lambda x: float(x.mean()) if x.size else None
  return {"traces": len(rows), "left_out": len(traces) - len(rows), "steps": len(spans),
          "steps_after_backtrack": int(back.sum()),
          "after_backtrack": rate(right[back]), "elsewhere": rate(right[~back]),
          "after_backtrack_from_path": rate(alone)}


def _rests_right(params, config: ModelConfig, rows: Sequence[Sequence[int]],
                 spans: Sequence[tuple[int, int, int]], batch_size: int) -> np.ndarray:
  """[len(spans)]: whether the greedy model, reading row r, writes every token in [a, b)."""
  if not rows:
    return np.zeros(0, bool)
  tokens = np.zeros((-(-len(rows) // batch_size) * batch_size, config.max_len), np.int32)
  for i, ids in enumerate(rows):
    tokens[i, :len(ids)] = ids
  hits = np.concatenate([np.asarray(_greedy_hits(params, tokens[i:i + batch_size], config=config))
                         for i in range(0, len(tokens), batch_size)])
  return np.array([hits[r, a:b].all() for r, a, b in spans], bool)


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rho (ties take their average rank); nan when either side is constant."""
  if np.ptp(np.asarray(x, float)) == 0 or np.ptp(np.asarray(y, float)) == 0:
    return float("nan")
  return float(scipy.stats.spearmanr(x, y).statistic)


def accuracy_interval(correct: Sequence[bool], confidence: float = 0.95) -> tuple[float, float]:
  """The Wilson confidence interval of an accuracy: the doubt from which puzzles were drawn,
  for these weights (not the spread between training seeds, which comes on top)."""
  ci = scipy.stats.binomtest(int(np.sum(correct)), len(correct)).proportion_ci(
      confidence, method="wilson")
  return float(ci.low), float(ci.high)


def paired_difference(a: Sequence[float], b: Sequence[float], confidence: float = 0.95
                      ) -> tuple[float, float, float]:
  """(mean of a - b, low, high): two models scored on the same problems (or their accuracies
  over the same training seeds), with a paired t interval (a normal-type approximation, fair
  when tens of problems differ), narrower than two separate ones when their successes overlap.
  low and high are nan when every problem differs alike (often: none differs), where no
  interval can be read from the data."""
  if len(a) != len(b) or len(a) < 2:
    raise ValueError("paired_difference needs two scorings of the same >= 2 problems (or "
                     f"seeds), got {len(a)} and {len(b)}")
  a, b = np.asarray(a, float), np.asarray(b, float)
  diff = float(np.mean(a - b))
  if np.ptp(a - b) == 0:
    return diff, float("nan"), float("nan")
  ci = scipy.stats.ttest_rel(a, b).confidence_interval(confidence)
  return diff, float(ci.low), float(ci.high)


def sampled(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
            *, samples: int, max_new_tokens: int, rng, batch_size: int = 16,
            mesh=None) -> dict:
  """Success rate and trace length of `samples` sampled generations per problem (T = 1).

  Finer-grained than one greedy generation for weak policies, and what RL optimises.
  """
  prompts = [tokenizer.encode(p.prompt(), bos=True) for p in problems]
  cfg = SamplingConfig(max_new_tokens, 1.0, 0, (tokenizer.eos_id,))
  out = sample_prompts(params, config, prompts, cfg, rng, batch_size=batch_size,
                       group_size=samples, mesh=mesh)
  ids = np.repeat(np.arange(len(problems)), samples)
  rewards, lengths = TraceReward(tokenizer, problems)(ids, out.tokens_BxN, out.lengths_B)
  solved = rewards >= 1.0
  return {"success_rate": float(solved.mean()),
          "pass_at_k": float(solved.reshape(-1, samples).max(1).mean()),
          "mean_trace_tokens": float(lengths.mean()), "samples": samples}
