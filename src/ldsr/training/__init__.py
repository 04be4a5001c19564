"""The one training loop for every model, its config, EMA, RNG state, run log and checkpoints."""
