"""Datasets (TFDS builders read without TensorFlow) and the tokenizer."""

from metacot_jax.data import tokenizer
from metacot_jax.data.countdown_tfds import Countdown, CountdownConfig, countdown_config
from metacot_jax.data.game24_tfds import Game24
from metacot_jax.data.loading import (countdown_builder, default_manual_dir, game24_builder,
                                      game24_ranking, load_countdown, load_game24)

__all__ = [
    "Countdown",
    "CountdownConfig",
    "Game24",
    "countdown_builder",
    "countdown_config",
    "default_manual_dir",
    "game24_builder",
    "game24_ranking",
    "load_countdown",
    "load_game24",
    "tokenizer",
]
