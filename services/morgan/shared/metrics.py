"""Prometheus metrics shared by every service (prometheus-client default registry)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

HTTP_REQUESTS_TOTAL = Counter(
    "morgan_http_requests_total",
    "HTTP requests served, by route template.",
    ["service", "route", "method", "status"],
)
HTTP_REQUEST_DURATION_SECONDS = Histogram(
    "morgan_http_request_duration_seconds",
    "Time to serve an HTTP request, by route template.",
    ["service", "route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
HTTP_REQUESTS_IN_FLIGHT = Gauge(
    "morgan_http_requests_in_flight",
    "HTTP requests being served now.",
    ["service"],
)
CONFIG_REJECTED_TOTAL = Counter(
    "morgan_config_rejected_total",
    "Configuration updates from Consul KV rejected as invalid (previous config kept).",
    ["service"],
)
UPSTREAM_BUSY_WAITS_TOTAL = Counter(
    "morgan_upstream_busy_waits_total",
    "Waits of a call's Retry-After because every instance of the target said busy.",
    ["target"],
)
UPSTREAM_RETRIES_TOTAL = Counter(
    "morgan_upstream_retries_total",
    "Calls to another service retried on another instance.",
    ["target", "reason"],
)
CONSUL_REGISTRATIONS_TOTAL = Counter(
    "morgan_consul_registrations_total",
    "Registrations of this service in Consul (re-registrations included).",
    ["service"],
)
TLS_CERTIFICATE_EXPIRY = Gauge(
    "morgan_tls_certificate_expiry_timestamp_seconds",
    "When this service's TLS certificate (kind=certificate) and the CA that signed it"
    " (kind=ca) end, as a Unix time.",
    ["service", "kind"],
)

UNMATCHED_ROUTE = "unmatched"


def render_latest() -> tuple[bytes, str]:
    """The exposition text and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
