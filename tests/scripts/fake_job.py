"""A stand-in for the main job in sweep tests: same flags, instant, fails on request.

Overrides it understands: fail=1 exits 3; acc=X is the CoT greedy test accuracy it reports;
metacot=M adds a Meta-CoT one of M + seed / 100, and both models' hard-split accuracies at half
their test ones; gamma=G adds an RL result; barrier=N waits (up to 60 s) until N trials of the
sweep have started; sleep=S takes S seconds more.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--workdir", required=True)
parser.add_argument("--preset", default="quick")
args, rest = parser.parse_known_args()
pairs = [a[len("--config."):].split("=", 1) for a in rest if a.startswith("--config.")]
overrides = dict(pairs)
if len(overrides) < len(pairs):  # as the main job does
  print("a config field given more than once", file=sys.stderr)
  sys.exit(2)
if overrides.get("fail") == "1":
  print("boom: asked to fail", file=sys.stderr)
  sys.exit(3)
workdir = Path(args.workdir)
workdir.mkdir(parents=True, exist_ok=True)
if "barrier" in overrides:  # proves trials run side by side: each waits for the others
  (workdir.parent / f"started_{workdir.name}").write_text("")
  deadline = time.time() + 60
  while len(list(workdir.parent.glob("started_*"))) < int(overrides["barrier"]):
    if time.time() > deadline:
      print("barrier: the other trials never started", file=sys.stderr)
      sys.exit(4)
    time.sleep(0.05)
time.sleep(float(overrides.get("sleep", 0)))
runs = workdir / "runs.txt"
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
(workdir / "seen.json").write_text(json.dumps(
    {"overrides": overrides, "preallocate": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")}))
acc = float(overrides.get("acc", "0.5"))
results = {"greedy/cot/test": {"accuracy": acc}, "mcts/verifier/tree/4": {"accuracy": acc}}
if "metacot" in overrides:
  meta = float(overrides["metacot"]) + int(overrides.get("seed", 0)) / 100
  results |= {"greedy/metacot/test": {"accuracy": meta}, "greedy/cot/hard": {"accuracy": acc / 2},
              "greedy/metacot/hard": {"accuracy": meta / 2}}
if "gamma" in overrides:
  results[f"rl/{overrides['gamma']}"] = {"accuracy": acc, "mean_tokens": 80.0}
results_path = workdir / "results.json"  # a run started from a copy keeps what it had
old = json.loads(results_path.read_text()) if results_path.exists() else {}
results_path.write_text(json.dumps(old | results))
