"""morgan-vad: voice activity detection (Silero VAD on ONNX Runtime, CPU)."""
