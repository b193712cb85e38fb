"""Runs the main job over a grid of config overrides, one run directory per trial.

    python -m experiments.sweep --workdir runs/sweep --preset quick \
        --grid search.num_candidates=2,4 --grid sft.steps=50,100

Finished trials are skipped when the sweep runs again (a killed trial resumes from
its checkpoints); a failed trial is recorded with its error and the others go on.
Ends with a summary table across trials (also written to `summary.md`).

On an accelerator the default models are too small to fill it, so `--parallel N`
runs N trials side by side (each allocating GPU memory as it needs it). `--set`
gives every trial the same override; `--base DIR` starts each new trial from a copy
of a finished run, so only phases the base has not finished run (e.g. one RL run per
gamma from one SFT model; the base's finished phases keep their results even where an
override changes their settings, so give the base's overrides again). Grid values may
hold commas inside parentheses:
`--grid "data.dfs_noise_scales=(0.1,0.2,0.4),(0.3,0.6,1.0)"`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from experiments import configs, report
from metacot_jax.runs import lock_folder, write_atomically

SUMMARY_KEYS = ("greedy/cot/test", "greedy/metacot/test", "mcts/verifier/tree/",
                "mcts/learned/tree/")
RL_COLUMN = "rl/<gamma> greedy"


def split_values(values: str) -> list[str]:
  """'a,(1,2),b' -> ['a', '(1,2)', 'b']: commas inside parentheses stay in their value."""
  out, depth, start = [], 0, 0
  for i, ch in enumerate(values):
    depth += {"(": 1, ")": -1}.get(ch, 0)
    if depth < 0:
      break
    if ch == "," and depth == 0:
      out.append(values[start:i])
      start = i + 1
  if depth != 0:
    raise ValueError(f"unbalanced parentheses in {values!r}")
  return out + [values[start:]]


def parse_overrides(items: list[str], flag: str, many: bool) -> list[tuple[str, list[str]]]:
  """FIELD=V1,V2,... (or FIELD=VALUE when not `many`) as (field, values); bad ones exit."""
  usage = "FIELD=V1,V2,... e.g. search.num_candidates=2,4" if many else (
      "FIELD=VALUE e.g. star.rounds=0")
  parsed = []
  for item in items:
    key, eq, values = item.partition("=")
    try:
      split = split_values(values) if many else [values]
    except ValueError as e:
      raise SystemExit(f"{flag} {item!r}: {e}; expected {usage}") from None
    if not eq or not key or not all(split):
      raise SystemExit(f"{flag} {item!r}: expected {usage}")
    parsed.append((key, split))
  return parsed


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
  return parse_overrides(items, "--grid", many=True)


def trial_name(overrides: dict[str, str]) -> str:
  """A folder name: 'num_candidates=4_dfs_noise_scales=0.1-0.2' (tuples joined by '-')."""
  def value(v: str) -> str:
    items = [x.strip() for x in v.strip("()").split(",") if x.strip()]
    return re.sub(r"[^\w.=+-]", "_", "-".join(items)) or "none"
  return "_".join(f"{k.split('.')[-1]}={value(v)}" for k, v in overrides.items()) or "base"


def summary_row(results: dict) -> dict[str, str]:
  row = {}
  for key in SUMMARY_KEYS:
    matches = sorted((k for k in results if k.startswith(key)),
                     key=lambda k: int(k.rsplit("/", 1)[-1]) if k.rsplit("/", 1)[-1].isdigit() else 0)
    if matches:
      r = results[matches[-1]]
      row[matches[-1]] = f"{r['accuracy']:.1%}"
  rl = [(k.split("/", 1)[1], r) for k, r in results.items()
        if k.startswith("rl/") and k != "rl/reference"]
  if rl:  # the RL frontier: each gamma's greedy accuracy at its mean length
    row[RL_COLUMN] = "; ".join(f"{g}: {r['accuracy']:.0%} at {r['mean_tokens']:.0f} tokens"
                               for g, r in rl)
  return row


def seed_rows(trials: list[tuple[dict, dict]]) -> list[str]:
  """Markdown rows over training seeds: for each config (a trial's overrides less `seed`),
  greedy test accuracies as mean (min-max) and Meta-CoT - CoT on the test and hard splits,
  paired by seed with a 95% t interval. Every seed is scored on the same puzzles, so these
  intervals count the spread of training alone. `trials`: (overrides, results) pairs."""
  groups: dict[str, list[dict]] = {}
  for overrides, results in trials:
    config = trial_name({k: v for k, v in overrides.items() if k != "seed"})
    groups.setdefault(config, []).append(results)

  def accuracies(runs, key):
    return [r[key]["accuracy"] for r in runs if key in r]

  def spread(accs):
    return (f"{100 * sum(accs) / len(accs):.1f}% ({100 * min(accs):.0f}-{100 * max(accs):.0f})"
            if accs else "-")

  def gap(runs, split):
    pairs = [(r[f"greedy/metacot/{split}"]["accuracy"], r[f"greedy/cot/{split}"]["accuracy"])
             for r in runs if f"greedy/metacot/{split}" in r and f"greedy/cot/{split}" in r]
    if len(pairs) < 2:
      return "-" if not pairs else f"{100 * (pairs[0][0] - pairs[0][1]):+.1f} points (one seed)"
    return report.paired_gap(*zip(*pairs), over="seed")

  rows = []
  for config, runs in groups.items():
    seeds = sum("greedy/cot/test" in r and "greedy/metacot/test" in r for r in runs)
    rows.append(f"| {config} | {seeds} | {spread(accuracies(runs, 'greedy/cot/test'))} | "
                f"{spread(accuracies(runs, 'greedy/metacot/test'))} | {gap(runs, 'test')} | "
                f"{gap(runs, 'hard')} |")
  return rows


def run_trial(cmd: list[str], trial_dir: Path, env: dict, base: Path | None) -> dict:
  """Runs one trial to its end (from a copy of `base` when it has not started) -> status."""
  if base is not None and not (trial_dir / "results.json").exists():
    # not the base's own sweep records (the copy must still run); results.json last, so
    # that a copy cut off part-way is made again on the next run
    shutil.copytree(base, trial_dir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("trial.json", "log.txt", "results.json"))
    write_atomically(trial_dir / "results.json", (base / "results.json").read_bytes())
  trial_dir.mkdir(parents=True, exist_ok=True)
  with open(trial_dir / "log.txt", "a") as log:
    done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
  status = {"status": "done" if done.returncode == 0 else "failed",
            "returncode": done.returncode}
  if done.returncode:
    status["error"] = (trial_dir / "log.txt").read_text(errors="replace")[-2000:]
  return status


def record(trial_dir: Path, future: concurrent.futures.Future, about: dict) -> dict:
  """A finished trial's status, printed if it failed and saved as its `trial.json`."""
  try:
    status = about | future.result()
  except Exception as e:  # pylint: disable=broad-except  # e.g. copying the base
    status = about | {"status": "failed", "returncode": None, "error": f"{type(e).__name__}: {e}"}
  if status["status"] == "failed":
    where = (f"exit {status['returncode']}; see {trial_dir / 'log.txt'}"
             if status["returncode"] is not None else status["error"])
    print(f"[failed] {trial_dir.name}: {where}", flush=True)
  trial_dir.mkdir(parents=True, exist_ok=True)
  write_atomically(trial_dir / "trial.json", json.dumps(status, indent=1))
  return status


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--preset", default="quick", choices=configs.PRESETS)
  parser.add_argument("--grid", action="append", default=[], help="FIELD=V1,V2 (repeatable)")
  parser.add_argument("--set", action="append", default=[], dest="fixed",
                      help="FIELD=VALUE for every trial (repeatable)")
  parser.add_argument("--parallel", type=int, default=1,
                      help="trials run side by side (e.g. several small models on one GPU)")
  parser.add_argument("--base", default=None,
                      help="a finished run directory each new trial starts from (a copy)")
  parser.add_argument("--module", default="experiments.game24_mcts")
  args = parser.parse_args(argv)
  if args.parallel < 1:
    raise SystemExit(f"--parallel {args.parallel}: need at least 1 trial at a time")
  base = Path(args.base) if args.base else None
  if base is not None and not (base / "results.json").is_file():
    raise SystemExit(f"--base {base}: not a run directory (no results.json); give the "
                     "--workdir of a finished or partly finished run")

  root = Path(args.workdir)
  root.mkdir(parents=True, exist_ok=True)
  try:
    held = lock_folder(root)  # for the whole sweep: a second one here stops at once
  except RuntimeError as e:
    raise SystemExit(str(e)) from None
  grid = parse_grid(args.grid)
  keys = [k for k, _ in grid]
  fixed = parse_overrides(args.fixed, "--set", many=False)
  given = [k for k, _ in fixed] + keys
  repeated = sorted({k for k in given if given.count(k) > 1})
  if repeated:  # the job refuses a field given twice
    raise SystemExit(f"{', '.join(repeated)}: given more than once (--set, --grid); give each "
                     "field once, a --grid field with all its values, e.g. --grid seed=0,1,2")
  fixed = [f"--config.{k}={v[0]}" for k, v in fixed]
  trials = [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]
  names = [trial_name(o) for o in trials]
  if len(set(names)) < len(names):
    raise SystemExit("two grid points share a trial folder name ("
                     + ", ".join(sorted({n for n in names if names.count(n) > 1}))
                     + "); give their values distinct digits or letters")
  env = dict(os.environ)
  if args.parallel > 1:  # else each process takes most of the GPU's memory at its start
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  statuses, pending = {}, {}
  ran_with = {"set": fixed, "base": args.base, "preset": args.preset, "module": args.module}
  with concurrent.futures.ThreadPoolExecutor(max_workers=args.parallel) as pool:
    for name, overrides in zip(names, trials):
      trial_dir = root / name
      status_path = trial_dir / "trial.json"
      done = json.loads(status_path.read_text()) if status_path.exists() else {}
      if done.get("status") == "done":
        statuses[name] = done
        # trials recorded before a field was saved do not have it: not a difference. A folder
        # names a field by its last part (`sft.steps` and `metacot_sft.steps` share one) and
        # drops the spaces of its values.
        spaceless = lambda o: {k: "".join(v.split()) for k, v in o.items()}
        other = {k: done[k] for k, v in ran_with.items() if k in done and done[k] != v}
        if spaceless(done.get("overrides", overrides)) != spaceless(overrides):
          other["grid"] = done["overrides"]
        if other:
          shown = lambda v: " ".join(f"{a}={b}" for a, b in v.items()) if isinstance(v, dict) else v
          print(f"[skip] {name}: done, with other " + ", ".join(
              f"--{k} ({shown(v)})" for k, v in other.items())
              + f"; delete {trial_dir} to run it again")
        else:
          print(f"[skip] {name}: done")
        continue
      cmd = [sys.executable, "-m", args.module, f"--workdir={trial_dir}",
             f"--preset={args.preset}"] + fixed
      cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
      print(f"[run] {name}: {' '.join(cmd[2:])}", flush=True)
      pending[pool.submit(run_trial, cmd, trial_dir, env, base)] = (name, overrides)
    try:
      for future in concurrent.futures.as_completed(pending):
        name, overrides = pending[future]
        statuses[name] = record(root / name, future, {"overrides": overrides, **ran_with})
    except KeyboardInterrupt:  # stop at once: no queued trial starts (running ones got it too)
      pool.shutdown(wait=True, cancel_futures=True)
      raise

  columns = SUMMARY_KEYS + (RL_COLUMN,)
  lines = ["| trial | status | " + " | ".join(columns) + " |",
           "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
  for name in names:
    results_path = root / name / "results.json"
    row = summary_row(json.loads(results_path.read_text())) if results_path.exists() else {}
    cells = [next((v for k, v in row.items() if k.startswith(key)), "-") for key in columns]
    lines.append(f"| {name} | {statuses[name]['status']} | " + " | ".join(cells) + " |")
  if "seed" in keys:  # the same configs over several seeds: how far training alone spreads
    lines += ["", "Over seeds (greedy, one generation per puzzle; Meta-CoT - CoT paired by seed):",
              "", "| config | seeds | CoT test | Meta-CoT test | Meta-CoT - CoT, test | "
              "Meta-CoT - CoT, hard |", "| --- | --- | --- | --- | --- | --- |"]
    lines += seed_rows([(o, json.loads((root / n / "results.json").read_text()))
                        for n, o in zip(names, trials) if (root / n / "results.json").exists()])
  write_atomically(root / "summary.md", "\n".join(lines) + "\n")
  print("\n".join(lines))
  held.close()
  return 0 if all(s["status"] == "done" for s in statuses.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
