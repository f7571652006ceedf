"""morgan-llm: build the app (``build_app``) and serve it (``main``, ``python -m morgan.llm``)."""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI

from morgan.llm.config import LLMSettings
from morgan.llm.engine import LLMEngine, make_engine
from morgan.llm.router import router
from morgan.llm.service import ChatService
from morgan.models.holder import ModelHolder
from morgan.models.service_app import BackgroundLoad, install_model_error_handler, model_meta
from morgan.models.slots import MeteredLimiter
from morgan.shared.app import create_app, run
from morgan.shared.config_loader import ConsulConfigLoader

YAML_PATH = Path("/etc/morgan/llm.yaml")


def build_app(
    settings: LLMSettings | None = None,
    loader: ConsulConfigLoader[LLMSettings] | None = None,
    engine: LLMEngine | None = None,
) -> FastAPI:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models come from the model directory only
    if settings is None:
        loader = loader or ConsulConfigLoader(LLMSettings, "llm", yaml_path=YAML_PATH)
        settings = loader.load()
    engine = engine or make_engine(settings)
    holder: ModelHolder[LLMEngine] = ModelHolder(
        engine.load, unloader=lambda e: e.unload(), service=settings.service_name,
        model=settings.model_id, idle_unload_seconds=settings.idle_unload_seconds,
    )
    limiter = MeteredLimiter(settings.max_concurrency, settings.max_queue,
                             service=settings.service_name)
    background = BackgroundLoad(holder)
    app = create_app(
        settings,
        routers=[router],
        ready_check=background.ready,
        on_startup=[background.start],
        on_shutdown=[background.stop],
        meta=model_meta(engine=engine.engine_name, model=settings.model_id,
                        device=engine.device, vram_mb=settings.vram_mb),
        config_loader=loader,
    )
    install_model_error_handler(app)
    app.state.model_holder = holder
    app.state.chat_service = ChatService(settings, holder, limiter)
    return app


def main() -> None:
    run(build_app())
