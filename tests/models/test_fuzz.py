"""Each model service's OpenAPI document fuzzed with schemathesis (tiny models, served over
real HTTP): a bounded number of valid and invalid generated requests per operation. No
answer may be a 5xx, and every documented answer must match its schema."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from morgan.llm.app import build_app as llm_app
from morgan.llm.config import LLMSettings
from morgan.stt.app import build_app as stt_app
from morgan.stt.config import STTSettings
from morgan.tts.app import build_app as tts_app
from morgan.tts.config import TTSSettings
from morgan.vad.app import build_app as vad_app
from morgan.vad.config import VADSettings

from tests.harness.fuzz import fuzz_schema
from tests.models.conftest import local_settings
from tests.shared.helpers import UvicornThread

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LOCAL: dict[str, Any] = dict(local_settings())
APPS: dict[str, Callable[[Path], FastAPI]] = {
    "llm": lambda d: llm_app(
        LLMSettings(
            model_dir=d,
            model="tiny",
            engine="transformers",
            max_tokens_limit=16,
            **LOCAL,
        )
    ),
    "stt": lambda d: stt_app(STTSettings(model_dir=d, model="tiny", **LOCAL)),
    "tts": lambda d: tts_app(TTSSettings(model_dir=d, **LOCAL)),
    "vad": lambda d: vad_app(VADSettings(**LOCAL)),
}


# The HTTP operations each documents (morgan-vad's stream is a WebSocket, not in OpenAPI).
OPERATIONS = {"llm": 2, "stt": 2, "tts": 2, "vad": 1}


@pytest.mark.parametrize("service", sorted(APPS))
def test_model_service_openapi_fuzz(service: str, model_dir: Path) -> None:
    with UvicornThread(APPS[service](model_dir)) as server:
        deadline = time.monotonic() + 120
        while httpx.get(f"{server.url}/ready").status_code != 200:
            assert time.monotonic() < deadline, f"{service} never became ready"
            time.sleep(0.2)
        document: dict[str, Any] = httpx.get(f"{server.url}/openapi.json").json()
        report = fuzz_schema(document, server.url, {}, max_examples=10)
    print(report.summary())
    assert report.operations >= OPERATIONS[service], report.summary()
    assert not report.failures, report.summary()
