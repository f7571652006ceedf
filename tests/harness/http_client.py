"""Minimal HTTP client for readiness checks: stdlib only, never uses a proxy."""

from __future__ import annotations

import urllib.error
import urllib.request

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(
    url: str, *, method: str = "GET", data: bytes | None = None, timeout: float = 2.0
) -> tuple[int, bytes]:
    """Return (status, body); HTTP error statuses are returned, not raised."""
    request = urllib.request.Request(url, method=method, data=data)
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
