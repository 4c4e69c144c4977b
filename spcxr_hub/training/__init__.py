"""Training: GMML pretraining, fine-tuning, the recipe and presets they share, checkpoints, task-model builders and
the paper-style reproduction table."""
