"""The model volume of a stack on this machine: tiny offline test models where no real one is."""

from __future__ import annotations

import subprocess

from morgan.lab.stack import StackError

MODELS_VOLUME_DEFAULT = "morgan-models"
TINY_MARKER = ".morgan-tiny-test-model"
TINY_MODEL_WARNING = "using tiny test models; run `morgan models fetch` for real ones"


def seed_models(volume: str, base_image: str) -> list[str]:
    """Put the tiny test models in the model volume for every kind that has no model yet.

    Returns the kinds served by a tiny model (empty when real models are present).
    """
    from morgan.models.directory import KINDS
    from morgan.models.testing import cached_tiny_model

    # One line per installed model: "<kind> <name> tiny|real".
    present = subprocess.run(
        ["docker", "run", "--rm", "-v", f"{volume}:/models", base_image, "sh", "-c",
         "for d in /models/llm/* /models/stt/* /models/tts/*; do [ -d \"$d\" ] || continue;"
         f" k=$(basename $(dirname $d)); [ -e $d/{TINY_MARKER} ] && echo $k tiny || echo $k real;"
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
        if "tiny" in found.get(kind, set()):
            continue
        source = cached_tiny_model(kind)
        proc = subprocess.run(
            ["docker", "run", "--rm", "-v", f"{volume}:/models", "-v", f"{source}:/src:ro",
             base_image, "sh", "-c",
             f"mkdir -p /models/{kind} && cp -a /src /models/{kind}/default"
             f" && rm -f /models/{kind}/default/.complete"
             f" && touch /models/{kind}/default/{TINY_MARKER}"
             " && chown -R 10001:10001 /models"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise StackError(
                f"could not copy the tiny {kind} model into volume {volume}: {proc.stderr.strip()}"
            )
    return seeded
