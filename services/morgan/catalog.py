"""Morgan's own services: the one table of their ports, Consul names and runtime images.

The deploy paths (`infra`), the image builds (`morgan.lab.images`, `infra.builds`),
the image locks (`morgan.lab.lock`) and `morgan verify` read it. Where a Dockerfile
or a settings default must repeat a value, tests/lab/test_catalog.py proves they agree.
Kept free of imports so that every part of the package can read it.
"""

from __future__ import annotations

from typing import Final

# Service -> the port its first replica listens on (more replicas on a host: +10 each).
SERVICE_PORTS: Final[dict[str, int]] = {
    "core": 8000,
    "llm": 8001,
    "tts": 8002,
    "stt": 8003,
    "vad": 8004,
}
REPLICA_PORT_STEP: Final = 10

# Service -> the runtime image its CPU image builds FROM (see docs/images.md).
RUNTIME_FLAVOUR: Final[dict[str, str]] = {
    "core": "core",
    "llm": "llm",
    "tts": "torch",
    "stt": "slim",
    "vad": "slim",
}

# Runtime flavour -> the extras of pyproject.toml its image installs (from uv.lock).
RUNTIME_EXTRAS: Final[dict[str, tuple[str, ...]]] = {
    # faster-whisper runs on CTranslate2 and needs no torch: a small image; Silero VAD
    # (vad) runs on the ONNX Runtime it already carries.
    "slim": ("service", "stt", "vad"),
    # Core embeds text on ONNX Runtime: no torch either.
    "core": ("service", "core"),
    # The LLM's CPU engine, llama.cpp (compiled in the runtime's build stage).
    "llm": ("service", "llm-cpp"),
    # coqui-tts (tts) needs torch; embed-export makes core's ONNX model.
    "torch": ("service", "tts", "embed-export"),
}

# Service -> {build arg: runtime flavour} of further images its Dockerfile copies from:
# core's build exports the embedding model to ONNX in a stage FROM the torch runtime and
# keeps only the result.
BUILD_STAGES: Final[dict[str, dict[str, str]]] = {"core": {"EXPORT_IMAGE": "torch"}}


def build_runtimes(service: str) -> dict[str, str]:
    """Build arg -> runtime flavour of every runtime image a service's build starts FROM."""
    return {"RUNTIME_IMAGE": RUNTIME_FLAVOUR[service], **BUILD_STAGES.get(service, {})}


def consul_name(service: str) -> str:
    """The name a service registers under in Consul, e.g. `morgan-core`."""
    return f"morgan-{service}"
