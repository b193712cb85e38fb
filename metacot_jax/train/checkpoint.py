"""Orbax checkpoints of a train state together with the config that made it."""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpoints:
  """A `CheckpointManager` over `directory`: save every few steps, restore the latest."""

  def __init__(self, directory: str | os.PathLike, max_to_keep: int = 2):
    self.directory = os.path.abspath(os.fspath(directory))
    self.manager = ocp.CheckpointManager(
        self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

  def save(self, step: int, state: Any, config: dict | None = None, *, wait: bool = True):
    args = {"state": ocp.args.StandardSave(state)}
    if config is not None:
      args["config"] = ocp.args.JsonSave(config)
    self.manager.save(step, args=ocp.args.Composite(**args), force=True)
    if wait:
      self.manager.wait_until_finished()

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def restore(self, template: Any, step: int | None = None) -> tuple[int, Any] | None:
    """(step, state) shaped like `template`, or None when nothing was saved."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    try:
      restored = self.manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template)))
    except ValueError as e:  # another tree or shapes: the model changed since it was saved
      raise ValueError(
          f"the checkpoint {self.directory} (step {step}) does not fit this model: it was saved "
          "by a model of another shape or position encoding (`model.position`; runs from before "
          "RoPE used 'learned'). Resume with the config it was trained with, or use a new "
          f"--workdir. Orbax said: {(str(e).splitlines() or [''])[0]}") from e
    return step, restored["state"]

  def restore_config(self, step: int | None = None) -> dict | None:
    """The config saved with a checkpoint; None when nothing, or no config, was saved."""
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    try:
      return self.manager.restore(
          step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))["config"]
    except KeyError:  # saved without a config
      return None

  def close(self):
    self.manager.close()
