"""Exception handlers that answer errors as JSON `{"error": ..., "detail": ...}`.

Request validation errors become 422 with the first problem in `error` and all of them in
`detail`; HTTP exceptions keep their status, detail and headers.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(p) for p in first["loc"])
        return JSONResponse(
            status_code=422,
            content={"error": f"invalid request: {where}: {first['msg']}", "detail": errors},
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        error = detail if isinstance(detail, str) else f"HTTP {exc.status_code}"
        return JSONResponse(
            status_code=exc.status_code,
            content={"error": error, "detail": detail},
            headers=getattr(exc, "headers", None),
        )
