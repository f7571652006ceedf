"""The model directory: ``<root>/<kind>/<name>/`` holds one model of kind llm, stt or tts.

Services only read from it; ``morgan models fetch`` and ``morgan models import`` write to
it. Nothing is ever downloaded while serving.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ModelKind = Literal["llm", "stt", "tts"]
KINDS: tuple[ModelKind, ...] = ("llm", "stt", "tts")

DEFAULT_MODEL_DIR = Path("/models")


def default_model_dir() -> Path:
    """MORGAN_MODEL_DIR, else /models (the volume the model containers mount)."""
    return Path(os.environ.get("MORGAN_MODEL_DIR") or DEFAULT_MODEL_DIR)


class ModelDirectoryError(ValueError):
    """A model is missing or incomplete; the message names the path and the fix."""


@dataclass(frozen=True)
class ModelLayout:
    kind: ModelKind
    description: str

    def problems(self, path: Path) -> list[str]:
        """What is missing for ``path`` to hold a model of this kind (empty when complete)."""
        if not path.is_dir():
            return [f"{path} is not a directory"]
        names = {p.name for p in path.iterdir()}
        missing: list[str] = []
        if self.kind == "llm":
            ggufs = [n for n in names if n.endswith(".gguf")]
            if len(ggufs) == 1:
                return []  # a GGUF model (llama.cpp): one file holds weights and tokenizer
            if len(ggufs) > 1:
                return [f"one .gguf file, not {len(ggufs)} ({', '.join(sorted(ggufs))})"]
            if "config.json" not in names:
                missing.append("config.json")
            if not any(n.endswith((".safetensors", ".bin")) for n in names):
                missing.append("weights (*.safetensors or pytorch_model*.bin)")
            if not names & {"tokenizer.json", "tokenizer.model", "vocab.json"}:
                missing.append("tokenizer (tokenizer.json, tokenizer.model or vocab.json)")
        elif self.kind == "stt":
            for name in ("model.bin", "config.json"):
                if name not in names:
                    missing.append(f"{name} (CTranslate2 format)")
            if "tokenizer.json" not in names:
                missing.append("tokenizer.json")
        else:
            if "config.json" not in names:
                missing.append("config.json")
            if not any(n.endswith((".pth", ".pt")) for n in names):
                missing.append("checkpoint (model.pth or model_file.pth)")
        return [f"missing {m}" for m in missing]


LAYOUTS: dict[ModelKind, ModelLayout] = {
    "llm": ModelLayout(
        "llm",
        "one .gguf file (llama.cpp), or a Hugging Face causal LM (config.json, safetensors, "
        "tokenizer)",
    ),
    "stt": ModelLayout("stt", "a faster-whisper (CTranslate2) Whisper model"),
    "tts": ModelLayout("tts", "a Coqui TTS model (config.json and model.pth)"),
}


def check_kind(kind: str) -> ModelKind:
    if kind not in KINDS:
        raise ModelDirectoryError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    return kind


def resolve_model(root: Path, kind: ModelKind, name: str) -> Path:
    """The directory of model ``name``: an absolute path, or ``root/kind/name``; validated."""
    path = Path(name) if os.path.isabs(name) else root / kind / name
    if not path.exists():
        available = list_models(root, kind)
        hint = f"available: {', '.join(available)}" if available else "none installed"
        raise ModelDirectoryError(
            f"{kind} model {name!r} not found at {path} ({hint}); install it with "
            f"`morgan models import DIR --kind {kind} --name {name}` or "
            f"`morgan models fetch REPO --kind {kind} --name {name}`"
        )
    problems = LAYOUTS[kind].problems(path)
    if problems:
        raise ModelDirectoryError(
            f"{kind} model at {path} is incomplete: {'; '.join(problems)}. Expected "
            f"{LAYOUTS[kind].description}; re-import or re-fetch it"
        )
    return path


def list_models(root: Path, kind: ModelKind) -> list[str]:
    base = root / kind
    if not base.is_dir():
        return []
    return sorted(
        p.name
        for p in base.iterdir()
        if p.is_dir() and not p.name.startswith(".") and not LAYOUTS[kind].problems(p)
    )
