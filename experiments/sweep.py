"""Runs the main job over a grid of config overrides, one run directory per trial.

    python -m experiments.sweep --workdir runs/sweep --preset quick \
        --grid search.num_candidates=2,4 --grid sft.steps=50,100

Finished trials are skipped when the sweep runs again (a killed trial resumes from
its checkpoints); a failed trial is recorded with its error and the others go on.
Ends with a summary table across trials (also written to `summary.md`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

SUMMARY_KEYS = ("greedy/cot/test", "greedy/metacot/test", "mcts/verifier/tree/",
                "mcts/learned/tree/")


def parse_grid(items: list[str]) -> list[tuple[str, list[str]]]:
  grid = []
  for item in items:
    key, eq, values = item.partition("=")
    if not eq or not key or not values:
      raise SystemExit(f"--grid {item!r}: expected FIELD=V1,V2,... e.g. search.num_candidates=2,4")
    grid.append((key, values.split(",")))
  return grid


def trial_name(overrides: dict[str, str]) -> str:
  return "_".join(f"{k.split('.')[-1]}={v}" for k, v in overrides.items()) or "base"


def summary_row(results: dict) -> dict[str, str]:
  row = {}
  for key in SUMMARY_KEYS:
    matches = sorted((k for k in results if k.startswith(key)),
                     key=lambda k: int(k.rsplit("/", 1)[-1]) if k.rsplit("/", 1)[-1].isdigit() else 0)
    if matches:
      r = results[matches[-1]]
      row[matches[-1]] = f"{r['accuracy']:.1%}"
  return row


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--preset", default="quick")
  parser.add_argument("--grid", action="append", default=[], help="FIELD=V1,V2 (repeatable)")
  parser.add_argument("--module", default="experiments.game24_mcts")
  args = parser.parse_args(argv)

  root = Path(args.workdir)
  root.mkdir(parents=True, exist_ok=True)
  grid = parse_grid(args.grid)
  keys = [k for k, _ in grid]
  trials = [dict(zip(keys, values)) for values in itertools.product(*(v for _, v in grid))]
  statuses = {}
  for overrides in trials:
    name = trial_name(overrides)
    trial_dir = root / name
    status_path = trial_dir / "trial.json"
    if status_path.exists() and json.loads(status_path.read_text())["status"] == "done":
      print(f"[skip] {name}: done")
      statuses[name] = json.loads(status_path.read_text())
      continue
    trial_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", args.module, f"--workdir={trial_dir}", f"--preset={args.preset}"]
    cmd += [f"--config.{k}={v}" for k, v in overrides.items()]
    print(f"[run] {name}: {' '.join(cmd[2:])}", flush=True)
    with open(trial_dir / "log.txt", "a") as log:
      done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False)
    status = {"overrides": overrides, "status": "done" if done.returncode == 0 else "failed",
              "returncode": done.returncode}
    if done.returncode:
      status["error"] = (trial_dir / "log.txt").read_text()[-2000:]
      print(f"[failed] {name} (exit {done.returncode}); see {trial_dir / 'log.txt'}")
    status_path.write_text(json.dumps(status, indent=1))
    statuses[name] = status

  lines = ["| trial | status | " + " | ".join(SUMMARY_KEYS) + " |",
           "| --- | --- | " + " | ".join("---" for _ in SUMMARY_KEYS) + " |"]
  for name, status in statuses.items():
    results_path = root / name / "results.json"
    row = summary_row(json.loads(results_path.read_text())) if results_path.exists() else {}
    cells = [next((v for k, v in row.items() if k.startswith(key)), "-") for key in SUMMARY_KEYS]
    lines.append(f"| {name} | {status['status']} | " + " | ".join(cells) + " |")
  (root / "summary.md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))
  return 0 if all(s["status"] == "done" for s in statuses.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
