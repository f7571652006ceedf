"""Whose data a request may touch: the API key's owner, never a `user_id` the client picks.

With API keys on, a `user` key acts only for its owner: a request may leave `user_id` out
(the owner is meant) or name the owner; naming anyone else is refused (403). An `admin` key
may act for any user it names (a household front end speaking for its members), and read,
reset or delete any conversation by id. With auth off (a dev machine), the `user_id` the
request names is taken as given.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection

from morgan.core.exceptions import ForbiddenError, InvalidInputError
from morgan.shared.auth import ApiKeyRecord


def key_record(conn: HTTPConnection) -> ApiKeyRecord | None:
    """The key the edge middleware verified for this request (None with auth off)."""
    record = conn.scope.get("state", {}).get("api_key")
    return record if isinstance(record, ApiKeyRecord) else None


def acting_user(conn: HTTPConnection, user_id: str | None) -> str:
    """The user this request acts for (see the module doc); raises a 4xx `TurnError`."""
    record = key_record(conn)
    if record is None:
        if not user_id:
            raise InvalidInputError(
                "user_id is needed: this core runs without API keys, so it cannot tell "
                "who is asking"
            )
        return user_id
    if user_id is None or user_id == record.owner:
        return record.owner
    if record.may_act_for(user_id):
        return user_id
    raise ForbiddenError(
        f"API key {record.key_id} belongs to {record.owner!r} and acts only for its owner; "
        "leave user_id out, or use an admin key to act for another user"
    )


def conversation_owner(conn: HTTPConnection, user_id: str | None) -> str | None:
    """Whose conversation a by-id request may touch: None when any (an admin key naming no
    user, or auth off and no user_id), else the one user (see `acting_user`)."""
    record = key_record(conn)
    if user_id is None and (record is None or "admin" in record.scopes):
        return None
    return acting_user(conn, user_id)
