"""Traefik static and dynamic configuration for the gateway."""

from __future__ import annotations

from typing import Any

import yaml

from infra.configs.consul import AGENT_PORTS
from infra.model import TLS_DIR, SecretFile
from infra.placement import Plan

PING_PORT = 8082
DYNAMIC_DIR = "/etc/traefik/dynamic"
DASHBOARD_USERS = SecretFile("TRAEFIK_DASHBOARD_USERS", "traefik_dashboard_users")
CORE_SERVICE = "morgan-core@consulcatalog"
HEALTH_INTERVAL = "5s"
CATALOG_REFRESH = "5s"
STICKY_COOKIE = "morgan_affinity"
RETRY_ATTEMPTS = 3
IDEMPOTENCY_HEADER = "Idempotency-Key"  # core's, see morgan.core.idempotency


# The tag Traefik's consulCatalog provider requires (its constraint): a service in the
# catalogue is routed only when Morgan registered it with this tag, whatever other
# traefik.* tags it carries.
GATEWAY_TAG = "morgan.gateway"


def core_consul_tags(plan: Plan) -> list[str]:
    """Tags core registers with so that Traefik's consulCatalog provider exposes it."""
    tags = [
        GATEWAY_TAG,
        "traefik.enable=true",
        f"traefik.http.services.morgan-core.loadbalancer.sticky.cookie.name={STICKY_COOKIE}",
        "traefik.http.services.morgan-core.loadbalancer.sticky.cookie.secure=true",
        "traefik.http.services.morgan-core.loadbalancer.sticky.cookie.httpOnly=true",
        "traefik.http.services.morgan-core.loadbalancer.healthcheck.path=/health",
        # A dead or draining core leaves the gateway within ~5 s, before Consul's catalogue
        # (refreshed every 5 s) even says so.
        f"traefik.http.services.morgan-core.loadbalancer.healthcheck.interval={HEALTH_INTERVAL}",
        "traefik.http.services.morgan-core.loadbalancer.healthcheck.timeout=2s",
    ]
    if plan.config.security.internal_tls:
        tags += [
            "traefik.http.services.morgan-core.loadbalancer.server.scheme=https",
            "traefik.http.services.morgan-core.loadbalancer.serversTransport=morgan-internal@file",
        ]
    return tags


def static_config(plan: Plan) -> dict[str, Any]:
    cfg = plan.config
    tls = cfg.security.internal_tls
    endpoint: dict[str, Any] = {
        "address": f"127.0.0.1:{AGENT_PORTS['https'] if tls else AGENT_PORTS['http']}",
    }
    if tls:
        endpoint["scheme"] = "https"
        endpoint["tls"] = {"ca": f"{TLS_DIR}/ca.pem"}
    return {
        "entryPoints": {
            "web": {
                "address": f":{cfg.gateway.http_port}",
                "http": {
                    "redirections": {
                        "entryPoint": {"to": "websecure", "scheme": "https", "permanent": True}
                    }
                },
            },
            "websecure": {"address": f":{cfg.gateway.https_port}", "http": {"tls": {}}},
            "ping": {"address": f"127.0.0.1:{PING_PORT}"},
        },
        "ping": {"entryPoint": "ping"},
        "api": {"dashboard": True},
        "metrics": {"prometheus": {"entryPoint": "ping"}},
        "providers": {
            "consulCatalog": {
                "exposedByDefault": False,
                "constraints": f"Tag(`{GATEWAY_TAG}`)",
                "endpoint": endpoint,
                "refreshInterval": CATALOG_REFRESH,
            },
            "file": {"directory": DYNAMIC_DIR, "watch": True},
        },
        "log": {"format": "json", "level": "INFO"},
        "accessLog": {"format": "json"},
    }


def _keyed_router(name: str, rule: str, rate_limit: str, priority: int) -> dict[str, Any]:
    """The router for requests that carry an Idempotency-Key (and so may be sent again to
    another core after a failure mid-request), ahead of the one for those that do not."""
    return {
        name: {
            "rule": f"({rule}) && HeaderRegexp(`{IDEMPOTENCY_HEADER}`, `.+`)",
            "entryPoints": ["websecure"],
            "middlewares": [rate_limit, "retry-keyed", "security-headers"],
            "service": CORE_SERVICE,
            "tls": {},
            "priority": priority,
        }
    }


def dynamic_config(plan: Plan) -> dict[str, Any]:
    """Routers to core (found in the Consul catalog), rate limits, dashboard auth and TLS."""
    cfg = plan.config
    domain = cfg.domain
    api_rule = "PathPrefix(`/api`) && !PathPrefix(`/api/audio`)"
    http: dict[str, Any] = {
        "middlewares": {
            "api-rate-limit": {
                "rateLimit": {
                    "average": cfg.gateway.api_rate_per_minute,
                    "period": "1m",
                    "burst": cfg.gateway.api_rate_per_minute,
                    "sourceCriterion": {"ipStrategy": {"depth": 0}},
                }
            },
            "audio-rate-limit": {
                "rateLimit": {
                    "average": cfg.gateway.audio_rate_per_minute,
                    "period": "1m",
                    "burst": cfg.gateway.audio_rate_per_minute,
                    "sourceCriterion": {"ipStrategy": {"depth": 0}},
                }
            },
            # A core that is gone but still listed (nothing of the request was sent): the
            # request goes to another core.
            "retry-elsewhere": {"retry": {"attempts": RETRY_ATTEMPTS, "initialInterval": "100ms"}},
            # A request with an Idempotency-Key whose core died mid-request (Traefik answers
            # 502) goes to another core too: the key makes the repeat the same turn.
            "retry-keyed": {
                "retry": {
                    "attempts": RETRY_ATTEMPTS,
                    "initialInterval": "100ms",
                    "status": ["502"],
                    "retryNonIdempotentMethod": True,
                }
            },
            "dashboard-auth": {"basicAuth": {"usersFile": DASHBOARD_USERS.path}},
            "security-headers": {
                "headers": {"stsSeconds": 31536000, "contentTypeNosniff": True, "frameDeny": True}
            },
        },
        "routers": {
            "morgan-api": {
                "rule": api_rule,
                "entryPoints": ["websecure"],
                "middlewares": ["api-rate-limit", "retry-elsewhere", "security-headers"],
                "service": CORE_SERVICE,
                "tls": {},
            },
            "morgan-audio": {
                "rule": "PathPrefix(`/api/audio`)",
                "entryPoints": ["websecure"],
                "middlewares": ["audio-rate-limit", "retry-elsewhere", "security-headers"],
                "service": CORE_SERVICE,
                "tls": {},
                "priority": 1000,
            },
            **_keyed_router("morgan-api-keyed", api_rule, "api-rate-limit", priority=500),
            **_keyed_router(
                "morgan-audio-keyed", "PathPrefix(`/api/audio`)", "audio-rate-limit", 1001
            ),
            "morgan-ws": {
                "rule": "PathPrefix(`/ws`)",
                "entryPoints": ["websecure"],
                "middlewares": ["api-rate-limit"],
                "service": CORE_SERVICE,
                "tls": {},
            },
            # The browser client core serves: its page and static files (no key needed).
            "morgan-client": {
                "rule": "Path(`/`) || PathPrefix(`/client/`)",
                "entryPoints": ["websecure"],
                "middlewares": ["api-rate-limit", "security-headers"],
                "service": CORE_SERVICE,
                "tls": {},
            },
            "morgan-health": {
                "rule": "Path(`/health`) || Path(`/ready`)",
                "entryPoints": ["websecure"],
                "service": CORE_SERVICE,
                "tls": {},
            },
            "traefik-dashboard": {
                "rule": f"Host(`traefik.{domain}`)",
                "entryPoints": ["websecure"],
                "middlewares": ["dashboard-auth"],
                "service": "api@internal",
                "tls": {},
            },
        },
    }
    document: dict[str, Any] = {"http": http}
    if cfg.security.internal_tls:
        http["serversTransports"] = {
            "morgan-internal": {
                "rootCAs": [f"{TLS_DIR}/ca.pem"],
                "certificates": [
                    {"certFile": f"{TLS_DIR}/cert.pem", "keyFile": f"{TLS_DIR}/key.pem"}
                ],
                "serverName": "morgan-core",
            }
        }
        document["tls"] = {
            "certificates": [{"certFile": f"{TLS_DIR}/cert.pem", "keyFile": f"{TLS_DIR}/key.pem"}],
            "stores": {
                "default": {
                    "defaultCertificate": {
                        "certFile": f"{TLS_DIR}/cert.pem",
                        "keyFile": f"{TLS_DIR}/key.pem",
                    }
                }
            },
            "options": {"default": {"minVersion": "VersionTLS12"}},
        }
    return document


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False)
