"""When a run evaluates its policies, and how many epochs each compiled chunk runs."""

from __future__ import annotations

from mopo_jax.mopo.config import TrainConfig


def evaluates_at(config: TrainConfig, epoch: int) -> bool:
    """Whether the policies are evaluated after `epoch` (1-based): every eval_every epochs and
    after the last epoch; never during training when eval_every is 0."""
    return config.eval_every > 0 and (epoch % config.eval_every == 0 or epoch == config.epochs)


# Epochs per compiled call when no evaluation during training sets the chunks (eval_every=0).
EPOCHS_PER_CHUNK_WITHOUT_EVAL = 10


def chunk_plan(config: TrainConfig, done: int) -> int:
    """Epochs of the next compiled chunk after `done` epochs: up to the next evaluation (or
    EPOCHS_PER_CHUNK_WITHOUT_EVAL epochs when eval_every is 0), never past config.epochs."""
    if config.eval_every > 0:
        return min(config.eval_every - done % config.eval_every, config.epochs - done)
    return min(EPOCHS_PER_CHUNK_WITHOUT_EVAL, config.epochs - done)


def chunk_sizes(config: TrainConfig, done: int = 0) -> list[int]:
    """Epochs of each compiled chunk a run makes from `done` epochs to config.epochs (`chunk_plan`
    applied until the run ends), in order: the driver's schedule, for estimates and benchmarks."""
    sizes = []
    while done < config.epochs:
        sizes.append(chunk_plan(config, done))
        done += sizes[-1]
    return sizes
