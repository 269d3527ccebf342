"""Behaviour policies trained online with the project's SAC: config, the training loop, and the
run's artifacts (history, snapshots, exported policy files)."""
