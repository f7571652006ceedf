"""`EdgeMiddleware`: the ASGI layer in front of every Morgan app.

Per request it sets the request id (the caller's `X-Request-ID` when well formed, else a
fresh one) and the user id, checks the API key on protected prefixes (HTTP and websocket),
counts in-flight requests, records the request counter and duration histogram by route
template, writes the access log, and answers an unhandled exception with a JSON 500.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from morgan.shared.auth import ApiKeyStore, AuthError, key_from_headers, key_from_subprotocols
from morgan.shared.clients import FailureBudget, client_of_scope
from morgan.shared.logging import REQUEST_ID_HEADER, request_id_var, user_id_var
from morgan.shared.metrics import (
    HTTP_REQUEST_DURATION_SECONDS,
    HTTP_REQUESTS_IN_FLIGHT,
    HTTP_REQUESTS_TOTAL,
    UNMATCHED_ROUTE,
)
from morgan.shared.settings import ServiceSettings

log = logging.getLogger("morgan.app")
access_log = logging.getLogger("morgan.access")

PUBLIC_PATHS = frozenset({"/health", "/ready", "/metrics"})
_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def _json_body(
    status: int, error: str, detail: Any = None
) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    import json

    body = json.dumps({"error": error, "detail": detail}, default=str).encode()
    return body, [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]


INSTANCE_HEADER = b"x-morgan-instance"
# A key check that failed: 401 names a bad key, 403 a good key of the wrong scope, 503 a
# key store that cannot be asked.
_AUTH_STATUS = {"scope": 403, "in_url": 400, "throttled": 429, "unavailable": 503}
_AUTH_ERROR = {400: "bad request", 401: "unauthorized", 403: "forbidden",
               429: "too many requests", 503: "unavailable"}  # fmt: skip


class EdgeMiddleware:
    """Request ids, user ids, metrics, access log, API-key auth and last-resort 500s."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        fastapi_app: FastAPI,
        auth_required_prefixes: Sequence[str],
        accepted_scopes: frozenset[str],
    ) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.prefixes = tuple(auth_required_prefixes)
        self.accepted_scopes = accepted_scopes
        self.failures = FailureBudget(lambda: self._settings.auth_failures_per_minute)

    @property
    def _settings(self) -> ServiceSettings:
        settings: ServiceSettings = self.fastapi_app.state.settings
        return settings

    def _needs_auth(self, path: str) -> bool:
        if path in PUBLIC_PATHS:
            return False
        settings: ServiceSettings = self.fastapi_app.state.settings
        if not settings.auth_enabled:
            return False
        return any(path == p or path.startswith(p.rstrip("/") + "/") for p in self.prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        rid = headers.get(REQUEST_ID_HEADER.lower(), "")
        if not _REQUEST_ID_OK.match(rid):
            rid = uuid.uuid4().hex
        rid_token = request_id_var.set(rid)
        uid_token = user_id_var.set(None)
        try:
            if scope["type"] == "websocket":
                await self._websocket(scope, receive, send, headers)
            else:
                await self._http(scope, receive, send, headers, rid)
        finally:
            request_id_var.reset(rid_token)
            user_id_var.reset(uid_token)

    async def _authenticate(
        self, scope: Scope, headers: Mapping[str, str], websocket: bool
    ) -> AuthError | None:
        store: ApiKeyStore | None = getattr(self.fastapi_app.state, "api_key_store", None)
        key = key_from_headers(headers)
        if not key and websocket:
            key = key_from_subprotocols(headers)
        if "api_key=" in scope.get("query_string", b"").decode("latin-1"):
            return AuthError(
                "in_url",
                "API keys are not accepted in the URL (they end up in logs and browser "
                "history); send X-API-Key or Authorization: Bearer <key>, or on a browser "
                "WebSocket the subprotocols 'morgan' and 'bearer.<key>'",
            )
        if not key:
            return AuthError(
                "missing", "missing API key: send X-API-Key or Authorization: Bearer <key>"
            )
        if store is None:
            return AuthError("unconfigured", "API keys are not configured on this service")
        client = client_of_scope(scope, getattr(self._settings, "trusted_proxies", ()))
        if (wait := self.failures.retry_after(client)) is not None:
            return AuthError(
                "throttled",
                f"{client} failed more than {self._settings.auth_failures_per_minute} API key "
                f"checks this minute; retry after {wait} s with a valid key",
                retry_after=wait,
            )
        try:
            record = await store.averify(key)
        except AuthError as exc:
            self.failures.failed(client)
            return exc
        except Exception as exc:
            log.warning("API key check failed: %s", exc)
            return AuthError(
                "unavailable", "cannot check API keys right now (Consul unreachable); retry shortly"
            )
        if not self.accepted_scopes.intersection(record.scopes):
            return AuthError(
                "scope",
                f"API key {record.key_id} has scope {', '.join(record.scopes)}; this service "
                f"accepts only {' or '.join(sorted(self.accepted_scopes))} keys",
            )
        user_id_var.set(record.owner)
        scope.setdefault("state", {})["api_key"] = record
        return None

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, headers: Mapping[str, str]
    ) -> None:
        if self._needs_auth(scope["path"]):
            err = await self._authenticate(scope, headers, websocket=True)
            if err is not None:
                log.info("websocket refused: %s", err.message)
                await send({"type": "websocket.close", "code": 1008, "reason": err.message[:120]})
                return
        await self.app(scope, receive, send)

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, headers: Mapping[str, str], rid: str
    ) -> None:
        settings: ServiceSettings = self.fastapi_app.state.settings
        service = settings.service_name
        method = scope["method"]
        state = {"status": 500, "started": False}
        rid_header = (REQUEST_ID_HEADER.lower().encode(), rid.encode())

        registry = getattr(self.fastapi_app.state, "registry", None)
        # Which replica answered (its Consul service id): for operators behind the gateway.
        instance = [(INSTANCE_HEADER, registry.service_id.encode())] if registry else []

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message["headers"] = [*message.get("headers", []), rid_header, *instance]
            await send(message)

        async def send_json(
            status: int, error: str, detail: Any = None, extra: Sequence[tuple[bytes, bytes]] = ()
        ) -> None:
            body, hdrs = _json_body(status, error, detail)
            await send_wrapper(
                {"type": "http.response.start", "status": status, "headers": [*hdrs, *extra]}
            )
            await send_wrapper({"type": "http.response.body", "body": body})

        gauge = HTTP_REQUESTS_IN_FLIGHT.labels(service)
        gauge.inc()
        start = time.perf_counter()
        try:
            if self._needs_auth(scope["path"]):
                err = await self._authenticate(scope, headers, websocket=False)
                if err is not None:
                    status = _AUTH_STATUS.get(err.reason, 401)
                    extra = [(b"www-authenticate", b"Bearer")] if status == 401 else []
                    if err.retry_after is not None:
                        extra.append((b"retry-after", str(err.retry_after).encode()))
                    await send_json(status, _AUTH_ERROR[status], err.message, extra)
                    return
            try:
                await self.app(scope, receive, send_wrapper)
            except Exception:
                log.exception("unhandled error serving %s %s", method, scope["path"])
                if not state["started"]:
                    await send_json(
                        500,
                        "internal error",
                        f"unexpected error; quote request id {rid} when reporting it",
                    )
        finally:
            elapsed = time.perf_counter() - start
            gauge.dec()
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            if state["status"] == 404 and route is None:
                template = UNMATCHED_ROUTE
            status_text = str(state["status"])
            HTTP_REQUESTS_TOTAL.labels(service, template, method, status_text).inc()
            HTTP_REQUEST_DURATION_SECONDS.labels(service, template, method).observe(elapsed)
            if scope["path"] not in PUBLIC_PATHS:
                access_log.info(
                    "%s %s %s",
                    method,
                    template,
                    status_text,
                    extra={
                        "method": method,
                        "route": template,
                        "path": scope["path"],
                        "status": int(status_text),
                        "duration_ms": round(elapsed * 1000, 2),
                    },
                )
