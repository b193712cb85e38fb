"""`report.md` and plots from a run's `results.json`, beside the anchors of MISSION.md."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=wrong-import-position

from metacot_jax.runs import RunDir  # pylint: disable=wrong-import-position

ANCHORS = [
    ("ToT (GPT-4)", "ToT test, 100 puzzles", "IO 7.3%, CoT 4.0%, CoT-SC k=100 9.0%, "
     "best-of-100 49%, ToT b=1 45%, ToT b=5 74% at about 84 nodes per puzzle"),
    ("TS-LLM (LLaMA-2-7B policy + value)", "ranks 1001-1362", "MCTS-alpha 84.3% at 2-4K tokens; "
     "value-ranked best-of-N 54.1% at 2.5K tokens"),
    ("Stream of Search (250M GPT-Neo)", "Countdown", "search traces 51% vs optimal paths 26%"),
]
# ToT's Fig. 3 points for the GPT-4 reference: (nodes visited, success rate).
TOT_POINTS = {"ToT b=1": (None, 0.45), "ToT b=5": (84, 0.74), "CoT best-of-100": (None, 0.49)}


def _mcts_rows(results: dict):
  rows = []
  for key, r in results.items():
    if key.startswith("mcts/"):
      _, reward, mode, sims = key.split("/")
      rows.append((reward, mode, int(sims), r))
  return sorted(rows, key=lambda x: (x[0], x[1], x[2]))


def write(run: RunDir):
  r = run.results
  models = r.get("models", {})
  lines = ["# Game of 24 run report", "",
           f"Preset `{r['config']['preset']}`; puzzles ranked by `{r['data']['ranking']}` "
           f"(`tot` = Tree of Thoughts' 24.csv); test = ranks 901-1000 ({r['data']['test']} "
           f"used), hard = ranks 1001-1362 ({r['data']['hard']} used). Models: CoT "
           f"{models.get('cot_params', 0):,} parameters, Meta-CoT "
           f"{models.get('metacot_params', 0):,} (same trunk, longer context).", ""]

  lines += ["## One greedy generation, no search, no verifier", "",
            "| model | split | accuracy | mean generated tokens | mean steps | mean backtracks |",
            "| --- | --- | --- | --- | --- | --- |"]
  for name in ("cot", "metacot"):
    for split in ("test", "hard"):
      g = r.get(f"greedy/{name}/{split}")
      if g:
        lines.append(f"| {name} | {split} | {g['accuracy']:.1%} | {g['mean_tokens']:.0f} | "
                     f"{g['mean_steps']:.1f} | {g['mean_backtracks']:.2f} |")
  if "metacot_length_vs_amt" in r:
    lines += ["", f"Meta-CoT length against human solve time (AMT) on the hard split: Spearman "
              f"rho = {r['metacot_length_vs_amt']['spearman']:.2f}."]

  lines += ["", "## MCTS on the test split (CoT policy as prior, its PRM as value)", "",
            "Units: nodes = candidate steps generated per puzzle (ToT's unit); tokens = tokens "
            "generated per puzzle; LM calls = forward passes.", "",
            "| reward | mode | simulations | accuracy | nodes | tokens generated | "
            "tokens processed | LM calls |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for reward, mode, sims, m in _mcts_rows(r):
    lines.append(f"| {reward} | {mode} | {sims} | {m['accuracy']:.1%} | {m['nodes']:.1f} | "
                 f"{m['tokens_generated']:.0f} | {m['tokens_processed']:.0f} | "
                 f"{m['lm_calls']:.0f} |")

  lines += ["", "## Anchors (MISSION.md)", "", "| system | setting | result |",
            "| --- | --- | --- |"] + [f"| {a} | {b} | {c} |" for a, b, c in ANCHORS]
  (run.path / "report.md").write_text("\n".join(lines) + "\n")
  _plot_search(run)


def _plot_search(run: RunDir):
  rows = _mcts_rows(run.results)
  if not rows:
    return
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for unit, ax in zip(("nodes", "tokens_generated"), axes):
    for reward in ("verifier", "learned"):
      for mode in ("tree", "play"):
        pts = [(m[unit], m["accuracy"]) for rw, md, _, m in rows if rw == reward and md == mode]
        if pts:
          ax.plot(*zip(*pts), marker="o", label=f"MCTS {mode}, {reward}")
    if unit == "nodes":
      ax.scatter([84], [0.74], marker="*", s=120, color="k", label="ToT b=5 (GPT-4)")
    ax.set_xscale("log")
    ax.set_xlabel(f"{unit.replace('_', ' ')} per puzzle")
    ax.set_ylabel("success rate")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(run.path / "success_vs_compute.png", dpi=120)
  plt.close(fig)
