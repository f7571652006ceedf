"""morgan.stt."""
