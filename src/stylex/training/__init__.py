"""Training: the trainer (phases as data), EMA and checkpoints."""
