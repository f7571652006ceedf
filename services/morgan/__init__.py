"""Morgan: a self-hosted AI voice assistant that runs across your own machines."""

__version__ = "0.1.0"
