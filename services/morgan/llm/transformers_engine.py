"""CPU (and Apple-silicon / plain-GPU) engine: any Hugging Face causal LM through transformers.

Why transformers: torch is already in the stack for Coqui TTS, it runs any causal LM from
a local directory with no network, and needs no native build or format conversion.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from morgan.llm.engine import GenerationChunk, GenerationParams
from morgan.llm.prompt import IncrementalDecoder, render_chat
from morgan.llm.worker import from_thread


class TransformersEngine:
    engine_name = "transformers"

    def __init__(self, model_path: Path, *, device: str = "cpu", torch_threads: int = 0) -> None:
        self.model_path = model_path
        self.device = device
        self.torch_threads = torch_threads
        self._model: Any = None
        self._tokenizer: Any = None
        self._eos_ids: list[int] = []

    def load(self) -> TransformersEngine:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.torch_threads:
            torch.set_num_threads(self.torch_threads)
        tokenizer = AutoTokenizer.from_pretrained(self.model_path, local_files_only=True)
        dtype = torch.float32 if self.device == "cpu" else torch.float16
        model = AutoModelForCausalLM.from_pretrained(
            self.model_path, local_files_only=True, dtype=dtype
        )
        model = model.to(self.device)  # type: ignore[arg-type]
        model.eval()
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos_ids = [eos] if isinstance(eos, int) else list(eos or [])
        self._tokenizer, self._model = tokenizer, model
        return self

    def unload(self) -> None:
        self._model = None
        self._tokenizer = None

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            raise RuntimeError("model is not loaded")
        return self._tokenizer

    def prompt_token_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        return render_chat(self.tokenizer, messages)

    def _generate(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        cancel: threading.Event,
        emit: Any,
    ) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList
        from transformers.generation.streamers import BaseStreamer

        class _Streamer(BaseStreamer):
            def __init__(self) -> None:
                self.first = True

            def put(self, value: torch.Tensor) -> None:
                if self.first:  # generate() hands the prompt over first
                    self.first = False
                    return
                emit(value.reshape(-1).tolist())

            def end(self) -> None:
                pass

        class _Cancelled(StoppingCriteria):
            def __call__(
                self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any
            ) -> torch.Tensor:
                return torch.full((input_ids.shape[0],), cancel.is_set(), dtype=torch.bool)

        model = self._model
        if model is None:
            raise RuntimeError("model is not loaded")
        inputs = torch.tensor([prompt_ids], dtype=torch.long, device=self.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_tokens,
            "streamer": _Streamer(),
            "stopping_criteria": StoppingCriteriaList([_Cancelled()]),
            "attention_mask": torch.ones_like(inputs),
            "pad_token_id": self._tokenizer.pad_token_id
            if self._tokenizer.pad_token_id is not None
            else (self._eos_ids or [0])[0],
        }
        if self._eos_ids:
            kwargs["eos_token_id"] = self._eos_ids
        if params.min_tokens:
            kwargs["min_new_tokens"] = params.min_tokens
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            if params.seed is not None:
                torch.manual_seed(params.seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            model.generate(inputs, **kwargs)

    async def stream(
        self, prompt_ids: list[int], params: GenerationParams, cancel: threading.Event
    ) -> AsyncIterator[GenerationChunk]:
        decoder = IncrementalDecoder(self.tokenizer)
        count = 0
        finish: str | None = None

        def produce(emit: Callable[[list[int]], None]) -> None:
            self._generate(prompt_ids, params, cancel, emit)

        try:
            async for item in from_thread(produce):
                ids = [i for i in item if i not in self._eos_ids]
                count += len(item)
                if len(ids) < len(item):
                    finish = "stop"
                text = decoder.push(ids)
                if text:
                    yield GenerationChunk(text=text, completion_tokens=count)
            tail = decoder.flush()
            if finish is None:
                finish = "length" if count >= params.max_tokens else "stop"
            yield GenerationChunk(text=tail, completion_tokens=count, finish_reason=finish)
        finally:
            cancel.set()
