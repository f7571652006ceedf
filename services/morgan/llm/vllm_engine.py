"""NVIDIA GPU engine: vLLM's async engine. vLLM is imported only when this engine loads.

The request/response mapping (``sampling_params_kwargs``, ``VLLMOutputMapper``) is plain
Python so it is tested without a GPU.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from morgan.llm.engine import GenerationChunk, GenerationParams
from morgan.llm.prompt import render_chat


def sampling_params_kwargs(params: GenerationParams) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` from our generation parameters."""
    kwargs: dict[str, Any] = {
        "max_tokens": params.max_tokens,
        "temperature": params.temperature,
        "top_p": params.top_p if params.temperature > 0 else 1.0,
        "n": 1,
    }
    if params.stop:
        kwargs["stop"] = list(params.stop)
    if params.seed is not None:
        kwargs["seed"] = params.seed
    if params.min_tokens:
        kwargs["min_tokens"] = params.min_tokens
    return kwargs


class VLLMOutputMapper:
    """vLLM yields cumulative outputs (text and token ids so far); we stream deltas."""

    def __init__(self) -> None:
        self.text = ""

    def chunk(self, request_output: Any) -> GenerationChunk:
        completion = request_output.outputs[0]
        full = completion.text
        delta = full[len(self.text) :] if full.startswith(self.text) else full
        self.text = full
        finish = completion.finish_reason
        if finish == "abort":
            finish = "stop"
        return GenerationChunk(
            text=delta,
            completion_tokens=len(completion.token_ids),
            finish_reason=finish if (request_output.finished or finish) else None,
        )


def vllm_prompt(prompt_ids: list[int]) -> dict[str, Any]:
    """A tokens prompt (``vllm.inputs.TokensPrompt`` is a TypedDict of this shape)."""
    return {"prompt_token_ids": list(prompt_ids)}


class VLLMEngine:
    engine_name = "vllm"

    def __init__(
        self,
        model_path: Path,
        *,
        gpu_memory_utilization: float = 0.85,
        max_model_len: int | None = None,
        served_model_name: str | None = None,
    ) -> None:
        self.model_path = model_path
        self.device = "cuda"
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.served_model_name = served_model_name
        self._engine: Any = None
        self._tokenizer: Any = None

    def engine_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "model": str(self.model_path),
            "tokenizer": str(self.model_path),
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "dtype": "auto",
        }
        if self.max_model_len:
            args["max_model_len"] = self.max_model_len
        if self.served_model_name:
            args["served_model_name"] = self.served_model_name
        return args

    def load(self) -> VLLMEngine:
        try:
            from vllm import AsyncEngineArgs, AsyncLLMEngine
        except ImportError as exc:
            raise RuntimeError(
                "engine vllm needs the vllm package: install morgan[llm-vllm] on an NVIDIA host, "
                "or set engine=transformers"
            ) from exc
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        self._engine = AsyncLLMEngine.from_engine_args(AsyncEngineArgs(**self.engine_args()))
        return self

    def unload(self) -> None:
        engine, self._engine = self._engine, None
        if engine is not None and hasattr(engine, "shutdown"):
            engine.shutdown()

    def prompt_token_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        if self._tokenizer is None:
            raise RuntimeError("model is not loaded")
        return render_chat(self._tokenizer, messages)

    async def stream(
        self, prompt_ids: list[int], params: GenerationParams, cancel: threading.Event
    ) -> AsyncIterator[GenerationChunk]:
        from vllm import SamplingParams

        if self._engine is None:
            raise RuntimeError("model is not loaded")
        request_id = f"morgan-{uuid.uuid4().hex}"
        mapper = VLLMOutputMapper()
        finished = False
        try:
            async for output in self._engine.generate(
                vllm_prompt(prompt_ids),
                SamplingParams(**sampling_params_kwargs(params)),
                request_id,
            ):
                chunk = mapper.chunk(output)
                finished = chunk.finish_reason is not None
                yield chunk
                if cancel.is_set():
                    break
        finally:
            if not finished:
                await self._engine.abort(request_id)
