"""morgan-vad: build the app (``build_app``) and serve it (``main``, ``python -m morgan.vad``)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from morgan.models.service_app import build_model_app, current_settings
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.server import run
from morgan.vad.config import VADSettings
from morgan.vad.engine import SileroModel, bundled_model_path
from morgan.vad.router import router
from morgan.vad.service import VADService

YAML_PATH = Path("/etc/morgan/vad.yaml")


def build_app(
    settings: VADSettings | None = None,
    loader: ConsulConfigLoader[VADSettings] | None = None,
) -> FastAPI:
    if settings is None:
        loader = loader or ConsulConfigLoader(VADSettings, "vad", yaml_path=YAML_PATH)
        settings = loader.load()
    path = bundled_model_path()
    model = SileroModel(path, threads=settings.cpu_threads)
    parts = build_model_app(
        settings,
        engine=model,
        load=model.load,
        model_name=path.stem,
        router=router,
        loader=loader,
        auth_required_prefixes=("/v1",),
    )
    parts.app.state.vad_service = VADService(
        current_settings(parts.app), parts.holder, parts.limiter
    )
    return parts.app


def main() -> None:
    run(build_app())
