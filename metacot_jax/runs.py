"""A run directory: results that survive restarts, a metrics log, checkpoint folders.

Each phase of a pipeline stores its result under a key of `results.json` (written
atomically); a restarted run skips phases whose key is present and resumes
training phases from their orbax checkpoints. In a multi-host run every process
keeps the results in memory and process 0 writes the files (on a shared disk).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable

from metacot_jax.scale import is_primary
from metacot_jax.train.checkpoint import Checkpoints


class RunDir:
  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self.path.mkdir(parents=True, exist_ok=True)
    self.results_path = self.path / "results.json"
    self.results: dict[str, Any] = (json.loads(self.results_path.read_text())
                                    if self.results_path.exists() else {})

  def log(self, phase: str, step: int, metrics: dict):
    """Appends one row to metrics.jsonl."""
    if not is_primary():
      return
    row = {"phase": phase, "step": int(step), "time": time.time(),
           **{k: float(v) for k, v in metrics.items()}}
    with open(self.path / "metrics.jsonl", "a") as f:
      f.write(json.dumps(row) + "\n")

  def forget_log(self, phase: str, after_step: int):
    """Drops `phase`'s rows past `after_step` from metrics.jsonl: a phase resumed from its
    checkpoint at that step logs the steps after it again."""
    path = self.path / "metrics.jsonl"
    if not is_primary() or not path.exists():
      return
    rows = path.read_text().splitlines()
    kept = [r for r in rows if not (r and (row := json.loads(r))["phase"] == phase
                                    and row["step"] > after_step)]
    if len(kept) < len(rows):
      tmp = path.with_suffix(".jsonl.tmp")
      tmp.write_text("".join(r + "\n" for r in kept))
      tmp.replace(path)

  def save(self, key: str, value: Any):
    self.results[key] = value
    if not is_primary():
      return
    tmp = self.results_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(self.results, indent=1))
    tmp.replace(self.results_path)

  def phase(self, key: str, fn: Callable[[], Any]) -> Any:
    """`fn()` once: its result is stored under `key` and reused on restart.

    Its wall time goes to `results['seconds'][key]` (for sizing presets).
    """
    if key not in self.results:
      start = time.time()
      value = fn()
      self.results.setdefault("seconds", {})[key] = round(time.time() - start, 2)
      self.save(key, value)
    return self.results[key]

  def config_changes(self, config: dict) -> list[str]:
    """The fields where `config` differs from the one saved under 'config' (`a.b: old -> new`),
    so that a resumed run can say that its finished phases used other settings."""
    if "config" not in self.results:
      return []
    return _changes(self.results["config"], json.loads(json.dumps(config)))  # tuples -> lists

  def checkpoints(self, name: str) -> Checkpoints:
    return Checkpoints(self.path / "checkpoints" / name)


def _changes(old: Any, new: Any, prefix: str = "") -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    return [change for key in sorted(set(old) | set(new), key=str)
            for change in _changes(old.get(key, "(unset)"), new.get(key, "(unset)"),
                                   f"{prefix}{key}.")]
  return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]
