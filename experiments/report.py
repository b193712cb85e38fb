"""`report.md` and plots from a run's `results.json`, beside the anchors of the mission.

The main job writes them at its end; `python -m experiments.report --workdir W` writes them
again from what W holds, e.g. for a run stopped part way.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from metacot_jax.metacot import evaluate  # pylint: disable=wrong-import-position
from metacot_jax.runs import RunDir  # pylint: disable=wrong-import-position

ANCHORS = [
    ("ToT (GPT-4)", "ToT test, 100 puzzles", "IO 7.3%, CoT 4.0%, CoT-SC k=100 9.0%, "
     "best-of-100 49%, ToT b=1 45%, ToT b=5 74% at about 84 nodes per puzzle"),
    ("TS-LLM (LLaMA-2-7B policy + value)", "ranks 1001-1362", "MCTS-alpha 84.3% at 2-4K tokens; "
     "value-ranked best-of-N 54.1% at 2.5K tokens"),
    ("Stream of Search (250M GPT-Neo)", "Countdown", "search traces 51% vs optimal paths 26%"),
]
SEARCH_PREFIXES = ("mcts/", "bfs/", "beam/", "best_first/", "dfs/")
# where a Meta-STaR round's traces came from (`star.source`)
STAR_SOURCES = {"search": "MCTS with the verifier",
                "generations": "the policy's own verified generations",
                "both": "MCTS with the verifier and the policy's own verified generations"}


def _search_rows(results: dict, split: str = ""):
  """(method label, budget, result) for every step-level search evaluated on the test
  split (`split=''`) or under a prefix such as 'hard/'."""
  rows = []
  for key, r in results.items():
    if not key.startswith(split):
      continue
    key = key[len(split):]
    if key.startswith(SEARCH_PREFIXES) and isinstance(r, dict) and "accuracy" in r:
      *label, budget = key.split("/")
      rows.append(("/".join(label), int(budget), r))
  return sorted(rows, key=lambda x: (x[0], x[1]))


def fmt(x, pct=False):
  """A figure for the report and the job's printed lines: '-' where it was not measured."""
  return "-" if x is None else (f"{x:.1%}" if pct else f"{x:.1f}")


def targets(r: dict) -> list[tuple[str, str, str]]:
  """(target, measured, verdict) for each of the mission's targets this run measures."""
  out = []
  mcts = [(label, m) for label, _, m in _search_rows(r) if label.startswith("mcts/")]
  if mcts:
    out += _mcts_targets(mcts, r.get("sampling", {}).get("best_of_k"))
  else:  # no budget in search.simulations, or the run stopped before the search
    why = "not measured (no MCTS ran: search.simulations is empty, or the run stopped before)"
    out += [(name, "not run", why) for name in MCTS_TARGETS]
  cot, meta = r.get("greedy/cot/test"), r.get("greedy/metacot/test")
  if cot and meta:
    out.append(_metacot_vs_cot("Meta-CoT greedy >= 90% and >= 25 points above CoT (test)",
                               meta, cot))
  both = [i for i in _star_rounds(r) if f"star_cot/{i}/test" in r]
  if both:
    star = r[f"star/{both[-1]}"]
    out.append(_metacot_vs_cot(
        f"The same after {both[-1]} round(s) of self-training each (Meta-STaR, STaR)",
        {"accuracy": star["greedy_test"], "correct": star.get("greedy_correct")},
        r[f"star_cot/{both[-1]}/test"]))
  rounds = _star_rounds(r)
  if rounds:
    greedy = [r["greedy/metacot/test"]["accuracy"]] + [r[f"star/{i}"]["greedy_test"]
                                                         for i in rounds]
    mcts = [r.get(f"star/pairs/{i}/{i}") for i in [0] + rounds]
    up = all(b > a for a, b in zip(greedy, greedy[1:])) and all(
        m is not None for m in mcts) and all(b > a for a, b in zip(mcts, mcts[1:]))
    out.append(("Each Meta-STaR round improves greedy and MCTS accuracy (>= 2 rounds)",
                "greedy " + " -> ".join(f"{g:.1%}" for g in greedy) + "; MCTS " +
                " -> ".join(fmt(m, True) for m in mcts),
                "met" if up and len(rounds) >= 2 else "not met"))
  if "metacot_length_vs_amt" in r and "greedy/metacot/hard" in r:
    rho = r["metacot_length_vs_amt"]["spearman"]
    bar = 2 / len(r["greedy/metacot/hard"]["tokens"]) ** 0.5  # about 95% significance
    out.append(("Meta-CoT length grows with human solve time (AMT), hard split",
                f"Spearman rho {rho:.2f} (significance bar {bar:.2f})",
                "met" if rho > bar else "not met"))
  out.append(rl_target(r))
  return out


MCTS_TARGETS = ("MCTS with the verifier: >= 99% at <= 30 nodes per puzzle (test)",
                "MCTS without the verifier (learned value, one answer): >= 95%",
                "MCTS reaches best-of-N with >= 4x fewer nodes and tokens")


def _mcts_targets(mcts: list[tuple[str, dict]], curves: dict | None) -> list[tuple[str, str, str]]:
  """The MCTS targets' rows from (label, result) of every MCTS budget run, and sample-N's
  best-of-k curve (None when not run)."""
  verifier = [m for label, m in mcts if label == "mcts/verifier/tree" and m["nodes"] <= 30]
  best = max(verifier, key=lambda m: m["accuracy"], default=None)
  out = [(MCTS_TARGETS[0],
          f"{fmt(best and best['accuracy'], True)} at {fmt(best and best['nodes'])} nodes",
          "met" if best and best["accuracy"] >= 0.99 else "not met")]
  best = max((m for label, m in mcts if label.startswith("mcts/learned")),
             key=lambda m: m["accuracy"], default=None)
  out.append((MCTS_TARGETS[1], fmt(best and best["accuracy"], True),
              "met" if best and best["accuracy"] >= 0.95 else "not met"))
  if not curves:
    return out
  target_acc, nodes, tokens = (curves["accuracy"][-1], curves["nodes"][-1],
                               curves["tokens_generated"][-1])
  if target_acc == 0:
    return out + [(MCTS_TARGETS[2], "best-of-N 0.0%: nothing to reach", "not measured")]
  reached = [m for label, m in mcts
             if label == "mcts/verifier/tree" and m["accuracy"] >= target_acc]
  cheapest = min(reached, key=lambda m: m["nodes"], default=None)
  if cheapest is None:
    return out + [(MCTS_TARGETS[2], f"best-of-N {target_acc:.1%}; no MCTS budget reached it",
                   "not met")]
  ratio_n = nodes / max(cheapest["nodes"], 1e-9)
  ratio_t = tokens / max(cheapest["tokens_generated"], 1e-9)
  return out + [(f"MCTS reaches best-of-{curves['k'][-1]} ({target_acc:.1%}) with >= 4x fewer "
                 "nodes and tokens", f"{ratio_n:.1f}x nodes, {ratio_t:.1f}x tokens",
                 "met" if min(ratio_n, ratio_t) >= 4 else "not met")]


def _metacot_vs_cot(name: str, meta: dict, cot: dict) -> tuple[str, str, str]:
  """The in-context target's row: Meta-CoT greedy >= 90% and >= 25 points above CoT, from
  two greedy evaluations of the same puzzles (`accuracy`, and `correct` for the paired gap)."""
  met = meta["accuracy"] >= 0.9 and meta["accuracy"] - cot["accuracy"] >= 0.25
  return (name, f"Meta-CoT {meta['accuracy']:.1%}, CoT {cot['accuracy']:.1%}" + _gap(meta, cot),
          "met" if met else "not met")


def _rl_rows(r: dict) -> list[tuple[str, dict]]:
  """(gamma or 'reference', evaluation) in order: the reference first, then gamma falling."""
  gammas = sorted((k.split("/", 1)[1] for k in r if k.startswith("rl/") and k != "rl/reference"),
                  key=float, reverse=True)
  rows = [("reference", r["rl/reference"])] if "rl/reference" in r else []
  return rows + [(g, r[f"rl/{g}"]) for g in gammas]


def rl_target(r: dict) -> tuple[str, str, str]:
  """Does some gamma < 1 cut the trace length >= 30% against gamma = 1 at no loss of accuracy?

  Accuracy is one greedy generation on the test split; "no loss" allows one puzzle
  in a hundred of noise; length is the greedy generation's tokens.
  """
  name = "RL with gamma < 1 shortens traces >= 30% at no loss of accuracy (test, greedy)"
  rows = dict(_rl_rows(r))
  base = rows.get("1.0")
  shorter = [(g, m) for g, m in rows.items() if g not in ("reference", "1.0")]
  if base is None or not shorter:
    return name, "not run", "not measured (needs gamma = 1 and some gamma < 1)"
  cuts = {g: 1 - m["mean_tokens"] / base["mean_tokens"] for g, m in shorter}
  lost = {g: round(100 * (base["accuracy"] - m["accuracy"]), 6) for g, m in shorter}  # points
  ok = [g for g, m in shorter if cuts[g] >= 0.3 and lost[g] <= 1]
  measured = f"gamma=1: {base['accuracy']:.1%} at {base['mean_tokens']:.0f} tokens; " + "; ".join(
      f"gamma={g}: {m['accuracy']:.1%}, length {-cuts[g]:+.0%}" for g, m in shorter)
  if base["accuracy"] == 0:
    return name, measured, "not met (gamma = 1 solves nothing, so nothing can be kept)"
  return name, measured, f"met by gamma={ok[0]}" if ok else "not met"


def _star_rounds(r: dict) -> list[int]:
  """The Meta-STaR rounds a run has finished (its `star/<r>` results), in order."""
  return sorted(int(k.split("/")[1]) for k in r if k.count("/") == 1 and k.startswith("star/"))


def paired_gap(a, b, over: str = "puzzle") -> str:
  """'+3.0 points (95% interval -7.6 to +13.6)': the mean of a - b (scores in [0, 1] of the
  same puzzles, or accuracies of the same seeds: `over`) with its paired 95% interval."""
  diff, low, high = evaluate.paired_difference(a, b)
  if math.isnan(low):  # every puzzle (seed) differs alike
    return f"{100 * diff:+.1f} points (alike on every {over}: no interval)"
  return f"{100 * diff:+.1f} points (95% interval {100 * low:+.1f} to {100 * high:+.1f})"


def _gap(a: dict, b: dict) -> str:
  """', +3.0 points (95% interval -7.6 to +13.6)': a paired difference of two greedy
  evaluations of the same puzzles; '' for runs from before `correct` was kept."""
  a, b = a.get("correct") or [], b.get("correct") or []
  if len(a) != len(b) or len(a) < 2:
    return ""
  return ", " + paired_gap(a, b)


def star_changes(r: dict, split: str = "test") -> list[str]:
  """Each Meta-STaR round's greedy accuracy on `split` ('test' or 'hard') against the round
  before (round 1 against the Meta-CoT SFT model), paired; '-' where a round kept no
  per-puzzle results (or, on the hard split, was not evaluated there)."""
  before, out = r.get(f"greedy/metacot/{split}", {}).get("correct"), []
  for i in _star_rounds(r):
    now = (r[f"star/{i}"].get("greedy_correct") if split == "test"
           else r.get(f"star/{i}/{split}", {}).get("correct"))
    out.append(_gap({"correct": now}, {"correct": before}).removeprefix(", ") or "-")
    before = now
  return out


def _cot_rounds_table(r: dict, rounds: list[int]) -> list[str]:
  """The CoT baseline's STaR rounds (`star.matched_cot`) beside Meta-STaR's, paired."""
  rounds = [i for i in rounds if f"star_cot/{i}/test" in r]
  if not rounds:
    return []
  lines = ["", "The CoT-only baseline's STaR rounds (its own verified solutions on the same "
           "puzzles, the same steps), and the Meta-CoT model's lead after as many rounds:", "",
           "| round | CoT greedy test | CoT greedy hard | solutions kept | Meta-CoT - CoT, test "
           "| Meta-CoT - CoT, hard |", "| --- | --- | --- | --- | --- | --- |"]
  for i in rounds:
    test, hard = r[f"star_cot/{i}/test"], r.get(f"star_cot/{i}/hard", {})
    meta_test = {"correct": r[f"star/{i}"].get("greedy_correct")}
    lead = [_gap(meta_test, test).removeprefix(", ") or "-",
            _gap(r.get(f"star/{i}/hard", {}), hard).removeprefix(", ") or "-"]
    lines.append(f"| {i} | {test['accuracy']:.1%} | {fmt(hard.get('accuracy'), True)} | "
                 f"{r.get(f'star_cot/{i}/generations', {}).get('kept', '-')} | "
                 + " | ".join(lead) + " |")
  return lines


def _interval(g: dict) -> str:
  """' (16.7-33.2)': the 95% Wilson interval of a greedy accuracy, '' where not kept."""
  if not g.get("correct"):
    return ""
  low, high = evaluate.accuracy_interval(g["correct"])
  return f" ({100 * low:.1f}-{100 * high:.1f})"


def _share(g: dict, key: str, fmt: str) -> str:
  """A figure of an evaluation (e.g. a rate), '-' where it was not measured."""
  return "-" if g.get(key) is None else format(g[key], fmt)


def first_errors(g: dict) -> str:
  """The kinds of a greedy evaluation's first errors, most frequent first, as shares of its
  generations ('-' in runs from before they were measured)."""
  kinds = g.get("first_error_kinds")
  if kinds is None:
    return "-"
  found = sorted(((share, kind) for kind, share in kinds.items() if share), reverse=True)
  share = lambda x: f"{x:.0%}" if x >= 0.005 else "<1%"
  return ", ".join(f"{share(x)} {kind}" for x, kind in found) or "none"


def _lengths(g: dict) -> str:
  """'right / wrong' mean generated tokens ('-' where none, or not measured)."""
  return " / ".join("-" if g.get(k) is None else f"{g[k]:.0f}"
                    for k in ("mean_tokens_right", "mean_tokens_wrong"))


def _budgets(models: dict) -> str:
  """The SFT steps each model took (runs from before they were recorded: nothing)."""
  if "cot_steps" not in models:
    return ""
  return (f"; SFT steps from scratch: CoT {models['cot_steps']:,}, Meta-CoT "
          f"{models['metacot_steps']:,}")


def write(run: RunDir):
  r = run.results
  models = r.get("models", {})  # saved after each model's SFT: '-' before
  params = lambda key: f"{models[key]:,}" if key in models else "-"
  dev = r.get("devices", {"count": 1, "processes": 1, "kind": "?"})
  lines = ["# Game of 24 run report", "",
           f"Preset `{r['config']['preset']}`; puzzles ranked by `{r['data']['ranking']}` "
           f"(`tot` = Tree of Thoughts' 24.csv); test = ranks 901-1000 ({r['data']['test']} "
           f"used), hard = ranks 1001-1362 ({r['data']['hard']} used). Models: CoT "
           f"{params('cot_params')} parameters, Meta-CoT "
           f"{params('metacot_params')}{_budgets(models)}. Batches split over "
           f"{dev['count']} {dev['kind']} device(s) in {dev['processes']} process(es).", ""]
  if r.get("config_changes"):
    lines += ["Resumed with a changed config; phases finished before the change used the old "
              "values: " + "; ".join(f"`{c}`" for c in r["config_changes"]) + ".", ""]
  lines += ["## Targets (the mission's; where the project stands: README.md)", "",
            "| target | measured | verdict |",
            "| --- | --- | --- |"] + [f"| {a} | {b} | {c} |" for a, b, c in targets(r)]

  lines += ["", "## One greedy generation, no search, no verifier", "",
            "Accuracies with their 95% intervals (Wilson); the targets above compare the two "
            "models by their paired difference on the same puzzles.", "",
            "| model | split | accuracy (95% interval) | solved after a backtrack | mean generated "
            "tokens (right / wrong) | cut off by the length limit | mean steps | mean backtracks | "
            "with an illegal step | first one at a backtrack |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
  greedy = [(name, split, r[f"greedy/{name}/{split}"]) for name in ("cot", "metacot")
            for split in ("test", "hard") if f"greedy/{name}/{split}" in r]
  for name, split, g in greedy:
    lines.append(f"| {name} | {split} | {g['accuracy']:.1%}{_interval(g)} | "
                 f"{_share(g, 'solved_after_backtrack_rate', '.1%')} | "
                 f"{g['mean_tokens']:.0f} ({_lengths(g)}) | "
                 f"{_share(g, 'cut_off_rate', '.0%')} | {g['mean_steps']:.1f} | "
                 f"{g['mean_backtracks']:.2f} | {g['illegal_step_rate']:.0%} | "
                 f"{_share(g, 'illegal_at_backtrack_rate', '.0%')} |")
  greedy += [(f"RL {'gamma ' * (name != 'reference')}{name}", "test", g)
             for name, g in _rl_rows(r)]
  greedy = [(name, split, g) for name, split, g in greedy if "first_error_kinds" in g]
  if greedy:
    kinds = list(greedy[0][2]["first_error_kinds"])
    lines += ["", "What the first illegal line of each greedy generation got wrong, as shares of "
              "the generations (`trace.ERROR_KINDS`), the generations cut off with every "
              "step legal (searches that needed only more room), and those that take a step "
              "again from a state they took it from before (loops).", "",
              "| model | split | with an illegal step | " + " | ".join(kinds)
              + " | cut off, every step legal | with a step taken again |",
              "| --- " * (len(kinds) + 5) + "|"]
    lines += [f"| {name} | {split} | {g['illegal_step_rate']:.0%} | "
              + " | ".join(f"{g['first_error_kinds'][k]:.0%}" for k in kinds)
              + f" | {g['cut_off_legal_rate']:.0%} | {_share(g, 'repeated_step_rate', '.0%')} |"
              for name, split, g in greedy]
  given = [(name, r[f"arithmetic/{name}"]) for name in ("cot", "metacot")
           if f"arithmetic/{name}" in r]
  if given:
    lines += ["", "Given steps (test split): each step of a random legal walk is given up to "
              "its `=` and the model writes the rest (`metacot.evaluate.arithmetic`).", "",
              "| model | steps | result right | legal step | result right by step of the walk |",
              "| --- | --- | --- | --- | --- |"]
    lines += [f"| {name} | {a['steps']} | {a['result_accuracy']:.1%} | {a['step_accuracy']:.1%} "
              f"| {' / '.join(f'{x:.0%}' for x in a['result_accuracy_by_depth'])} |"
              for name, a in given]
  if "traced/metacot" in r:
    t = r["traced/metacot"]
    lines += ["", f"Traced steps (Meta-CoT, test split; `metacot.evaluate.traced_steps`): reading "
              f"{t['traces']} symbolic search traces ({t.get('left_out', 0)} too long left out), "
              f"the model writes the rest of a step exactly in {fmt(t['after_backtrack'], True)} "
              f"of the {t['steps_after_backtrack']} steps right after a backtrack "
              f"({fmt(t.get('after_backtrack_from_path'), True)} of them below only the prompt "
              "and the path to their state, without the rest of the search) and "
              f"{fmt(t['elsewhere'], True)} of the others."]
  if "metacot_length_vs_amt" in r:
    lines += ["", f"Meta-CoT length against human solve time (AMT) on the hard split: Spearman "
              f"rho = {r['metacot_length_vs_amt']['spearman']:.2f}."]

  for split, title in (("", "the test split"), ("hard/", "the hard split (ranks 1001-)")):
    rows = _search_rows(r, split)
    if not rows:
      continue
    lines += ["", f"## Step-level search on {title} (CoT policy as prior, its PRM as value)",
              "", "Units, per puzzle: nodes = candidate steps generated (ToT's unit); tokens "
              "generated; tokens processed (prefixes read + generated); LM calls = forward passes. "
              "Budget = simulations (MCTS), beam width (BFS, beam) or expansions (best-first, DFS).",
              "", "| method | budget | accuracy | nodes | tokens generated | tokens processed | "
              "LM calls |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for label, budget, m in rows:
      lines.append(f"| {label} | {budget} | {m['accuracy']:.1%} | {m['nodes']:.1f} | "
                   f"{m['tokens_generated']:.0f} | {m['tokens_processed']:.0f} | "
                   f"{m['lm_calls']:.0f} |")
    if split and f"{split}sampling" in r:
      s_ = r[f"{split}sampling"]
      lines += ["", "Sampling whole solutions on this split: " + ", ".join(
          f"pass@{k} {a:.1%}" for k, a in zip(s_["pass@k"]["k"], s_["pass@k"]["accuracy"]))
                + "."]

  if "prm" in r:
    p = r["prm"]
    lines += ["", "## The PRM (CoT model's value head) on random 1-2 step prefixes of test puzzles",
              "", f"Accuracy against outcome labels (can the state still reach 24, by the solver): "
              f"{p['outcome_accuracy']:.1%}; expected calibration error against outcome labels "
              f"{p['vs_outcome']['ece']:.3f}, against Monte Carlo labels (mean success of LM "
              f"completions, eq. 11) {p['vs_mc']['ece']:.3f}.", "",
              "| predicted value bin | prefixes | mean predicted | observed (outcome) | "
              "observed (MC) |", "| --- | --- | --- | --- | --- |"]
    mc = {b["bin"]: b for b in p["vs_mc"]["bins"]}
    for b in p["vs_outcome"]["bins"]:
      lines.append(f"| {b['bin']} | {b['count']} | {b['predicted']:.2f} | {b['observed']:.2f} | "
                   f"{mc[b['bin']]['observed']:.2f} |")

  if "sampling" in r:
    lines += ["", "## Sampling whole solutions (CoT model)", "",
              "| k | pass@k | maj@k | best-of-k by PRM | nodes | tokens generated |",
              "| --- | --- | --- | --- | --- | --- |"]
    s = r["sampling"]
    for i, k in enumerate(s["pass@k"]["k"]):
      lines.append(f"| {k} | {s['pass@k']['accuracy'][i]:.1%} | {s['maj@k']['accuracy'][i]:.1%} "
                   f"| {s['best_of_k']['accuracy'][i]:.1%} | {s['best_of_k']['nodes'][i]:.1f} | "
                   f"{s['best_of_k']['tokens_generated'][i]:.0f} |")

  rounds = _star_rounds(r)
  if rounds:
    # as the last round ran (a resumed run may have changed it); before the field: MCTS
    source = r[f"star/{rounds[-1]}"].get("source", "search")
    lines += ["", f"## Meta-STaR rounds (Meta-CoT model; {STAR_SOURCES[source]} on train "
              "puzzles)", "", "| round | greedy test accuracy | change from the round before "
              "(round 1: from the Meta-CoT SFT model) | greedy hard accuracy | change on the hard "
              "split | train puzzles solved | newly solved | traces | mean trace tokens |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for i, gap, hard_gap in zip(rounds, star_changes(r), star_changes(r, "hard")):
      s, d = r[f"star/{i}"], r.get(f"star/{i}/data", {})
      hard = r.get(f"star/{i}/hard", {}).get("accuracy")
      lines.append(f"| {i} | {s['greedy_test']:.1%} | {gap} | {fmt(hard, True)} | {hard_gap} | "
                   f"{s['train_solved_by_search']} | {s['newly_solved']} | "
                   f"{d.get('traces', '-')} | {_share(d, 'mean_trace_tokens', '.0f')} |")
    lines += _cot_rounds_table(r, rounds)
  if any(k.startswith("star/pairs/") for k in r):  # also with no rounds: the SFT model's own
    n = len(rounds) + 1
    lines += ["", f"MCTS accuracy on the first {r['config']['star'].get('pairs_puzzles', 100)} "
              "test puzzles with policy_i (rows) and value_j (columns), as TS-LLM's "
              "Table 1:", "", "| policy \\ value | " + " | ".join(str(j) for j in range(n)) + " |",
              "| --- | " + " | ".join("---" for _ in range(n)) + " |"]
    for i in range(n):
      lines.append(f"| {i} | " + " | ".join(fmt(r.get(f"star/pairs/{i}/{j}"), True)
                                            for j in range(n)) + " |")

  rl_rows = _rl_rows(r)
  if rl_rows:
    c = r["config"]["rl"]
    lines += ["", "## RL post-training from the last Meta-STaR policy, per discount gamma", "",
              f"Objective E[gamma^|Z| r] - beta KL(pi || pi_ref), |Z| in {c['length_unit']}, "
              f"r 1 for a verified answer, {c.get('wrong_answer_reward', 0.0):g} for a wrong one, "
              "0 for none, "
              f"beta {c['beta']}, {c['estimator']} advantages over G = {c['group_size']}, clip "
              f"{c['clip_eps']}, {c['updates']} updates of {c['problems_per_update']} train "
              f"puzzles. Test split: one greedy generation, and {c['eval_samples']} samples per "
              "puzzle at temperature 1.", "",
              "| policy | greedy accuracy | change from gamma = 1 | solved after a backtrack | "
              "greedy tokens (right / wrong) | greedy cut off by the length limit | illegal-step "
              "rate | sampled success | sampled pass@k | trace tokens (sampled) |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    base = dict(rl_rows).get("1.0", {})
    for g, m in rl_rows:
      label = g if g == "reference" else f"gamma = {g}"
      change = _gap(m, base).removeprefix(", ") if g != "1.0" else ""
      lines.append(f"| {label} | {m['accuracy']:.1%} | {change or '-'} | "
                   f"{_share(m, 'solved_after_backtrack_rate', '.1%')} | "
                   f"{m['mean_tokens']:.0f} ({_lengths(m)}) | {_share(m, 'cut_off_rate', '.0%')} | "
                   f"{m['illegal_step_rate']:.0%} | {m['success_rate']:.1%} | "
                   f"{m['pass_at_k']:.1%} | {m['mean_trace_tokens']:.0f} |")

  lines += ["", "## Anchors (published figures to compare with)", "",
            "| system | setting | result |",
            "| --- | --- | --- |"] + [f"| {a} | {b} | {c} |" for a, b, c in ANCHORS]
  (run.path / "report.md").write_text("\n".join(lines) + "\n")
  _plot_search(run)
  _plot_sampling(run)
  _plot_star(run)
  _plot_rl(run)


def _plot_rl(run: RunDir):
  """The paper's frontier: accuracy against trace length, one point per gamma."""
  rows = _rl_rows(run.results)
  if not rows:
    return
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  views = (("mean_tokens", "accuracy", "one greedy generation"),
           ("mean_trace_tokens", "success_rate", "sampled (T = 1)"))
  for ax, (x, y, title) in zip(axes, views):
    for g, m in rows:
      ax.scatter(m[x], m[y], marker="*" if g == "reference" else "o", s=60)
      ax.annotate(g if g == "reference" else f"gamma={g}", (m[x], m[y]), fontsize=7,
                  xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("trace tokens per puzzle")
    ax.set_ylabel("test success rate")
    ax.set_title(title)
  fig.suptitle("RL frontier: accuracy against Meta-CoT length per discount gamma")
  fig.tight_layout()
  fig.savefig(run.path / "rl_frontier.png", dpi=120)
  plt.close(fig)


def _plot_search(run: RunDir):
  rows = _search_rows(run.results)
  curves = run.results.get("sampling", {})
  if not rows:
    return
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  for unit, ax in zip(("nodes", "tokens_generated"), axes):
    for label in dict.fromkeys(l for l, _, _ in rows):
      pts = sorted((m[unit], m["accuracy"]) for l, _, m in rows if l == label)
      ax.plot(*zip(*pts), marker="o", label=label)
    for name in ("best_of_k", "pass@k"):
      if name in curves:
        ax.plot(curves[name][unit], curves[name]["accuracy"], marker="x", linestyle="--",
                label=name.replace("_of_k", "-of-N (PRM)"))
    if unit == "nodes":
      ax.scatter([84], [0.74], marker="*", s=150, color="k", label="ToT b=5, GPT-4")
    ax.set_xscale("log")
    ax.set_xlabel(f"{unit.replace('_', ' ')} per puzzle")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=6)
  fig.suptitle("Success against compute on ToT's test set (ToT Fig. 3 view)")
  fig.tight_layout()
  fig.savefig(run.path / "success_vs_compute.png", dpi=120)
  plt.close(fig)


def _plot_sampling(run: RunDir):
  curves = run.results.get("sampling")
  if not curves:
    return
  fig, ax = plt.subplots(figsize=(5, 4))
  for name, curve in curves.items():
    ax.plot(curve["k"], curve["accuracy"], marker="o", label=name)
  ax.set_xscale("log", base=2)
  ax.set_xlabel("k samples")
  ax.set_ylabel("success rate")
  ax.set_ylim(0, 1.02)
  ax.legend()
  fig.tight_layout()
  fig.savefig(run.path / "pass_maj_best_of_k.png", dpi=120)
  plt.close(fig)


def _plot_star(run: RunDir):
  r = run.results
  rounds = _star_rounds(r)
  hard = r.get("greedy/metacot/hard")
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  if rounds and "greedy/metacot/test" in r:
    greedy = [r["greedy/metacot/test"]["accuracy"]] + [r[f"star/{i}"]["greedy_test"]
                                                         for i in rounds]
    mcts = [r.get(f"star/pairs/{i}/{i}") for i in [0] + rounds]
    axes[0].plot(range(len(greedy)), greedy, marker="o", label="greedy (in-context)")
    greedy_hard = [hard["accuracy"] if hard else None] + [
        r.get(f"star/{i}/hard", {}).get("accuracy") for i in rounds]
    if all(g is not None for g in greedy_hard):
      axes[0].plot(range(len(greedy_hard)), greedy_hard, marker="^",
                   label="greedy (in-context), hard split")
    if all(m is not None for m in mcts):
      axes[0].plot(range(len(mcts)), mcts, marker="s", label="MCTS")
    axes[0].set_xlabel("Meta-STaR round")
    axes[0].set_ylabel("accuracy (test split unless marked)")
    axes[0].legend()
  if hard and any(t > 0 for t in r.get("amt_hard") or []):  # none with a computed ranking
    axes[1].scatter(r["amt_hard"][:len(hard["tokens"])], hard["tokens"], s=8)
    axes[1].set_xscale("log")
    axes[1].set_xlabel("human solve time, AMT (s)")
    axes[1].set_ylabel("Meta-CoT tokens generated")
    rho = r.get("metacot_length_vs_amt", {}).get("spearman", float("nan"))
    axes[1].set_title(f"Spearman rho = {rho:.2f}")
  fig.tight_layout()
  fig.savefig(run.path / "metacot_rounds_and_length.png", dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description="Writes a run's report.md and plots from its "
                                   "results.json.")
  parser.add_argument("--workdir", required=True, help="a run directory of the main job")
  path = Path(parser.parse_args(argv).workdir)
  if not (path / "results.json").is_file():
    raise SystemExit(f"--workdir {path}: no results.json there; give the --workdir of a run of "
                     "experiments.game24_mcts")
  run = RunDir(path)
  missing = [k for k in ("config", "data") if k not in run.results]
  if missing:
    raise SystemExit(f"{run.results_path} has no {' or '.join(missing)} yet: the run stopped "
                     "before it loaded its data; resume it with the command that started it")
  write(run)
  print(f"wrote {path / 'report.md'}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
