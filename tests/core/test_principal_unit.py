"""Whose data a request acts on, from the verified key alone (no servers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from morgan.core.exceptions import ForbiddenError, InvalidInputError
from morgan.core.principal import acting_user, conversation_owner
from morgan.shared.auth import ApiKeyRecord, Scope

pytestmark = pytest.mark.unit


class _Conn:  # the part of a Starlette connection the principal reads
    def __init__(self, record: ApiKeyRecord | None) -> None:
        self.scope: dict[str, Any] = {"state": {"api_key": record} if record else {}}


def _key(owner: str, *scopes: Scope) -> _Conn:
    record = ApiKeyRecord(key_id="0123456789ab", owner=owner, scopes=list(scopes or ["user"]),
                          created=datetime.now(UTC), salt="", hash="")  # fmt: skip
    return _Conn(record)


def test_a_user_key_acts_only_for_its_owner() -> None:
    alice = _key("alice")
    assert acting_user(alice, None) == "alice"  # type: ignore[arg-type]
    assert acting_user(alice, "alice") == "alice"  # type: ignore[arg-type]
    with pytest.raises(ForbiddenError, match="belongs to 'alice'"):
        acting_user(alice, "bob")  # type: ignore[arg-type]
    assert conversation_owner(alice, None) == "alice"  # type: ignore[arg-type]
    with pytest.raises(ForbiddenError):
        conversation_owner(alice, "bob")  # type: ignore[arg-type]


def test_an_admin_key_acts_for_whom_it_names_and_reads_any_conversation() -> None:
    admin = _key("household", "admin")
    assert acting_user(admin, "bob") == "bob"  # type: ignore[arg-type]
    assert acting_user(admin, None) == "household"  # type: ignore[arg-type]
    assert conversation_owner(admin, None) is None  # type: ignore[arg-type]
    assert conversation_owner(admin, "bob") == "bob"  # type: ignore[arg-type]


def test_without_keys_the_request_must_say_who() -> None:
    anonymous = _Conn(None)
    assert acting_user(anonymous, "carol") == "carol"  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="user_id is needed"):
        acting_user(anonymous, None)  # type: ignore[arg-type]
