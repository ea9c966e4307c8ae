"""Training: options, the outer loop, step rules (HF, SGD, Adam), run state, statistics, checkpoints, datasets."""
