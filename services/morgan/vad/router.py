"""HTTP and WebSocket routes of morgan-vad."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile, WebSocket

from morgan.models.errors import ModelRequestError
from morgan.models.stream_socket import serve_stream
from morgan.stt.audio import decode_audio
from morgan.vad.service import VADService, detector_config
from morgan.vad.streaming import StreamSession

router = APIRouter()


def _service(app_state: Any) -> VADService:
    service: VADService = app_state.vad_service
    return service


@router.post("/v1/vad")
async def detect(
    request: Request,
    file: UploadFile = File(..., description="WAV, FLAC, Ogg or MP3"),
    threshold: float | None = Form(None, ge=0.05, le=0.95),
    min_speech_ms: int | None = Form(None, ge=0, le=5000),
    min_silence_ms: int | None = Form(None, ge=32, le=10_000),
) -> dict[str, Any]:
    """Where speech is in a whole file: segments in seconds from its start."""
    service = _service(request.app.state)
    settings = service.settings
    data = await file.read(settings.max_upload_bytes + 1)
    if len(data) > settings.max_upload_bytes:
        raise ModelRequestError(
            413,
            f"upload is over the limit of {settings.max_upload_bytes} bytes; send a shorter "
            "or compressed clip",
            code="upload_too_large",
            param="file",
        )
    audio = decode_audio(data, max_seconds=settings.max_audio_seconds)
    config = detector_config(
        settings,
        threshold=threshold,
        min_speech_ms=min_speech_ms,
        min_silence_ms=min_silence_ms,
    )
    segments, elapsed = await service.segments(audio.samples, config)
    return {
        "duration": round(audio.duration, 3),
        "speech_seconds": round(sum(s.end - s.start for s in segments), 3),
        "segments": [{"start": round(s.start, 3), "end": round(s.end, 3)} for s in segments],
        "processing_seconds": round(elapsed, 4),
    }


@router.websocket("/v1/vad/stream")
async def stream(websocket: WebSocket) -> None:
    await serve_stream(websocket, StreamSession(_service(websocket.app.state)))
