"""Model directory: where model services find their models, and how models get there."""
