"""HTTP routes of morgan-llm (OpenAI-compatible)."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from morgan.llm.schemas import ChatCompletionRequest, ModelCard, ModelList
from morgan.llm.service import ChatService

router = APIRouter()
_STARTED = int(time.time())


def _service(request: Request) -> ChatService:
    service: ChatService = request.app.state.chat_service
    return service


@router.get("/v1/models")
async def list_models(request: Request) -> ModelList:
    service = _service(request)
    return ModelList(data=[ModelCard(id=service.settings.model_id, created=_STARTED)])


@router.post("/v1/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> dict[str, object] | StreamingResponse:
    service = _service(request)
    if body.stream:
        events = await service.open_stream(body)
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return await service.complete(body)
