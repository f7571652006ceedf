"""HTTP routes of morgan-tts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from morgan.tts.schemas import SpeechRequest
from morgan.tts.service import FORMATS, SpeechService

router = APIRouter()


def _service(request: Request) -> SpeechService:
    service: SpeechService = request.app.state.speech_service
    return service


@router.get("/voices")
async def voices(request: Request) -> dict[str, Any]:
    service = _service(request)
    settings = service.settings
    return {
        "voices": [
            {"id": v.id, "language": v.language, "sample_rate": v.sample_rate, "engine": "coqui"}
            for v in service.voices()
        ],
        "aliases": settings.voice_aliases,
        "default": settings.default_voice or None,
    }


@router.post("/v1/audio/speech")
async def speech(body: SpeechRequest, request: Request) -> StreamingResponse:
    """Audio streamed sentence by sentence: a WAV header first (length unknown), then PCM."""
    voice, fmt, chunks = await _service(request).open_stream(body)
    return StreamingResponse(
        chunks,
        media_type=FORMATS[fmt],
        headers={
            "X-Sample-Rate": str(voice.sample_rate),
            "X-Voice": voice.id,
            "Cache-Control": "no-cache",
        },
    )
