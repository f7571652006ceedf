"""morgan.tts."""
