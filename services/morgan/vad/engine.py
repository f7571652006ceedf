"""Silero VAD on ONNX Runtime: the model file the silero-vad package ships, run directly.

The package's own Python imports torch; only its ONNX model is used here, found without
importing the package. The model takes 512-sample windows of 16 kHz audio (32 ms) with
the 64 samples before each as context, and carries a recurrent state between windows:
one `SileroStream` per audio stream, one shared session.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16000
WINDOW = 512  # samples per model run: 32 ms at 16 kHz
CONTEXT = 64
MODEL_FILE = "silero_vad.onnx"


class VADModelMissing(RuntimeError):
    """The silero-vad package (and the model it ships) is not installed."""


def bundled_model_path() -> Path:
    """The ONNX model inside the installed silero-vad package (not imported: it needs torch)."""
    spec = importlib.util.find_spec("silero_vad")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / MODEL_FILE
        if path.is_file():
            return path
    raise VADModelMissing(
        f"Silero VAD's model ({MODEL_FILE}) is not installed: install morgan with the `vad` "
        "extra (the morgan-vad image has it)"
    )


class SileroModel:
    """The loaded model; `stream()` gives a detector state for one audio stream."""

    engine_name = "silero"
    device = "cpu"

    def __init__(self, path: Path, *, threads: int = 1) -> None:
        self.path = path
        self.threads = threads
        self._session: Any = None
        self._lock = threading.Lock()

    def load(self) -> SileroModel:
        import onnxruntime

        with self._lock:
            if self._session is None:
                options = onnxruntime.SessionOptions()
                options.inter_op_num_threads = 1
                options.intra_op_num_threads = self.threads
                self._session = onnxruntime.InferenceSession(
                    str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
                )
        return self

    def unload(self) -> None:
        with self._lock:
            self._session = None

    def stream(self) -> SileroStream:
        if self._session is None:
            raise RuntimeError("the VAD model is not loaded")
        return SileroStream(self._session)


class SileroStream:
    """Speech probabilities of consecutive 512-sample windows of one stream."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, CONTEXT), dtype=np.float32)
        self._rate = np.array(SAMPLE_RATE, dtype=np.int64)

    def probability(self, window: np.ndarray) -> float:
        """The speech probability of one window of WINDOW float32 samples in [-1, 1]."""
        if window.shape != (WINDOW,):
            raise ValueError(f"a window is {WINDOW} samples, not {window.shape}")
        x = np.concatenate([self._context, window.reshape(1, WINDOW)], axis=1)
        out, state = self._session.run(None, {"input": x, "state": self._state, "sr": self._rate})
        self._state = state
        self._context = x[:, -CONTEXT:]
        return float(out[0][0])
