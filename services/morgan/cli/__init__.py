"""morgan.cli."""
