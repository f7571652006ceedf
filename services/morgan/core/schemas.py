"""Request and response bodies of core's public API."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

USER_ID_PATTERN = r"^[A-Za-z0-9_.@:-]+$"
USER_ID = Field(
    None, min_length=1, max_length=128, pattern=USER_ID_PATTERN,
    description="Who is speaking (letters, digits and _ . @ : -); with API keys on, the "
    "key's owner when left out, and only an admin key may name another user",
)  # fmt: skip


class Timings(BaseModel):
    """Milliseconds spent in each stage of a turn."""

    model_config = ConfigDict(extra="allow")

    stt_ms: float = 0.0
    context_ms: float = 0.0
    memory_ms: float = 0.0
    llm_ms: float = 0.0
    persist_ms: float = 0.0
    tts_ms: float = 0.0
    total_ms: float = 0.0


class TextTurnRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, description="What the user says (at most 10 000 characters).")
    user_id: str | None = USER_ID
    conversation_id: str | None = Field(None, description="Continue this conversation.")
    want_audio: bool = Field(False, description="Also speak the reply (WAV, base64).")

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("text is blank; send what the user said")
        if "\x00" in value:
            raise ValueError("text contains NUL (\\u0000) characters; remove them")
        return value


class TurnResponse(BaseModel):
    conversation_id: str
    turn_id: str
    text: str
    transcription: str | None = None
    audio_base64: str | None = None
    audio_format: str | None = None
    warning: str | None = Field(None, description="Set when a non-essential stage failed.")
    memories_used: int = 0
    timings: Timings


class TurnOut(BaseModel):
    id: str
    user_text: str
    assistant_text: str
    source: str
    created_at: datetime
    timings: dict[str, float]
    interrupted: bool = Field(
        False, description="The person spoke over the answer: assistant_text is what was said."
    )


class ConversationOut(BaseModel):
    id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    turn_count: int


class ConversationDetail(ConversationOut):
    turns: list[TurnOut]


class ConversationList(BaseModel):
    user_id: str
    conversations: list[ConversationOut]


class ResetRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    user_id: str | None = USER_ID
    conversation_id: str = Field(min_length=1, description="The conversation to forget.")


class ResetResponse(BaseModel):
    conversation_id: str
    turns_removed: int


class DeleteResponse(BaseModel):
    conversation_id: str
    deleted: bool


class MemoryHit(BaseModel):
    text: str
    score: float
    conversation_id: str
    created_at: str


class MemorySearchResponse(BaseModel):
    user_id: str
    query: str
    results: list[MemoryHit]
