"""The interface every LLM engine implements, and the choice of engine from settings."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from morgan.llm.config import LLMSettings
from morgan.models.directory import resolve_model


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int
    temperature: float = 0.7
    top_p: float = 1.0
    stop: Sequence[str] = field(default_factory=tuple)
    seed: int | None = None
    # The end-of-reply token is held back until this many tokens are out (vLLM's
    # `min_tokens`): a sampled reply never ends before its first word.
    min_tokens: int = 0


@dataclass
class GenerationChunk:
    """New text since the previous chunk; ``finish_reason`` is set on the last one."""

    text: str
    completion_tokens: int
    finish_reason: str | None = None


class LLMEngine(Protocol):
    engine_name: str
    model_path: Path
    device: str

    def load(self) -> LLMEngine:
        """Load weights and tokenizer (blocking; called in a worker thread)."""
        ...

    def unload(self) -> None: ...

    def prompt_token_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Render the chat with the model's template and tokenise it."""
        ...

    def stream(
        self, prompt_ids: list[int], params: GenerationParams, cancel: threading.Event
    ) -> AsyncIterator[GenerationChunk]:
        """Generate; stops early when ``cancel`` is set."""
        ...


def make_engine(settings: LLMSettings) -> LLMEngine:
    path = resolve_model(settings.model_dir, "llm", settings.model)
    engine = settings.resolved_engine
    if engine == "llama.cpp":
        try:
            import llama_cpp  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(
                "engine llama.cpp needs llama-cpp-python (the llm-cpp extra), which is not "
                "installed here; install it or set engine to transformers"
            ) from exc
        from morgan.llm.llamacpp_engine import LlamaCppEngine

        return LlamaCppEngine(path, device=settings.device, n_threads=settings.n_threads,
                              n_ctx=settings.max_context_tokens)  # fmt: skip
    if engine == "vllm":
        from morgan.llm.vllm_engine import VLLMEngine

        return VLLMEngine(
            path,
            gpu_memory_utilization=settings.vllm_gpu_memory_utilization,
            max_model_len=settings.vllm_max_model_len or None,
            served_model_name=settings.model_id,
        )
    from morgan.llm.transformers_engine import TransformersEngine

    return TransformersEngine(path, device=settings.device, torch_threads=settings.torch_threads)
