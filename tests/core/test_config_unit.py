"""CoreSettings: defaults, limits, and loading from the environment the way deployments do."""

from __future__ import annotations

import pytest
from morgan.core.app import make_cache
from morgan.core.config import CoreSettings
from morgan.shared.config_loader import ConsulConfigLoader
from morgan.shared.consul_client import ConsulClientFactory
from pydantic import ValidationError

from tests.harness.ports import free_port

pytestmark = pytest.mark.unit


def test_defaults_match_the_contract() -> None:
    s = CoreSettings()
    assert s.service_name == "morgan-core" and s.port == 8000
    assert (s.max_inflight, s.postgres_pool_min, s.postgres_pool_max) == (50, 5, 20)
    assert s.cache_ttl_seconds == 3600
    assert s.max_text_chars == 10_000
    assert s.max_audio_bytes == 25 * 1024 * 1024 and s.max_audio_seconds == 300
    assert (s.llm_service, s.stt_service, s.tts_service) == ("morgan-llm", "morgan-stt",
                                                             "morgan-tts")  # fmt: skip
    assert not make_cache(s).enabled  # no Redis configured: cache off, not an error


def test_pool_bounds_are_checked_with_a_fix() -> None:
    with pytest.raises(ValidationError, match="lower the first or raise the second"):
        CoreSettings(postgres_pool_min=30, postgres_pool_max=20)
    with pytest.raises(ValidationError):
        CoreSettings(max_inflight=0)
    with pytest.raises(ValidationError):
        CoreSettings(surprise=1)  # type: ignore[call-arg]


def test_environment_overrides_as_deployments_set_them() -> None:
    # Consul is not running on this port: the loader falls back to env + defaults.
    loader = ConsulConfigLoader(
        CoreSettings, "core", ConsulClientFactory.from_env(f"127.0.0.1:{free_port()}"),
        environ={
            "MORGAN_CORE_POSTGRES_DSN": "postgresql://m:secret@db:5432/morgan",
            "MORGAN_CORE_REDIS_CLUSTER_NODES": '["redis-1:6379", "redis-2:6379"]',
            "MORGAN_CORE_MAX_INFLIGHT": "7",
            "MORGAN_CORE_QDRANT_URL": "http://qdrant:6333",
        },
    )  # fmt: skip
    s = loader.load()
    assert s.max_inflight == 7
    assert s.redis_cluster_nodes == ["redis-1:6379", "redis-2:6379"]
    assert s.postgres_dsn.get_secret_value().endswith("@db:5432/morgan")
    assert "secret" not in repr(s)  # the DSN's password never shows in logs
    cache = make_cache(s)
    assert cache.enabled
    bad = s.model_copy(update={"redis_cluster_nodes": ["no-port"]})
    with pytest.raises(ValueError, match="host:port"):
        make_cache(bad)
