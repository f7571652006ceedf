"""HTTP and WebSocket routes of morgan-stt."""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from fastapi import APIRouter, File, Form, Request, UploadFile, WebSocket
from fastapi.responses import PlainTextResponse

from morgan.models.errors import ModelRequestError
from morgan.models.stream_socket import serve_stream
from morgan.stt.audio import decode_audio, decode_pcm
from morgan.stt.schemas import TranscribeRequest
from morgan.stt.service import (
    TranscriptionService,
    check_language,
    check_response_format,
    transcription_body,
)
from morgan.stt.streaming import StreamingSession

router = APIRouter()


def _service(app_state: Any) -> TranscriptionService:
    service: TranscriptionService = app_state.transcription_service
    return service


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise ModelRequestError(
            413,
            f"upload is over the limit of {limit} bytes; send a shorter or compressed clip",
            code="upload_too_large",
            param="file",
        )
    return data


@router.post("/v1/audio/transcriptions", response_model=None)
async def transcriptions(
    request: Request,
    file: UploadFile = File(...),
    model: str | None = Form(None),
    language: str | None = Form(None),
    prompt: str | None = Form(None),
    response_format: str = Form("json"),
    temperature: float = Form(0.0, ge=0.0, le=1.0),
    vad_filter: bool | None = Form(None),
) -> dict[str, Any] | PlainTextResponse:
    # `model` is accepted and ignored: OpenAI clients send names like "whisper-1", and each
    # instance serves the one model it advertises in Consul.
    service = _service(request.app.state)
    fmt = check_response_format(response_format)
    code = check_language(language)
    data = await _read_upload(file, service.settings.max_upload_bytes)
    audio = decode_audio(data, max_seconds=service.settings.max_audio_seconds)
    started = time.perf_counter()
    result = await service.transcribe(
        audio, language=code, vad_filter=vad_filter, prompt=prompt, temperature=temperature
    )
    if fmt == "text":
        return PlainTextResponse(result.text + "\n")
    return transcription_body(result, fmt, time.perf_counter() - started)


@router.post("/transcribe")
async def transcribe_json(body: TranscribeRequest, request: Request) -> dict[str, Any]:
    service = _service(request.app.state)
    settings = service.settings
    if len(body.audio) > settings.max_upload_bytes * 4 // 3 + 4:
        raise ModelRequestError(
            413,
            f"audio is over the limit of {settings.max_upload_bytes} bytes; send a shorter clip",
            code="upload_too_large",
            param="audio",
        )
    try:
        data = base64.b64decode(body.audio, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ModelRequestError(
            400,
            f"audio is not valid base64 ({exc}); encode the file bytes with standard base64",
            param="audio",
        ) from exc
    code = check_language(body.language)
    if body.format == "pcm":
        audio = decode_pcm(
            data, sample_rate=body.sample_rate, max_seconds=settings.max_audio_seconds
        )
    else:
        audio = decode_audio(data, max_seconds=settings.max_audio_seconds)
    started = time.perf_counter()
    result = await service.transcribe(
        audio, language=code, vad_filter=body.vad_filter, prompt=body.prompt
    )
    return transcription_body(result, "verbose_json", time.perf_counter() - started)


@router.websocket("/ws/transcribe")
async def ws_transcribe(websocket: WebSocket) -> None:
    await serve_stream(websocket, StreamingSession(_service(websocket.app.state)))
