"""The browser client (services/morgan/core/client/): `/` and `/client/*`, static files
with no build step. They need no API key: the page asks for one and sends it itself."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

CLIENT_DIR = Path(__file__).resolve().parent / "client"
# Only this origin's scripts, styles and connections (its API and WebSocket).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def mount_client(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(
            CLIENT_DIR / "index.html",
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY},
        )

    app.mount("/client", StaticFiles(directory=CLIENT_DIR), name="client")
