"""core's HTTP API: turns, conversations and memory inspection (all behind API keys)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse

from morgan.core.audio import inspect_audio
from morgan.core.dependencies import get_memory, get_orchestrator
from morgan.core.exceptions import NotFoundError, PayloadTooLargeError, StorageUnavailableError
from morgan.core.idempotency import HEADER, KEY_PATTERN, REPLAYED_HEADER, turn_key
from morgan.core.memory.store import SemanticMemory
from morgan.core.orchestrator import Orchestrator, TurnResult
from morgan.core.principal import acting_user, conversation_owner
from morgan.core.schemas import (
    USER_ID_PATTERN,
    ConversationDetail,
    ConversationList,
    ConversationOut,
    DeleteResponse,
    MemoryHit,
    MemorySearchResponse,
    ResetRequest,
    ResetResponse,
    TextTurnRequest,
    TurnOut,
    TurnResponse,
)
from morgan.core.storage.conversations import DatabaseUnavailableError

router = APIRouter(prefix="/api", tags=["core"])

Orch = Annotated[Orchestrator, Depends(get_orchestrator)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias=HEADER, pattern=KEY_PATTERN,
        description="one per turn (1-128 of A-Z a-z 0-9 . _ : -): sending the turn again "
        "with the same key answers the stored turn instead of storing a second one",
    ),
]  # fmt: skip
UserQuery = Annotated[
    str | None,
    Query(min_length=1, max_length=128, pattern=USER_ID_PATTERN,
          description="whose data; the key's owner when left out (only an admin key may "
          "name another user)"),
]  # fmt: skip
_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "missing, unknown, expired or revoked API key"},
    403: {"description": "the key may not act for the user_id named"},
    404: {"description": "unknown conversation (or another user's)"},
    413: {"description": "text or audio too large"},
    422: {"description": "invalid input"},
    503: {"description": "over max_inflight (see Retry-After) or a dependency is down"},
}


@router.post("/text", response_model=TurnResponse, responses=_ERRORS)
async def text_turn(
    request: Request, body: TextTurnRequest, orch: Orch, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """One text turn: context + memory -> LLM -> (TTS) ; committed before the reply."""
    user = acting_user(request, body.user_id)
    limit = orch.settings.max_text_chars
    if len(body.text) > limit:
        raise PayloadTooLargeError(
            f"text is {len(body.text)} characters; the limit is {limit} — send a shorter message"
        )
    with orch.limiter.slot(await orch.models.llm_capacity()):
        result = await orch.text_turn(
            user, body.text, body.conversation_id, want_audio=body.want_audio,
            key=turn_key(user, idempotency_key),
        )  # fmt: skip
    return _turn_response(result)


@router.post("/audio", response_model=TurnResponse, responses=_ERRORS)
async def audio_turn(
    request: Request,
    orch: Orch,
    file: Annotated[UploadFile, File(description="wav, flac, ogg or mp3; <= 25 MB, <= 5 min")],
    user_id: Annotated[
        str | None, Form(min_length=1, max_length=128, pattern=USER_ID_PATTERN)
    ] = None,
    language: Annotated[str | None, Form(max_length=16)] = None,
    conversation_id: Annotated[str | None, Form()] = None,
    want_audio: Annotated[bool, Form()] = True,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """One spoken turn: STT -> context + memory -> LLM -> TTS."""
    user = acting_user(request, user_id)
    s = orch.settings
    data = await file.read(s.max_audio_bytes + 1)
    info = inspect_audio(
        data,
        content_type=file.content_type,
        filename=file.filename,
        max_bytes=s.max_audio_bytes,
        max_seconds=s.max_audio_seconds,
    )
    with orch.limiter.slot(await orch.models.llm_capacity()):
        result = await orch.audio_turn(
            user,
            data,
            filename=file.filename or f"audio.{info.format}",
            content_type=file.content_type or f"audio/{info.format}",
            language=language,
            conversation_id=conversation_id,
            want_audio=want_audio,
            key=turn_key(user, idempotency_key),
        )
    return _turn_response(result)


def _of(owner: str | None) -> str:
    return f" of user {owner}" if owner else ""


def _turn_response(result: TurnResult) -> JSONResponse:
    headers = {REPLAYED_HEADER: "true"} if result.replayed else None
    return JSONResponse(result.to_response(), headers=headers)


def _storage_error(exc: DatabaseUnavailableError) -> StorageUnavailableError:
    return StorageUnavailableError(str(exc), headers={"Retry-After": "2"})


@router.get("/conversations/{conversation_id}", response_model=ConversationDetail,
            responses=_ERRORS)  # fmt: skip
async def get_conversation(
    request: Request, conversation_id: str, orch: Orch, user_id: UserQuery = None
) -> ConversationDetail:
    owner = conversation_owner(request, user_id)
    repo = orch.store.repo
    try:
        conv = await repo.get_conversation(conversation_id)
        owned = conv is not None and owner in (None, conv.user_id)
        turns = await repo.all_turns(conversation_id) if owned else []
    except DatabaseUnavailableError as exc:
        raise _storage_error(exc) from exc
    if conv is None or not owned:
        raise NotFoundError(f"no conversation {conversation_id}{_of(owner)}; list them with "
                            "GET /api/conversations")  # fmt: skip
    return ConversationDetail(
        id=conv.id, user_id=conv.user_id, created_at=conv.created_at,
        updated_at=conv.updated_at, turn_count=conv.turn_count,
        turns=[TurnOut(id=t.id, user_text=t.user_text, assistant_text=t.assistant_text,
                       source=t.source, created_at=t.created_at, timings=t.timings,
                       interrupted=t.interrupted)
               for t in turns],
    )  # fmt: skip


@router.get("/conversations", response_model=ConversationList, responses=_ERRORS)
async def list_conversations(
    request: Request,
    orch: Orch,
    user_id: UserQuery = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ConversationList:
    user = acting_user(request, user_id)
    try:
        convs = await orch.store.repo.list_conversations(user, limit)
    except DatabaseUnavailableError as exc:
        raise _storage_error(exc) from exc
    return ConversationList(
        user_id=user,
        conversations=[ConversationOut(id=c.id, user_id=c.user_id, created_at=c.created_at,
                                       updated_at=c.updated_at, turn_count=c.turn_count)
                       for c in convs],
    )  # fmt: skip


@router.delete("/conversations/{conversation_id}", response_model=DeleteResponse,
               responses=_ERRORS)  # fmt: skip
async def delete_conversation(
    request: Request, conversation_id: str, orch: Orch, user_id: UserQuery = None
) -> DeleteResponse:
    owner = conversation_owner(request, user_id)
    repo = orch.store.repo
    try:
        conv = await repo.get_conversation(conversation_id)
        deleted = conv is not None and owner in (None, conv.user_id)
        deleted = deleted and await repo.delete_conversation(conversation_id)
    except DatabaseUnavailableError as exc:
        raise _storage_error(exc) from exc
    if not deleted:
        raise NotFoundError(f"no conversation {conversation_id}{_of(owner)} to delete")
    await orch.store.cache.invalidate(conversation_id)
    if orch.memory is not None:
        await orch.memory.delete_conversation(conversation_id)
    return DeleteResponse(conversation_id=conversation_id, deleted=True)


@router.post("/conversation/reset", response_model=ResetResponse, responses=_ERRORS)
async def reset_conversation(request: Request, body: ResetRequest, orch: Orch) -> ResetResponse:
    """Forget a conversation's turns (the conversation id stays usable)."""
    owner = conversation_owner(request, body.user_id)
    repo = orch.store.repo
    try:
        conv = await repo.get_conversation(body.conversation_id)
        if conv is None or owner not in (None, conv.user_id):
            raise NotFoundError(f"no conversation {body.conversation_id}{_of(owner)}")
        removed = await repo.clear_turns(conv.id)
    except DatabaseUnavailableError as exc:
        raise _storage_error(exc) from exc
    await orch.store.cache.invalidate(conv.id)
    return ResetResponse(conversation_id=conv.id, turns_removed=removed)


@router.get("/memory/search", response_model=MemorySearchResponse, responses=_ERRORS)
async def search_memory(
    request: Request,
    memory: Annotated[SemanticMemory, Depends(get_memory)],
    q: Annotated[str, Query(min_length=1, max_length=10_000)],
    user_id: UserQuery = None,
    k: Annotated[int, Query(ge=1, le=50)] = 5,
) -> MemorySearchResponse:
    user = acting_user(request, user_id)
    if not q.strip():
        from morgan.core.exceptions import InvalidInputError

        raise InvalidInputError("q is blank; send the text to search for")
    hits = await memory.search_similar(user, q, k)
    return MemorySearchResponse(
        user_id=user, query=q,
        results=[MemoryHit(text=h.text, score=h.score, conversation_id=h.conversation_id,
                           created_at=h.created_at) for h in hits],
    )  # fmt: skip
