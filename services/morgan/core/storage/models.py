"""Plain records that the storage layer hands out."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class Turn:
    """One exchange: what the user said and what Morgan answered."""

    id: str
    conversation_id: str
    user_text: str
    assistant_text: str
    source: str
    created_at: datetime
    timings: dict[str, float] = field(default_factory=dict)
    # The person spoke over the answer (hands-free): assistant_text is what was said so far.
    interrupted: bool = False

    def to_cache(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "user_text": self.user_text,
            "assistant_text": self.assistant_text,
            "source": self.source,
            "created_at": self.created_at.isoformat(),
            "timings": self.timings,
            "interrupted": self.interrupted,
        }

    @classmethod
    def from_cache(cls, data: dict[str, Any]) -> Turn:
        return cls(
            id=str(data["id"]),
            conversation_id=str(data["conversation_id"]),
            user_text=str(data["user_text"]),
            assistant_text=str(data["assistant_text"]),
            source=str(data["source"]),
            created_at=datetime.fromisoformat(str(data["created_at"])),
            timings={k: float(v) for k, v in dict(data.get("timings") or {}).items()},
            interrupted=bool(data.get("interrupted", False)),
        )


@dataclass(frozen=True)
class Conversation:
    id: str
    user_id: str
    created_at: datetime
    updated_at: datetime
    turn_count: int = 0
