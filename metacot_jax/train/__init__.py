"""Training: train state, losses, jitted steps, checkpoints and the resumable loop."""

from metacot_jax.train.checkpoint import Checkpoints
from metacot_jax.train.loop import batch_indices, train
from metacot_jax.train.losses import masked_token_loss, value_loss
from metacot_jax.train.state import OptimizerConfig, TrainState, create_train_state, make_optimizer
from metacot_jax.train.steps import sft_step, value_step

__all__ = [
    "Checkpoints", "OptimizerConfig", "TrainState", "batch_indices", "create_train_state",
    "make_optimizer", "masked_token_loss", "sft_step", "train", "value_loss", "value_step",
]
