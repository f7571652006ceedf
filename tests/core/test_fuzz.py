"""core's OpenAPI document fuzzed with schemathesis: every operation, a bounded number of
generated requests each (Hypothesis derandomized), with a valid admin key.
No answer may be a 5xx, and every documented answer must match its schema."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.core.conftest import ApiKeys
from tests.core.servers import CoreServer
from tests.harness.fuzz import fuzz_schema

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]


@pytest.fixture(scope="module")
def core_overrides() -> dict[str, Any]:
    # The fuzz sends hundreds of requests a minute from one client: no rate limits here.
    return {"rate_limit_per_minute": 0, "audio_rate_limit_per_minute": 0}


async def test_core_openapi_fuzz(core: CoreServer, api_keys: ApiKeys) -> None:
    async with httpx.AsyncClient(base_url=core.url) as client:
        document = (await client.get("/openapi.json")).json()
    # The fuzz is blocking (requests); the server runs on this loop, so it goes to a thread.
    report = await asyncio.to_thread(
        fuzz_schema, document, core.url, api_keys.headers, max_examples=15
    )
    print(report.summary())
    assert report.operations >= 7, report.summary()
    assert not report.failures, report.summary()
