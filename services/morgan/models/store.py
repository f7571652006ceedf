"""Putting models into the model directory: import a folder (air-gapped) or fetch from the hub.

Both stage into a hidden folder next to the destination, validate the layout, then rename,
so a service never sees a half-copied model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from morgan.models.directory import (
    KINDS,
    LAYOUTS,
    ModelDirectoryError,
    ModelKind,
    check_kind,
)


@dataclass(frozen=True)
class CatalogEntry:
    kind: ModelKind
    repo_id: str
    note: str
    # A GGUF model is one file of the repository: only that file is downloaded.
    file: str | None = None
    download_mb: int = 0  # about
    ram_mb: int = 0  # about: weights plus a 4096-token context, what the host must hold


# Names `morgan models fetch` knows; any other NAME is taken as a Hugging Face repo id.
# The GGUF ones (llama.cpp, the CPU and Apple-silicon engine) are Q4_K_M quantisations.
CATALOG: dict[str, CatalogEntry] = {
    "qwen2.5-0.5b-instruct-q4": CatalogEntry(
        "llm",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF",
        "GGUF Q4_K_M, llama.cpp",
        "qwen2.5-0.5b-instruct-q4_k_m.gguf",
        download_mb=490,
        ram_mb=1000,
    ),
    "qwen2.5-1.5b-instruct-q4": CatalogEntry(
        "llm",
        "Qwen/Qwen2.5-1.5B-Instruct-GGUF",
        "GGUF Q4_K_M, llama.cpp",
        "qwen2.5-1.5b-instruct-q4_k_m.gguf",
        download_mb=1120,
        ram_mb=2000,
    ),
    "qwen2.5-3b-instruct-q4": CatalogEntry(
        "llm",
        "Qwen/Qwen2.5-3B-Instruct-GGUF",
        "GGUF Q4_K_M, llama.cpp",
        "qwen2.5-3b-instruct-q4_k_m.gguf",
        download_mb=2100,
        ram_mb=3300,
    ),
    "qwen2.5-7b-instruct-q4": CatalogEntry(
        "llm",
        "bartowski/Qwen2.5-7B-Instruct-GGUF",
        "GGUF Q4_K_M, llama.cpp",
        "Qwen2.5-7B-Instruct-Q4_K_M.gguf",
        download_mb=4680,
        ram_mb=6200,
    ),
    "whisper-tiny": CatalogEntry("stt", "Systran/faster-whisper-tiny", "39 M, multilingual"),
    "whisper-base": CatalogEntry("stt", "Systran/faster-whisper-base", "74 M, multilingual"),
    "whisper-small": CatalogEntry("stt", "Systran/faster-whisper-small", "244 M, multilingual"),
    "whisper-medium": CatalogEntry("stt", "Systran/faster-whisper-medium", "769 M"),
    "whisper-large-v3": CatalogEntry("stt", "Systran/faster-whisper-large-v3", "1.5 B, GPU"),
    "qwen2.5-0.5b-instruct": CatalogEntry("llm", "Qwen/Qwen2.5-0.5B-Instruct", "CPU friendly"),
    "qwen2.5-1.5b-instruct": CatalogEntry("llm", "Qwen/Qwen2.5-1.5B-Instruct", "CPU or GPU"),
    "qwen2.5-7b-instruct": CatalogEntry("llm", "Qwen/Qwen2.5-7B-Instruct", "GPU (vLLM)"),
}


class ModelStoreError(RuntimeError):
    """Fetching or importing failed; the message names the cause and what to do."""


def detect_kind(path: Path) -> ModelKind:
    """The kind whose layout ``path`` satisfies (stt first: its files are the most specific)."""
    for kind in ("stt", "tts", "llm"):
        if not LAYOUTS[kind].problems(path):
            return kind
    raise ModelDirectoryError(
        f"{path} does not look like any model Morgan serves: "
        + "; ".join(f"{k}: {', '.join(LAYOUTS[k].problems(path))}" for k in KINDS)
        + ". Pass --kind to see what is missing for one kind"
    )


def _install(staged: Path, root: Path, kind: ModelKind, name: str, force: bool) -> Path:
    problems = LAYOUTS[kind].problems(staged)
    if problems:
        raise ModelDirectoryError(
            f"not a complete {kind} model: {'; '.join(problems)} (expected "
            f"{LAYOUTS[kind].description})"
        )
    dest = root / kind / name
    if dest.exists():
        if not force:
            raise ModelStoreError(
                f"{dest} already exists; pass --force to replace it or choose another --name"
            )
        old = dest.with_name(f".{name}.old")
        shutil.rmtree(old, ignore_errors=True)
        dest.rename(old)
        staged.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.rename(dest)
    return dest


def _check_name(name: str) -> str:
    if not name or name.startswith(".") or "/" in name or os.sep in name:
        raise ModelStoreError(
            f"model name {name!r} must be a plain folder name (no '/' or leading '.')"
        )
    return name


def import_model(
    source: Path,
    root: Path,
    *,
    kind: str | None = None,
    name: str | None = None,
    force: bool = False,
) -> Path:
    """Copy the model folder ``source`` into ``root/<kind>/<name>`` after validating it."""
    source = source.expanduser().resolve()
    if source.is_file() and source.suffix == ".gguf":
        if kind and kind != "llm":
            raise ModelStoreError(f"{source.name} is a GGUF LLM, not a {kind} model")
        return _import_gguf(source, root, name or source.stem.lower(), force)
    if not source.is_dir():
        raise ModelStoreError(
            f"{source} is not a folder or a .gguf file; pass the folder that "
            "holds the model files, or the .gguf file"
        )
    model_kind = check_kind(kind) if kind else detect_kind(source)
    problems = LAYOUTS[model_kind].problems(source)
    if problems:
        raise ModelDirectoryError(
            f"{source} is not a complete {model_kind} model: {'; '.join(problems)} (expected "
            f"{LAYOUTS[model_kind].description})"
        )
    model_name = _check_name(name or source.name)
    base = root / model_kind
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_name}.import-", dir=base))
    try:
        shutil.copytree(
            source,
            staging,
            dirs_exist_ok=True,
            ignore=shutil.ignore_patterns(".git", ".cache", ".complete"),
        )
        return _install(staging, root, model_kind, model_name, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


# (repo id, target folder, revision, only these files or None for the whole repository)
def _import_gguf(source: Path, root: Path, name: str, force: bool) -> Path:
    """A GGUF file becomes `root/llm/<name>/<file>` (llama.cpp reads the one .gguf there)."""
    with source.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise ModelStoreError(
                f"{source} does not start with the GGUF magic; is it a complete download?"
            )
    model_name = _check_name(name)
    base = root / "llm"
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_name}.import-", dir=base))
    try:
        shutil.copy2(source, staging / source.name)
        return _install(staging, root, "llm", model_name, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


Downloader = Callable[[str, Path, str | None, tuple[str, ...] | None], None]


def hub_download(
    repo_id: str, target: Path, revision: str | None, files: tuple[str, ...] | None = None
) -> None:
    """Download a Hugging Face repository snapshot (or some of its files) into ``target``."""
    from huggingface_hub import snapshot_download

    snapshot_download(repo_id=repo_id, local_dir=str(target), revision=revision,
                      allow_patterns=list(files) if files else None)  # fmt: skip


def resolve_fetch_name(
    name: str, kind: str | None
) -> tuple[ModelKind, str, str, tuple[str, ...] | None]:
    """(kind, repo id, folder name, files to fetch or None) for a catalog name or a repo id."""
    entry = CATALOG.get(name)
    if entry is not None:
        if kind and kind != entry.kind:
            raise ModelStoreError(f"{name} is a {entry.kind} model, not {kind}")
        return entry.kind, entry.repo_id, name, (entry.file,) if entry.file else None
    if "/" not in name:
        known = ", ".join(sorted(CATALOG))
        raise ModelStoreError(
            f"unknown model {name!r}: use one of {known}, or a Hugging Face "
            "repo id (owner/name) with --kind"
        )
    if not kind:
        raise ModelStoreError(f"{name} is not in the catalog: pass --kind llm|stt|tts")
    return check_kind(kind), name, name.rsplit("/", 1)[-1].lower(), None


def fetch_model(
    name: str,
    root: Path,
    *,
    kind: str | None = None,
    folder: str | None = None,
    revision: str | None = None,
    force: bool = False,
    download: Downloader = hub_download,
) -> Path:
    """Download ``name`` into ``root/<kind>/<folder>``; refuses clearly when offline."""
    model_kind, repo_id, default_folder, files = resolve_fetch_name(name, kind)
    model_name = _check_name(folder or default_folder)
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ModelStoreError(
            "downloads are switched off (HF_HUB_OFFLINE is set): on an air-gapped host copy "
            f"the model folder over and run `morgan models import DIR --kind {model_kind}`; "
            "to download, unset HF_HUB_OFFLINE"
        )
    base = root / model_kind
    base.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{model_name}.fetch-", dir=base))
    try:
        try:
            download(repo_id, staging, revision, files)
        except Exception as exc:
            raise ModelStoreError(
                f"could not download {repo_id} ({type(exc).__name__}: {exc}); check the "
                "network and the repo id, or copy the model over and use `morgan models "
                "import`"
            ) from exc
        shutil.rmtree(staging / ".cache", ignore_errors=True)
        return _install(staging, root, model_kind, model_name, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
