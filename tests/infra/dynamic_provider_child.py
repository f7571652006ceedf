"""A stand-in for `pulumi-dynamic-provider`: load a serialized provider, then run its CRUD.

Run as `python -u -m tests.infra.dynamic_provider_child` from the project root (the
engine starts `python -u -m pulumi.dynamic` the same way, so the root is sys.path[0]).
The first stdin line is the provider as `pulumi.dynamic` serialized it (base64 of dill);
it is loaded the way `pulumi/dynamic/__main__.py`'s get_provider does. Each further line
is one JSON request {"op": "create"|"update"|"delete"|"read", ...}; each answer is one
JSON line on stdout.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import tempfile
import traceback
from typing import Any

import dill
from pulumi.dynamic import Config, ConfigureRequest, ResourceProvider
from pulumi.metadata import get_project
from pulumi.runtime import Settings, configure
from pulumi.runtime._serialization import _deserialize


def _infra_modules() -> list[str]:
    return sorted(m for m in sys.modules if m == "infra" or m.startswith("infra."))


def load(payload: str) -> ResourceProvider:
    configure(
        Settings(
            project=os.environ.get("PULUMI_PROJECT", "project"),
            stack="stack",
            organization="organization",
        )
    )

    def deserialize() -> ResourceProvider:
        byts = base64.b64decode(payload)
        provider: ResourceProvider = dill.loads(byts)
        return provider

    provider = _deserialize(deserialize)
    provider.configure(ConfigureRequest(config=Config(raw_config={}, project_name=get_project())))
    return provider


def run(provider: ResourceProvider, request: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    if op == "create":
        created = provider.create(request["props"])
        return {"id": created.id, "outs": created.outs}
    if op == "update":
        updated = provider.update(request["id"], request["olds"], request["news"])
        return {"outs": updated.outs}
    if op == "delete":
        provider.delete(request["id"], request["props"])
        return {}
    if op == "read":
        read = provider.read(request["id"], request["props"])
        return {"id": read.id, "outs": read.outs}
    raise ValueError(f"unknown op {op!r}")


def reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    before = _infra_modules()
    provider = load(sys.stdin.readline().strip())
    reply(
        {
            "loaded": f"{type(provider).__module__}.{type(provider).__qualname__}",
            "infra_before_load": before,
            "attributes": {k: repr(v) for k, v in sorted(vars(provider).items())},
            "tempdir": tempfile.gettempdir(),
        }
    )
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            reply({"ok": True, "result": run(provider, json.loads(line))})
        except Exception as error:
            reply({"ok": False, "error": str(error), "traceback": traceback.format_exc()})


if __name__ == "__main__":
    main()
