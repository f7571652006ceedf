"""Generate docs/configuration.md and docs/schemas/<service>.json from the settings models.

    python -m morgan.shared.config_docs            # write the files
    python -m morgan.shared.config_docs --check    # exit 1 if they are stale

Settings classes are found through `KNOWN_SETTINGS`; a service whose module does not exist
(yet) is left out, any other import error is raised.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from morgan.shared.config_loader import env_prefix, kv_prefix

# service key -> (module, class). "shared" documents the fields every service has.
KNOWN_SETTINGS: dict[str, tuple[str, str]] = {
    "shared": ("morgan.shared.settings", "ServiceSettings"),
    "core": ("morgan.core.config", "CoreSettings"),
    "llm": ("morgan.llm.config", "LLMSettings"),
    "stt": ("morgan.stt.config", "STTSettings"),
    "tts": ("morgan.tts.config", "TTSSettings"),
    "vad": ("morgan.vad.config", "VADSettings"),
}

DEFAULT_DOCS_DIR = Path(__file__).resolve().parents[3] / "docs"


def _module_missing(exc: ModuleNotFoundError, module: str) -> bool:
    # Only "this module (or its package) does not exist"; a missing dependency inside an
    # existing module is a real error.
    return exc.name is not None and (module == exc.name or module.startswith(exc.name + "."))


def load_known_settings(
    known: dict[str, tuple[str, str]] | None = None,
) -> dict[str, type[BaseModel]]:
    out: dict[str, type[BaseModel]] = {}
    for service, (module, cls_name) in (known or KNOWN_SETTINGS).items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if _module_missing(exc, module):
                continue
            raise
        cls = getattr(mod, cls_name, None)
        if cls is None:
            raise ImportError(
                f"{module} exists but defines no {cls_name}; rename the settings class or "
                f"update KNOWN_SETTINGS in morgan/shared/config_docs.py"
            )
        out[service] = cls
    return out


def _type_text(prop: dict[str, Any], defs: dict[str, Any]) -> str:
    if "$ref" in prop:
        return prop["$ref"].rsplit("/", 1)[-1]
    if "enum" in prop:
        return " \\| ".join(json.dumps(v) for v in prop["enum"])
    if "anyOf" in prop:
        return " \\| ".join(_type_text(p, defs) for p in prop["anyOf"])
    t = prop.get("type", "any")
    if t == "array":
        return f"list[{_type_text(prop.get('items', {}), defs)}]"
    if t == "string" and prop.get("format") == "path":
        return "path"
    return str(t)


def _default_text(prop: dict[str, Any]) -> str:
    if "default" not in prop:
        return "*(computed)*"
    return "`" + json.dumps(prop["default"]) + "`"


def schema_for(cls: type[BaseModel]) -> dict[str, Any]:
    return cls.model_json_schema(mode="validation")


def render_schema(cls: type[BaseModel]) -> str:
    return json.dumps(schema_for(cls), indent=2, sort_keys=True) + "\n"


def render_markdown(classes: dict[str, type[BaseModel]]) -> str:
    lines = [
        "# Configuration reference",
        "",
        "<!-- Written by `python -m morgan.shared.config_docs`; edit the settings models,",
        "     then run it again. A test fails when this file is stale. -->",
        "",
        "Every service reads its settings once at start and then follows Consul KV live.",
        "Precedence, highest first:",
        "",
        "1. **Environment**: `MORGAN_<SERVICE>_<FIELD>` (e.g. `MORGAN_LLM_PORT=8001`; lists and",
        "   objects as JSON), plus `CONSUL_HTTP_ADDR` and `MORGAN_ADVERTISE_HOST`.",
        "2. **Consul KV**: `morgan/config/<service>/<field>`, then `morgan/config/global/<field>`",
        "   (applies to every service that has the field). Values are JSON: "
        "`consul kv put morgan/config/llm/port 8001`,",
        "   `consul kv put morgan/config/global/log_level '\"DEBUG\"'`. A nested field is a deeper",
        "   key (`morgan/config/llm/sampling/temperature`).",
        "3. **Local YAML** file given to the service (one mapping of field names to values).",
        "4. **Defaults** below.",
        "",
        "A running service follows KV: a change to a setting is used from its next request",
        'on, except for the settings marked "Read at start-up" below, which take effect when',
        "the service restarts (`morgan config set` says which). An invalid value is rejected:",
        "the previous configuration stays, the error is logged and",
        "`morgan_config_rejected_total` counts it.",
        "If Consul is down at start, the service starts from environment, YAML and defaults",
        "and logs a warning. Upload YAML files with `morgan config migrate --from DIR`",
        "(`--dry-run` prints the diff, `--prune` deletes keys the files no longer have).",
        "",
        "JSON Schemas: `docs/schemas/<service>.json`.",
        "",
        "## API keys",
        "",
        "`morgan keys create --owner NAME [--scope user|admin|service] [--expires-days N]`",
        "prints a key `mk_<id>_<secret>` once; Consul KV keeps only a salted scrypt hash at",
        "`morgan/auth/keys/<id>` with owner, scopes, created, expires and revoked. Clients send",
        "`X-API-Key: <key>` or `Authorization: Bearer <key>`; a browser's WebSocket offers the",
        "subprotocols `morgan` and `bearer.<key>`. A key in the URL (`?api_key=`) is refused",
        "(400): it would end up in logs and history; log lines show a key as `mk_<id>_[redacted]`.",
        "`/health`, `/ready` and `/metrics` are public. Each service trusts a verified key for",
        "`api_key_cache_seconds` (30 s, at most 300): `morgan keys revoke ID` takes effect",
        "everywhere within that window. A key not in the cache is read from the copy of the",
        "Consul server the service's agent reaches, when that server heard from the leader within",
        "the same window (`X-Consul-LastContact`), else from the leader: a check does not wait",
        "for a leader it cannot reach (a host just back from a network cut), and a copy staler",
        "than the window is never trusted.",
        "",
        "A `user` key (the default) acts only for its owner: core scopes every conversation,",
        "memory search, reset and delete to the key's owner, `user_id` may be left out, and",
        "naming another user is refused (403); another user's conversation answers 404. An",
        "`admin` key may act for any `user_id` it names and read, reset or delete any",
        "conversation by id. The model services (llm, stt, tts) accept only `service` keys, and",
        "core refuses them. A key record written before scopes existed is a `user` key.",
        "",
        "Security settings (`auth_enabled`, `tls_*`, `api_key_cache_seconds`) come only from the",
        "environment: a Consul KV key for one is ignored (logged, counted in",
        "`morgan_config_rejected_total`) and `morgan config set` refuses to write it.",
        "",
        "## TLS between services",
        "",
        "Set `tls_ca`, `tls_cert` and `tls_key` together: the service then serves HTTPS, requires",
        "a client certificate signed by `tls_ca`, advertises `scheme=https` in Consul meta, and",
        "calls other services with its own certificate. Consul's HTTP check then needs the agent",
        "to present a certificate from the same CA (`enable_agent_tls_for_checks`).",
        "",
    ]
    shared_fields = (
        set(schema_for(classes["shared"])["properties"]) if "shared" in classes else (set())
    )
    for service, cls in classes.items():
        schema = schema_for(cls)
        defs = schema.get("$defs", {})
        props: dict[str, Any] = schema.get("properties", {})
        title = "Shared by every service" if service == "shared" else f"`{service}`"
        lines += [f"## {title} — `{cls.__module__}.{cls.__name__}`", ""]
        doc = (cls.__doc__ or "").strip().splitlines()
        if doc:
            lines += [doc[0], ""]
        if service != "shared" and shared_fields:
            lines += [
                "Also has every shared field; only its own fields and changed defaults are listed.",
                "",
            ]
        scope = "global" if service == "shared" else service
        env = "MORGAN_<SERVICE>_" if service == "shared" else env_prefix(service)
        lines += [
            "| field | type | default | env | Consul KV key | description |",
            "|---|---|---|---|---|---|",
        ]
        base_props = schema_for(classes["shared"])["properties"] if "shared" in classes else {}
        for name, prop in props.items():
            if service != "shared" and name in base_props and base_props[name] == prop:
                continue
            desc = str(prop.get("description", "")).replace("\n", " ").replace("|", "\\|")
            kv = "— (environment only)" if prop.get("env_only") else f"`{kv_prefix(scope)}{name}`"
            lines.append(
                f"| `{name}` | {_type_text(prop, defs)} | {_default_text(prop)} | "
                f"`{env}{name.upper()}` | {kv} | {desc} |"
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def expected_files(
    docs_dir: Path,
    classes: dict[str, type[BaseModel]] | None = None,
) -> dict[Path, str]:
    classes = classes if classes is not None else load_known_settings()
    files = {docs_dir / "configuration.md": render_markdown(classes)}
    for service, cls in classes.items():
        files[docs_dir / "schemas" / f"{service}.json"] = render_schema(cls)
    return files


def stale_files(docs_dir: Path = DEFAULT_DOCS_DIR) -> list[Path]:
    out = []
    for path, text in expected_files(docs_dir).items():
        if not path.exists() or path.read_text() != text:
            out.append(path)
    return out


def write_files(docs_dir: Path = DEFAULT_DOCS_DIR) -> list[Path]:
    written = []
    for path, text in expected_files(docs_dir).items():
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m morgan.shared.config_docs",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    parser.add_argument("--docs-dir", type=Path, default=DEFAULT_DOCS_DIR)
    parser.add_argument("--check", action="store_true", help="exit 1 if files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.docs_dir)
        for p in stale:
            print(f"stale: {p}", file=sys.stderr)
        if stale:
            print(
                "run `python -m morgan.shared.config_docs` and commit the result", file=sys.stderr
            )
        return 1 if stale else 0
    for p in write_files(args.docs_dir):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
