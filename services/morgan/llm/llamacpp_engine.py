"""CPU and Apple-silicon engine: GGUF models through llama.cpp (llama-cpp-python).

Quantized GGUF models (Q4_K_M and the like) are how LLMs are run on CPUs and Macs:
several times the tokens/s of an fp32 transformers model, in a fraction of its memory.
The chat template comes from the model's own GGUF metadata (`tokenizer.chat_template`).
The library is built from source once per machine for a portable CPU baseline (see
pyproject.toml's `[tool.uv.extra-build-variables]`).
"""

from __future__ import annotations

import codecs
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from morgan.llm.engine import GenerationChunk, GenerationParams
from morgan.llm.worker import from_thread
from morgan.models.cpu import available_cpus


def gguf_file(path: Path) -> Path:
    """The .gguf file at `path`: the file itself, or the only .gguf in a directory."""
    if path.is_file():
        return path
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) != 1:
        what = "no .gguf file" if not found else f"{len(found)} .gguf files"
        raise FileNotFoundError(
            f"{path}: {what}; the llama.cpp engine needs one GGUF model "
            "(`morgan models fetch` or `morgan models import FILE.gguf`)"
        )
    return found[0]


class HoldBackEnd:
    """A llama.cpp logits processor: the end-of-generation tokens cannot be sampled until
    `min_tokens` tokens are out (`generated` counts them)."""

    def __init__(self, end_tokens: set[int], min_tokens: int) -> None:
        self.end_tokens = sorted(end_tokens)
        self.min_tokens = min_tokens
        self.generated = 0

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        if self.generated < self.min_tokens:
            scores[self.end_tokens] = -float("inf")
        return scores


def _piece(llama: Any, token: int) -> str:
    """The text of one (special) token, e.g. the template's `<|im_end|>`."""
    data: bytes = llama.detokenize([token], special=True)
    return data.decode("utf-8", errors="replace")


class LlamaCppEngine:
    engine_name = "llama.cpp"

    def __init__(
        self,
        model_path: Path,
        *,
        device: str = "cpu",
        n_threads: int = 0,
        n_ctx: int = 4096,
    ) -> None:
        self.model_path = model_path
        self.device = device
        self.n_threads = n_threads or available_cpus()
        self.n_ctx = n_ctx
        self._llama: Any = None
        self._template: Any = None
        self._eog: set[int] = set()
        self._lock = threading.Lock()

    def load(self) -> LlamaCppEngine:
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        llama = Llama(
            model_path=str(gguf_file(self.model_path)),
            n_ctx=self.n_ctx,
            n_threads=self.n_threads,
            n_threads_batch=self.n_threads,
            n_gpu_layers=-1 if self.device == "mps" else 0,
            verbose=False,
        )
        meta: dict[str, str] = dict(llama.metadata)
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        self._eog = {eos_id}
        for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
            if meta.get(key, "").isdigit():
                self._eog.add(int(meta[key]))
        template = meta.get("tokenizer.chat_template")
        if template:
            self._template = Jinja2ChatFormatter(
                template=template,
                eos_token=_piece(llama, eos_id) if eos_id >= 0 else "",
                bos_token=_piece(llama, bos_id) if bos_id >= 0 else "",
                add_generation_prompt=True,
            )
        self._llama = llama
        return self

    def unload(self) -> None:
        llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()

    @property
    def llama(self) -> Any:
        if self._llama is None:
            raise RuntimeError("model is not loaded")
        return self._llama

    def prompt_token_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        if self._template is not None:
            text = self._template(messages=list(messages)).prompt
        else:
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            text = "\n".join([*lines, "assistant:"])
        # The template writes any BOS itself; special=True parses its control tokens.
        ids = self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        return [int(i) for i in ids]

    def _generate(
        self, prompt_ids: list[int], params: GenerationParams, cancel: threading.Event, emit: Any
    ) -> None:
        llama = self.llama
        if params.seed is not None:
            llama.set_seed(params.seed)
        greedy = params.temperature <= 0
        count = 0
        hold = HoldBackEnd(self._eog, params.min_tokens) if params.min_tokens else None
        with self._lock:  # one llama context: generations take turns
            for token in llama.generate(
                prompt_ids,
                temp=0.0 if greedy else params.temperature,
                top_p=1.0 if greedy else params.top_p,
                top_k=1 if greedy else 0,
                min_p=0.0,
                repeat_penalty=1.0,
                reset=True,
                logits_processor=[hold] if hold else None,
            ):
                if cancel.is_set():
                    return
                if token in self._eog:
                    emit(([int(token)], True))
                    return
                count += 1
                if hold:
                    hold.generated = count
                emit(([int(token)], False))
                if count >= params.max_tokens:
                    return

    async def stream(
        self, prompt_ids: list[int], params: GenerationParams, cancel: threading.Event
    ) -> AsyncIterator[GenerationChunk]:
        # Token pieces are bytes: one incremental UTF-8 decoder holds back split characters,
        # so each token costs one piece, not a decode of the whole reply.
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        llama = self.llama
        count = 0
        finish: str | None = None

        def produce(emit: Callable[[tuple[list[int], bool]], None]) -> None:
            self._generate(prompt_ids, params, cancel, emit)

        try:
            async for item in from_thread(produce):
                ids, end = item
                if end:
                    finish = "stop"
                    continue
                count += len(ids)
                text = utf8.decode(llama.detokenize(ids))
                if text:
                    yield GenerationChunk(text=text, completion_tokens=count)
            tail = utf8.decode(b"", final=True)
            if finish is None:
                finish = "length" if count >= params.max_tokens else "stop"
            yield GenerationChunk(text=tail, completion_tokens=count, finish_reason=finish)
        finally:
            cancel.set()
