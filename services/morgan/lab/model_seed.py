"""The model volume of a stack on this machine: tiny offline test models where no real one is."""

from __future__ import annotations

import subprocess

from morgan.lab.stack import StackError

MODELS_VOLUME_DEFAULT = "morgan-models"
TINY_MARKER = ".morgan-tiny-test-model"
TINY_MODEL_WARNING = "using tiny test models; run `morgan models fetch` for real ones"


def tiny_variant(kind: str, llm_engine: str) -> str:
    """The tiny test model that serves `kind` on a stack: GGUF for llama.cpp's LLM."""
    if kind == "llm" and llm_engine not in ("transformers", "vllm"):
        return "llm-gguf"
    return kind


def seed_models(volume: str, base_image: str, llm_engine: str = "llama.cpp") -> list[str]:
    """Put the tiny test models in the model volume for every kind that has no model yet
    (a tiny model of the wrong format for the stack's LLM engine is replaced).

    Returns the kinds served by a tiny model (empty when real models are present).
    """
    from morgan.models.directory import KINDS
    from morgan.models.testing import cached_tiny_model

    # One line per installed model: "<kind> tiny:<variant>" or "<kind> real".
    present = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{volume}:/models", base_image, "sh", "-c",
         "for d in /models/llm/* /models/stt/* /models/tts/*; do [ -d \"$d\" ] || continue;"
         f" k=$(basename $(dirname $d)); [ -e $d/{TINY_MARKER} ]"
         f' && echo "$k tiny:$(cat $d/{TINY_MARKER})" || echo $k real;'
         " done"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found: dict[str, set[str]] = {}
    for line in present.stdout.splitlines():
        kind, _, what = line.partition(" ")
        found.setdefault(kind, set()).add(what)
    seeded: list[str] = []
    for kind in KINDS:
        if "real" in found.get(kind, set()):
            continue
        seeded.append(kind)
        variant = tiny_variant(kind, llm_engine)
        if f"tiny:{variant}" in found.get(kind, set()):
            continue
        source = cached_tiny_model(variant)  # type: ignore[arg-type]
        proc = subprocess.run(
            ["docker", "run", "--rm", "-v", f"{volume}:/models", "-v", f"{source}:/src:ro",
             base_image, "sh", "-c",
             f"mkdir -p /models/{kind} && rm -rf /models/{kind}/default"
             f" && cp -a /src /models/{kind}/default"
             f" && rm -f /models/{kind}/default/.complete"
             f" && echo {variant} > /models/{kind}/default/{TINY_MARKER}"
             " && chown -R 10001:10001 /models"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise StackError(
                f"could not copy the tiny {kind} model into volume {volume}: {proc.stderr.strip()}"
            )
    return seeded
