"""A run directory: results that survive restarts, a metrics log, checkpoint folders.

Each phase of a pipeline stores its result under a key of `results.json` (written
atomically); a restarted run skips phases whose key is present and resumes
training phases from their orbax checkpoints, on the same training arrays. In a
multi-host run every process keeps the results in memory and process 0 writes the
files (on a shared disk).
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from metacot_jax.scale import is_primary
from metacot_jax.train.checkpoint import Checkpoints

_log = logging.getLogger(__name__)
_BUILT_WITH = "__built_with__"


def write_atomically(path: str | os.PathLike, data: str | bytes):
  """Writes a file beside `path`, then renames it over `path`: a kill leaves the old file or
  the new one, never a part of one."""
  path = Path(path)
  tmp = path.with_name(path.name + ".tmp")
  with open(tmp, "wb") as f:
    f.write(data if isinstance(data, bytes) else data.encode())
    f.flush()
    os.fsync(f.fileno())  # on disk before the rename: a lost host leaves no empty file
  tmp.replace(path)


def write_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray]):
  """`np.savez(path, **arrays)`, written atomically."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_atomically(path, buffer.getvalue())


def lock_folder(path: str | os.PathLike):
  """An exclusive lock on `path/.lock`, held while the returned file stays open (the OS lets
  go when the process ends, killed or not): a second job started on the same folder stops
  at once, with a RuntimeError that says so, instead of writing the same files."""
  lock_file = open(Path(path) / ".lock", "w")  # pylint: disable=consider-using-with
  try:
    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    lock_file.close()
    raise RuntimeError(f"another job is running in {path}: wait for it to end (or stop it), "
                       "or give this one another --workdir") from None
  except OSError:  # a file system without locks: run unguarded
    pass
  return lock_file


def _parsed(line: str) -> dict | None:
  try:
    return json.loads(line)
  except json.JSONDecodeError:  # a row cut off by a crash (a full disk, a lost host)
    return None


class RunDir:
  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self.path.mkdir(parents=True, exist_ok=True)
    self.results_path = self.path / "results.json"
    self.results: dict[str, Any] = (json.loads(self.results_path.read_text())
                                    if self.results_path.exists() else {})

  def lock(self):
    """Holds the folder while this RunDir lives (`lock_folder`). Process 0 only."""
    if is_primary():
      self._lock_file = lock_folder(self.path)

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
    kept = [r for r in rows if (row := _parsed(r)) is not None
            and not (row["phase"] == phase and row["step"] > after_step)]
    if len(kept) < len(rows):
      write_atomically(path, "".join(r + "\n" for r in kept))

  def save(self, key: str, value: Any):
    self.results[key] = value
    if not is_primary():
      return
    write_atomically(self.results_path, json.dumps(self.results, indent=1))

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

  def kept_arrays(self, name: str, fn: Callable[[], dict[str, np.ndarray]], built_with: str
                  ) -> dict[str, np.ndarray]:
    """`fn()`, kept in `arrays/<name>.npz` until `forget_arrays(name)`: a training phase
    killed part-way resumes on the arrays it started with, not on a rebuild that may cost
    hours (a Meta-STaR round's search) or differ (sampling on another device or process).

    `built_with` names what built them (e.g. the config as JSON): arrays kept from another
    one, or a file that cannot be read, are built again. In a multi-host run every process
    calls `fn()` (it may hold collectives); process 0 writes the file."""
    path = self.path / "arrays" / f"{name}.npz"
    if path.exists():
      try:
        with np.load(path) as saved:
          arrays = dict(saved)
      except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # empty or cut off
        arrays, why = {}, f"cannot be read ({e})"
      else:
        why = "was built with another config"
      if str(arrays.pop(_BUILT_WITH, "")) == built_with:
        return arrays
      _log.warning("%s %s: building %s's data again", path, why, name)
    arrays = fn()
    if is_primary():
      path.parent.mkdir(exist_ok=True)
      write_arrays(path, {**arrays, _BUILT_WITH: np.array(built_with)})
    return arrays

  def forget_arrays(self, name: str):
    """Deletes what `kept_arrays(name, ...)` wrote, once the phase that trained on it is done."""
    if is_primary():
      (self.path / "arrays" / f"{name}.npz").unlink(missing_ok=True)

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
