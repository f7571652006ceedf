"""Settings of morgan-llm (env MORGAN_LLM_<FIELD>, Consul KV morgan/config/llm/<field>)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from morgan.models.directory import default_model_dir
from morgan.shared.settings import ServiceSettings, restart_field

_ENVELOPE_BYTES = 64 * 1024  # JSON or multipart framing around the payload


class LLMSettings(ServiceSettings):
    """morgan-llm: chat completions from a local model (vLLM on NVIDIA GPUs, llama.cpp on CPUs
    and Apple silicon, transformers where selected)."""

    service_name: str = restart_field("morgan-llm", description="Name registered in Consul.")
    port: int = restart_field(
        8001, ge=1, le=65535, description="TCP port the HTTP server listens on."
    )
    engine: Literal["auto", "llama.cpp", "transformers", "vllm"] = restart_field(
        "auto",
        description="Inference engine. `auto`: `vllm` for device cuda, else `llama.cpp`. "
        "`llama.cpp`: GGUF models on CPU or Apple silicon (the llm-cpp extra); `vllm`: NVIDIA "
        "GPUs (the llm-vllm extra); `transformers`: any Hugging Face causal LM where torch is "
        "installed (the llm extra).",
    )
    model_dir: Path = restart_field(
        default_factory=default_model_dir,
        description="Model directory (a volume); the model is read from `<model_dir>/llm/<model>`. "
        "Defaults to MORGAN_MODEL_DIR, else /models.",
    )
    model: str = restart_field(
        "default",
        description="Model name under `<model_dir>/llm/`, or an absolute path: a directory "
        "with one `.gguf` file (llama.cpp) or in Hugging Face format (config.json, "
        "safetensors, tokenizer: transformers and vLLM).",
        min_length=1,
    )
    served_model_name: str = restart_field(
        "",
        description="Model id shown by /v1/models and accepted in requests; defaults to `model`.",
    )
    max_tokens_limit: int = Field(
        2048, ge=1, description="Largest `max_tokens` a request may ask for (larger → 400)."
    )
    default_max_tokens: int = Field(
        512, ge=1, description="`max_tokens` used when a request does not set one."
    )
    max_context_tokens: int = Field(
        4096, ge=16, description="Prompt tokens plus `max_tokens` may not exceed this (→ 400)."
    )
    max_prompt_chars: int = Field(
        100_000, ge=1, description="Largest total message text a request may send (→ 413)."
    )
    request_timeout_seconds: float = Field(
        120.0,
        gt=0,
        description="A generation running longer is stopped (→ 504, or an error "
        "event in a stream).",
    )
    max_concurrency: int = Field(1, ge=1, description="Generations running at the same time.")
    max_queue: int = Field(
        8,
        ge=0,
        description="Requests waiting for a slot; when full, new ones get 503 with Retry-After.",
    )
    idle_unload_seconds: float = Field(
        0.0,
        ge=0,
        description="Unload the model after this long without requests (0 = never); "
        "the next request loads it again.",
    )
    n_threads: int = restart_field(
        0,
        ge=0,
        description="CPU threads of the llama.cpp engine (0 = the container's CPU quota, "
        "else the CPUs this process may use).",
    )
    torch_threads: int = restart_field(
        0,
        ge=0,
        description="CPU threads torch uses for the transformers engine (0 = torch's default).",
    )
    vllm_gpu_memory_utilization: float = restart_field(
        0.85, gt=0, le=1, description="Share of GPU memory vLLM may take (weights + KV cache)."
    )
    vllm_max_model_len: int = restart_field(
        0, ge=0, description="vLLM context length (0 = the model's own)."
    )

    @property
    def resolved_engine(self) -> str:
        """The engine `auto` stands for on this device."""
        if self.engine != "auto":
            return self.engine
        return "vllm" if self.device == "cuda" else "llama.cpp"

    @property
    def model_id(self) -> str:
        return self.served_model_name or Path(self.model).name

    def max_request_bytes(self) -> int:
        """Largest request body read: messages of max_prompt_chars characters (at most 4
        bytes each in UTF-8) and the request's other fields."""
        return 4 * self.max_prompt_chars + _ENVELOPE_BYTES
