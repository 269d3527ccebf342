"""The MOPO dynamics ensemble: config, model, losses, batches, the compiled fit, and its files.

Layout of the outputs (D = obs_dim + 1): [Δobs = next_obs − obs, reward]; `predict` returns
next_obs (= obs + Δ mean) and reward. Import the pieces from their modules, e.g.
`from mopo_jax.dynamics.fit import fit`, `from mopo_jax.dynamics.model import EnsembleModel`.
"""
