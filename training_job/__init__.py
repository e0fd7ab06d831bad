"""Owns the model: the recursive U-Net, training, evaluation, checkpoints and publishing versions."""
