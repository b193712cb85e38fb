"""A stand-in for the main job in sweep tests: same flags, instant, fails on request."""

import argparse
import json
import sys
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--workdir", required=True)
parser.add_argument("--preset", default="quick")
args, rest = parser.parse_known_args()
overrides = dict(a[len("--config."):].split("=", 1) for a in rest if a.startswith("--config."))
if overrides.get("fail") == "1":
  print("boom: asked to fail", file=sys.stderr)
  sys.exit(3)
workdir = Path(args.workdir)
runs = workdir / "runs.txt"
runs.write_text(runs.read_text() + "x" if runs.exists() else "x")
acc = float(overrides.get("acc", "0.5"))
(workdir / "results.json").write_text(json.dumps(
    {"greedy/cot/test": {"accuracy": acc}, "mcts/verifier/tree/4": {"accuracy": acc}}))
