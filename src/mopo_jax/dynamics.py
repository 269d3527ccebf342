"""The MOPO dynamics ensemble's public API: config, one-call compiled fit, predict/sample, save/load, CLI.

Target/output layout (D = obs_dim + 1): index [0, obs_dim) = Δobs = next_obs − obs, index obs_dim =
reward. The network predicts that layout; `predict` returns next_obs (= obs + Δ mean) and reward.
`EnsembleModel`, `predict`, `sample_step` and the network math (stacked [E, ...] weights, losses,
snapshot logic) live in `mopo_jax.ensemble` and are re-exported here.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import time
from typing import NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from mopo_jax import checkpoint, ensemble
from mopo_jax.ensemble import EnsembleModel, predict, sample_step
from mopo_jax.transitions import Transitions


@dataclasses.dataclass(frozen=True)
class DynamicsConfig:
    """Static hyper-parameters of the ensemble and its fit; defaults are the original MOPO values."""

    num_members: int = 7
    num_elites: int = 5
    hidden_sizes: tuple[int, ...] = (200, 200, 200, 200)
    activation: str = "swish"
    hidden_weight_decays: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5)  # one per hidden layer
    head_weight_decay: float = 1e-4  # mean and log-variance heads
    max_logvar_init: float = 0.5
    min_logvar_init: float = -10.0
    logvar_bound_coef: float = 0.01
    learning_rate: float = 1e-3
    batch_size: int = 256
    holdout_fraction: float = 0.2
    max_holdout: int = 1000
    improvement_threshold: float = 0.01  # relative holdout-MSE gain that counts as improvement
    patience: int = 5  # stop after this many consecutive epochs in which no member improved
    max_epochs: int | None = None  # None: no cap other than safety_max_epochs
    safety_max_epochs: int = 1000  # hard cap; also the length of the report's history arrays

    def __post_init__(self):
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        object.__setattr__(self, "hidden_weight_decays", tuple(float(w) for w in self.hidden_weight_decays))
        if len(self.hidden_weight_decays) != len(self.hidden_sizes):
            raise ValueError(
                f"hidden_weight_decays has {len(self.hidden_weight_decays)} entries but hidden_sizes "
                f"has {len(self.hidden_sizes)} layers; give one weight decay per hidden layer")
        if not 1 <= self.num_elites <= self.num_members:
            raise ValueError(f"need 1 <= num_elites ({self.num_elites}) <= num_members ({self.num_members})")
        if self.activation not in ensemble.ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} not in {sorted(ensemble.ACTIVATIONS)}")

    @property
    def epoch_cap(self) -> int:
        """Largest number of epochs fit may run (static)."""
        if self.max_epochs is None:
            return self.safety_max_epochs
        return min(self.max_epochs, self.safety_max_epochs)


class FitReport(flax.struct.PyTreeNode):
    """Summary of a fit. H = config.epoch_cap; history rows past `epochs` are NaN.

    epochs: int32, epochs run.  holdout_mse: [E] best (restored) holdout MSE per member.
    best_epoch: [E] int32 epoch (0-based) of each member's restored snapshot.
    elite_idx: [num_elites] int32.  elite_holdout_mse_per_dim: [D] per-output holdout MSE averaged over elites.
    train_loss_history: [H] mean minibatch training loss per epoch.
    holdout_mse_history: [H, E] holdout MSE per epoch and member.
    """

    epochs: jax.Array
    holdout_mse: jax.Array
    best_epoch: jax.Array
    elite_idx: jax.Array
    elite_holdout_mse_per_dim: jax.Array
    train_loss_history: jax.Array
    holdout_mse_history: jax.Array


class _FitData(NamedTuple):
    train_x: jax.Array  # [N_train, I] standardised
    train_y: jax.Array  # [N_train, D]
    holdout_x: jax.Array  # [H, I] standardised
    holdout_y: jax.Array  # [H, D]
    boot_idx: jax.Array  # [E, N_train]
    epoch_key: jax.Array


class _FitCarry(NamedTuple):
    epoch: jax.Array
    trainable: dict
    opt_state: optax.OptState
    best_net: dict
    best_mse: jax.Array
    best_epoch: jax.Array
    since_update: jax.Array
    train_loss_history: jax.Array
    holdout_mse_history: jax.Array


def make_targets(transitions: Transitions) -> tuple[jax.Array, jax.Array]:
    """Inputs obs‖act [N, I] and targets [Δobs, reward] [N, D] of a Transitions batch."""
    obs = jnp.asarray(transitions.observations, jnp.float32)
    inputs = jnp.concatenate([obs, jnp.asarray(transitions.actions, jnp.float32)], axis=-1)
    delta = jnp.asarray(transitions.next_observations, jnp.float32) - obs
    targets = jnp.concatenate([delta, jnp.asarray(transitions.rewards, jnp.float32)[:, None]], axis=-1)
    return inputs, targets


def num_holdout_rows(num_rows: int, config: DynamicsConfig) -> int:
    """Holdout size min(int(fraction·N), max_holdout) (static)."""
    return min(int(num_rows * config.holdout_fraction), config.max_holdout)


def _optimizer(config: DynamicsConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


def _setup(key: jax.Array, transitions: Transitions, config: DynamicsConfig):
    inputs, targets = make_targets(transitions)
    num_rows = inputs.shape[0]
    num_holdout = num_holdout_rows(num_rows, config)
    if num_holdout < 1 or num_rows - num_holdout < 1:
        raise ValueError(f"{num_rows} transitions give a holdout of {num_holdout} rows; need >= 1 "
                         "holdout and >= 1 training row (use more data or a larger holdout_fraction)")
    k_split, k_init, k_boot, k_epochs = jax.random.split(key, 4)
    train_idx, holdout_idx = ensemble.holdout_split(k_split, num_rows, num_holdout)
    train_x, train_y = inputs[train_idx], targets[train_idx]
    mean = jnp.mean(train_x, axis=0)
    std = jnp.std(train_x, axis=0)
    std = jnp.where(std < 1e-12, 1.0, std)
    data = _FitData(
        train_x=(train_x - mean) / std, train_y=train_y,
        holdout_x=(inputs[holdout_idx] - mean) / std, holdout_y=targets[holdout_idx],
        boot_idx=ensemble.bootstrap_indices(k_boot, config.num_members, num_rows - num_holdout),
        epoch_key=k_epochs)
    out_dim = targets.shape[-1]
    net = ensemble.init_ensemble_params(
        k_init, config.num_members, inputs.shape[-1], out_dim, config.hidden_sizes)
    trainable = {
        "net": net,
        "max_logvar": jnp.full((out_dim,), config.max_logvar_init, jnp.float32),
        "min_logvar": jnp.full((out_dim,), config.min_logvar_init, jnp.float32),
    }
    cap, num_members = config.epoch_cap, config.num_members
    carry = _FitCarry(
        epoch=jnp.int32(0), trainable=trainable, opt_state=_optimizer(config).init(trainable),
        best_net=net, best_mse=jnp.full((num_members,), jnp.inf, jnp.float32),
        best_epoch=jnp.full((num_members,), -1, jnp.int32), since_update=jnp.int32(0),
        train_loss_history=jnp.full((cap,), jnp.nan, jnp.float32),
        holdout_mse_history=jnp.full((cap, num_members), jnp.nan, jnp.float32))
    return data, carry, (mean, std)


def _loss_fn(config: DynamicsConfig):
    return functools.partial(
        ensemble.gaussian_nll_loss, activation=config.activation,
        hidden_weight_decays=config.hidden_weight_decays, head_weight_decay=config.head_weight_decay,
        logvar_bound_coef=config.logvar_bound_coef)


def _train_epoch(data: _FitData, carry: _FitCarry, config: DynamicsConfig) -> _FitCarry:
    """One epoch: every member passes once over its reshuffled bootstrap sample, then holdout/snapshots."""
    optimizer, grad_fn = _optimizer(config), jax.value_and_grad(_loss_fn(config))
    key = jax.random.fold_in(data.epoch_key, carry.epoch)
    idx, weights = ensemble.epoch_minibatches(key, data.boot_idx, config.batch_size)

    def step(state, batch):
        trainable, opt_state = state
        b_idx, b_weights = batch
        loss, grads = grad_fn(trainable, data.train_x[b_idx], data.train_y[b_idx], b_weights)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        return (optax.apply_updates(trainable, updates), opt_state), loss

    (trainable, opt_state), losses = jax.lax.scan(
        step, (carry.trainable, carry.opt_state), (idx, weights))
    mse = jnp.mean(ensemble.per_dim_mse(trainable["net"], data.holdout_x, data.holdout_y,
                                        config.activation), axis=-1)
    best_net, best_mse, since, improved = ensemble.update_snapshots(
        trainable["net"], carry.best_net, carry.best_mse, mse, carry.since_update,
        config.improvement_threshold)
    return _FitCarry(
        epoch=carry.epoch + 1, trainable=trainable, opt_state=opt_state, best_net=best_net,
        best_mse=best_mse, best_epoch=jnp.where(improved, carry.epoch, carry.best_epoch),
        since_update=since,
        train_loss_history=carry.train_loss_history.at[carry.epoch].set(jnp.mean(losses)),
        holdout_mse_history=carry.holdout_mse_history.at[carry.epoch].set(mse))


def _keep_training(carry: _FitCarry, config: DynamicsConfig) -> jax.Array:
    return (carry.since_update < config.patience) & (carry.epoch < config.epoch_cap)


@functools.partial(jax.jit, static_argnames="config")
def _run_epochs(data: _FitData, carry: _FitCarry, stop_at: jax.Array, config: DynamicsConfig):
    """Train epochs until early stopping, the epoch cap, or epoch == stop_at (for progress chunks)."""
    return jax.lax.while_loop(
        lambda c: _keep_training(c, config) & (c.epoch < stop_at),
        lambda c: _train_epoch(data, c, config), carry)


def _finish(data: _FitData, carry: _FitCarry, stats, config: DynamicsConfig):
    elite_idx = jnp.argsort(carry.best_mse)[: config.num_elites].astype(jnp.int32)
    per_dim = ensemble.per_dim_mse(carry.best_net, data.holdout_x, data.holdout_y, config.activation)
    model = EnsembleModel(
        params=carry.best_net, max_logvar=carry.trainable["max_logvar"],
        min_logvar=carry.trainable["min_logvar"], input_mean=stats[0], input_std=stats[1],
        elite_idx=elite_idx, activation=config.activation)
    report = FitReport(
        epochs=carry.epoch, holdout_mse=carry.best_mse, best_epoch=carry.best_epoch,
        elite_idx=elite_idx, elite_holdout_mse_per_dim=jnp.mean(per_dim[elite_idx], axis=0),
        train_loss_history=carry.train_loss_history, holdout_mse_history=carry.holdout_mse_history)
    return model, report


@functools.partial(jax.jit, static_argnames="config")
def _fit_compiled(key: jax.Array, transitions: Transitions, config: DynamicsConfig):
    data, carry, stats = _setup(key, transitions, config)
    carry = _run_epochs(data, carry, jnp.int32(config.epoch_cap), config)
    return _finish(data, carry, stats, config)


_setup_jit = jax.jit(_setup, static_argnames="config")
_finish_jit = jax.jit(_finish, static_argnames="config")


def fit(key: jax.Array, transitions: Transitions, config: DynamicsConfig = DynamicsConfig(),
        *, progress: bool = False) -> tuple[EnsembleModel, FitReport]:
    """Fit the ensemble with bootstrap minibatches, holdout early stopping and snapshot restore.

    Pure and, with progress=False, one compiled call (also traceable under an outer jax.jit with
    `config` static). progress=True drives the same compiled epoch loop one epoch per call from the
    host and prints each epoch; it gives the same result.

    Args:
      key: PRNG key (holdout split, init, bootstrap, per-epoch shuffles).
      transitions: N transitions (obs_dim o, act_dim a).
      config: static hyper-parameters.
    Returns:
      (EnsembleModel with E = config.num_members, FitReport).
    """
    if not progress:
        return _fit_compiled(key, transitions, config)
    data, carry, stats = _setup_jit(key, transitions, config)
    start = time.perf_counter()
    while bool(_keep_training(carry, config)):
        carry = _run_epochs(data, carry, carry.epoch + 1, config)
        epoch = int(carry.epoch) - 1
        mse = np.asarray(carry.holdout_mse_history[epoch])
        print(f"epoch {epoch + 1:4d}  train loss {float(carry.train_loss_history[epoch]):9.4f}  "
              f"holdout mse {np.array2string(mse, precision=4)}  "
              f"no-improve {int(carry.since_update)}  {time.perf_counter() - start:7.1f}s", flush=True)
    return _finish_jit(data, carry, stats, config)


@functools.partial(jax.jit, static_argnames="config")
def fit_many(keys: jax.Array, transitions: Transitions,
             config: DynamicsConfig = DynamicsConfig()) -> tuple[EnsembleModel, FitReport]:
    """Fit S independent ensembles in one compiled call: `fit` vmapped over keys [S].

    Each one equals `fit(keys[i], transitions, config)` (its own holdout split, init, bootstrap and
    early stopping; the loop runs until the last one stops, the others are frozen meanwhile).
    Returns (EnsembleModel, FitReport) with a leading axis S on every array. Memory and compute
    grow linearly with S; on an accelerator the members of all S fits run side by side.
    """
    return jax.vmap(lambda key: _fit_compiled(key, transitions, config))(keys)


_CHECKPOINT_KIND = "mopo_jax.dynamics.EnsembleModel"
_ARCH_FIELDS = ("num_members", "num_elites", "hidden_sizes", "activation")


def _model_template(config: DynamicsConfig, obs_dim: int, act_dim: int) -> EnsembleModel:
    def build():
        net = ensemble.init_ensemble_params(jax.random.key(0), config.num_members,
                                            obs_dim + act_dim, obs_dim + 1, config.hidden_sizes)
        vec = lambda n: jnp.zeros((n,), jnp.float32)  # noqa: E731
        return EnsembleModel(net, vec(obs_dim + 1), vec(obs_dim + 1), vec(obs_dim + act_dim),
                             vec(obs_dim + act_dim), jnp.zeros((config.num_elites,), jnp.int32),
                             activation=config.activation)
    return jax.eval_shape(build)


def save(path: str | os.PathLike, model: EnsembleModel, config: DynamicsConfig) -> None:
    """Atomically write `<path>.msgpack` (arrays) and `<path>.json` (config, obs/act dims)."""
    if model.activation != config.activation or model.elite_idx.shape[0] != config.num_elites:
        raise ValueError("model does not match config (activation or num_elites differ)")
    meta = {"kind": _CHECKPOINT_KIND, "config": dataclasses.asdict(config),
            "obs_dim": model.obs_dim, "act_dim": model.act_dim}
    checkpoint.save_pytree(path, model, meta)


def load(path: str | os.PathLike, *, obs_dim: int | None = None, act_dim: int | None = None,
         config: DynamicsConfig | None = None) -> tuple[EnsembleModel, DynamicsConfig]:
    """Load a model saved by `save`; optional expectations raise ValueError naming any mismatch.

    Args: obs_dim / act_dim: expected sizes; config: expected architecture (num_members, num_elites,
    hidden_sizes, activation are compared). Returns (EnsembleModel, DynamicsConfig).
    """
    meta = checkpoint.load_metadata(path)
    if meta.get("kind") != _CHECKPOINT_KIND:
        raise ValueError(f"{checkpoint.json_path(path)} holds {meta.get('kind')!r}, not a dynamics model")
    saved = DynamicsConfig(**meta["config"])
    problems = [f"{name}: file has {meta[name]}, expected {want}"
                for name, want in (("obs_dim", obs_dim), ("act_dim", act_dim))
                if want is not None and meta[name] != want]
    if config is not None:
        problems += [f"{f}: file has {getattr(saved, f)!r}, expected {getattr(config, f)!r}"
                     for f in _ARCH_FIELDS if getattr(saved, f) != getattr(config, f)]
    if problems:
        raise ValueError(f"dynamics checkpoint {path} does not match: " + "; ".join(problems))
    template = _model_template(saved, meta["obs_dim"], meta["act_dim"])
    model, _ = checkpoint.load_pytree(path, template)
    return jax.tree.map(jnp.asarray, model), saved


def main(argv: list[str] | None = None) -> None:
    """CLI: fit the ensemble on a dataset, save it, print the report."""
    parser = argparse.ArgumentParser(
        prog="python -m mopo_jax.dynamics",
        description="Fit the MOPO dynamics ensemble on an offline dataset and save it.")
    parser.add_argument("--dataset", required=True,
                        help="dataset name understood by mopo_jax.data.load_dataset, e.g. hopper-random")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="use only the first N transitions of the dataset (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="PRNG seed of the fit (default: 0)")
    parser.add_argument("--out", default=None,
                        help="checkpoint prefix; writes PREFIX.msgpack and PREFIX.json "
                             "(default: checkpoints/dynamics/<dataset>-seed<seed>)")
    parser.add_argument("--max-epochs", type=int, default=None,
                        help="cap on training epochs (default: none, early stopping decides)")
    parser.add_argument("--progress", action="store_true",
                        help="print one line per epoch (same result, epoch loop driven from the host)")
    args = parser.parse_args(argv)

    from mopo_jax.data import load_dataset  # imported here: heavy, and only the CLI needs it

    dataset = load_dataset(args.dataset, num_steps=args.num_steps)
    transitions = jax.tree.map(jnp.asarray, dataset.transitions())
    config = DynamicsConfig(max_epochs=args.max_epochs)
    out = args.out or os.path.join("checkpoints", "dynamics", f"{args.dataset}-seed{args.seed}")
    print(f"fitting {config.num_members} members on {transitions.observations.shape[0]} transitions "
          f"of {args.dataset} (obs {transitions.observations.shape[1]}, act {transitions.actions.shape[1]})",
          flush=True)
    start = time.perf_counter()
    model, report = fit(jax.random.key(args.seed), transitions, config, progress=args.progress)
    jax.block_until_ready(model)
    wall = time.perf_counter() - start
    save(out, model, config)
    np.set_printoptions(precision=3, suppress=False, linewidth=120)
    print(f"epochs run:                {int(report.epochs)}")
    print(f"holdout MSE per member:    {np.asarray(report.holdout_mse)}")
    print(f"best epoch per member:     {np.asarray(report.best_epoch)}")
    print(f"elites (best first):       {np.asarray(report.elite_idx)}")
    print(f"elite holdout MSE per dim: {np.asarray(report.elite_holdout_mse_per_dim)}  (Δobs..., reward)")
    print(f"wall time:                 {wall:.1f} s (including compilation)")
    print(f"saved:                     {checkpoint.msgpack_path(out)}, {checkpoint.json_path(out)}")


if __name__ == "__main__":
    main()
