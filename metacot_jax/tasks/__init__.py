"""Verifiable reasoning tasks: Countdown and its special case, Game of 24."""

from metacot_jax.tasks import countdown, expression, game24
from metacot_jax.tasks.base import ReasoningTask, StepCheck, Verdict
from metacot_jax.tasks.countdown import Countdown, Solution

__all__ = [
    "Countdown", "ReasoningTask", "Solution", "StepCheck", "Verdict",
    "countdown", "expression", "game24",
]
