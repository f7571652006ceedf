"""morgan.core."""
