"""morgan.shared."""
