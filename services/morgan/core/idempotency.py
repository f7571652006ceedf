"""Idempotency-Key for turns: the same key from the same user is the same turn.

A client that sends ``Idempotency-Key`` may send the request again — and the gateway
may hand it to another core when the first one died mid-request — without the turn
being stored twice: the key fixes the turn's id (and, for a new conversation, the
conversation's id), PostgreSQL keeps one row per id, and a repeat of a stored turn
is answered from what was stored.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from morgan.core.exceptions import InvalidInputError
from morgan.core.storage.models import Turn

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_NAMESPACE = uuid.UUID("6d6f7267-616e-4b65-8974-75726e4b6579")


@dataclass(frozen=True)
class TurnKey:
    """The ids a key stands for: the turn's, and the conversation's when none is named."""

    key: str
    turn_id: str
    conversation_id: str


def turn_key(user_id: str, key: str | None) -> TurnKey | None:
    if key is None:
        return None
    base = f"{user_id}\x1f{key}"
    return TurnKey(
        key=key,
        turn_id=str(uuid.uuid5(_NAMESPACE, base)),
        conversation_id=str(uuid.uuid5(_NAMESPACE, f"{base}\x1fconversation")),
    )


def check_repeat(
    key: TurnKey, stored: Turn, conversation_id: str | None, user_text: str | None
) -> None:
    """A repeat must be the same request: same conversation and, for text, same words."""
    if conversation_id is not None and conversation_id != stored.conversation_id:
        raise InvalidInputError(
            f"{HEADER} {key.key!r} was used for a turn in conversation "
            f"{stored.conversation_id}, not {conversation_id}; send a new key for each turn"
        )
    if user_text is not None and user_text != stored.user_text:
        raise InvalidInputError(
            f"{HEADER} {key.key!r} was used for a different message; send a new key for each turn"
        )
