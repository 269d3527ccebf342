"""MOPO itself: run config and presets, penalised model rollouts, the pure training loop, and the
run driver that writes a run directory."""
