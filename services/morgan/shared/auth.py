"""API keys kept in Consul KV as salted scrypt hashes, and the FastAPI side of checking them.

A key looks like `mk_<key-id>_<secret>`; the id finds the record at
`morgan/auth/keys/<key-id>` in one read, and only the salted hash of the secret is stored.
Verified keys are trusted for `cache_seconds` (30 s by default) in each process, so a
revocation takes effect everywhere within that window (immediately in the revoking process).
A key not in the cache is read from the nearest Consul server's copy when that server
heard from the leader within the same window (morgan.shared.consul_stale), so a check
does not wait for a leader the agent cannot reach; a staler copy is read again from the
leader.

A key has an owner and scopes: `user` keys act only for their owner (core scopes every
conversation and memory to the key's owner), `admin` keys may act for any user named in a
request, and `service` keys are the only ones the model services (llm, stt, tts) accept.
A record written before scopes existed is a `user` key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import tenacity
from fastapi import Request
from pydantic import BaseModel, Field

from morgan.shared.consul_client import ConsulClientFactory
from morgan.shared.consul_stale import read_stale

KEYS_PREFIX = "morgan/auth/keys/"
KEY_PATTERN = re.compile(r"^mk_([0-9a-f]{12})_([A-Za-z0-9_-]{20,})$")
API_KEY_HEADER = "X-API-Key"
WS_SUBPROTOCOL = "morgan"  # what a WebSocket server picks when a browser sends its key
WS_KEY_PREFIX = "bearer."
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN = 2**14, 8, 1, 32
BAD_KEY_SECONDS = 10.0
BAD_KEYS_MAX = 10_000
# A key's read the agent could not complete (the server it asked stopped mid-call: a
# rolling deploy, an upgrade) is asked once more; the agent sends it to another server.
KEY_READ_TRIES = 2
KEY_READ_RETRY_S = 0.2

log = logging.getLogger(__name__)
Scope = Literal["user", "admin", "service"]
SCOPES: tuple[Scope, ...] = ("user", "admin", "service")
USER_SCOPES: frozenset[str] = frozenset({"user", "admin"})  # what core accepts
SERVICE_SCOPES: frozenset[str] = frozenset({"service"})  # what the model services accept


class AuthError(Exception):
    """A request's API key is missing, malformed, unknown, wrong, expired or revoked."""

    def __init__(self, reason: str, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.retry_after = retry_after


def _user_scope() -> list[Scope]:
    return ["user"]


class ApiKeyRecord(BaseModel):
    """What KV holds for one key (never the key itself)."""

    key_id: str
    owner: str
    scopes: list[Scope] = Field(default_factory=_user_scope, min_length=1)
    created: datetime
    expires: datetime | None = None
    revoked: bool = False
    revoked_at: datetime | None = None
    algorithm: str = "scrypt"
    salt: str = Field(description="base64 salt, unique per key")
    hash: str = Field(description="base64 scrypt(secret, salt)")
    n: int = SCRYPT_N
    r: int = SCRYPT_R
    p: int = SCRYPT_P

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def may_act_for(self, user_id: str) -> bool:
        """Whether this key may act for `user_id`: its own owner always, anyone for admin."""
        return user_id == self.owner or "admin" in self.scopes

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"salt", "hash", "n", "r", "p", "algorithm"})


def hash_secret(
    secret: str, salt: bytes, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P
) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_DKLEN, maxmem=256 * 1024 * 1024
    )


def compose_key(key_id: str, secret: str) -> str:
    """The key as clients send it; `parse_key` takes it apart again."""
    key = f"mk_{key_id}_{secret}"
    if not KEY_PATTERN.match(key):
        raise ValueError(
            "an API key needs a 12-hex-digit id and a secret of at least 20 "
            "characters from A-Z a-z 0-9 _ -"
        )
    return key


def make_record(
    key_id: str,
    secret: str,
    owner: str,
    created: datetime,
    expires: datetime | None = None,
    salt: bytes | None = None,
    scopes: Sequence[Scope] = ("user",),
) -> ApiKeyRecord:
    """The KV record of a key: its salted hash, never the secret (a fresh salt unless given)."""
    salt = secrets.token_bytes(16) if salt is None else salt
    return ApiKeyRecord(
        key_id=key_id,
        owner=owner,
        scopes=list(scopes),
        created=created,
        expires=expires,
        salt=base64.b64encode(salt).decode(),
        hash=base64.b64encode(hash_secret(secret, salt)).decode(),
    )


def secret_matches(record: ApiKeyRecord, secret: str) -> bool:
    """Whether `secret` hashes to the record's hash (constant-time compare)."""
    expected = base64.b64decode(record.hash)
    got = hash_secret(secret, base64.b64decode(record.salt), record.n, record.r, record.p)
    return hmac.compare_digest(expected, got)


def parse_key(key: str) -> tuple[str, str]:
    m = KEY_PATTERN.match(key.strip())
    if not m:
        raise AuthError(
            "malformed",
            "malformed API key: expected mk_<id>_<secret> as issued by `morgan keys create`",
        )
    return m.group(1), m.group(2)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _record(entry: dict[str, Any] | None) -> ApiKeyRecord | None:
    if not entry or entry.get("Value") is None:
        return None
    return ApiKeyRecord.model_validate(json.loads(entry["Value"]))


class ApiKeyStore:
    """Creates, lists, revokes and verifies API keys in Consul KV."""

    def __init__(
        self,
        consul: ConsulClientFactory | None = None,
        *,
        cache_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.consul = consul or ConsulClientFactory.from_env()
        self.cache_seconds = cache_seconds
        self.clock = clock
        self.now = now
        self._client = self.consul.client()
        self._cache: dict[str, tuple[ApiKeyRecord, float]] = {}
        # Keys found unknown or wrong, briefly: a client repeating one costs no Consul read
        # and no scrypt run (at most BAD_KEYS_MAX remembered).
        self._bad: dict[str, tuple[AuthError, float]] = {}
        self._lock = threading.Lock()

    # -- management --------------------------------------------------------------------------

    def create(
        self,
        owner: str,
        expires_days: float | None = None,
        scopes: Sequence[Scope] = ("user",),
    ) -> tuple[ApiKeyRecord, str]:
        """Store a new key for `owner`; returns (record, the key — shown once, never stored)."""
        if not owner.strip():
            raise ValueError("owner must not be empty: say who the key is for (--owner alice)")
        unknown = sorted(set(scopes) - set(SCOPES))
        if unknown or not scopes:
            raise ValueError(
                f"scopes {unknown or '(none)'} are not known; a key has one or more of "
                f"{', '.join(SCOPES)}"
            )
        if expires_days is not None and expires_days <= 0:
            raise ValueError("expires_days must be positive (or left out for no expiry)")
        key_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        created = self.now()
        record = make_record(
            key_id,
            secret,
            owner.strip(),
            created,
            created + timedelta(days=expires_days) if expires_days else None,
            scopes=scopes,
        )
        self._put(record)
        return record, compose_key(key_id, secret)

    def _put(self, record: ApiKeyRecord) -> None:
        self._client.kv.put(KEYS_PREFIX + record.key_id, record.model_dump_json())

    def get(self, key_id: str) -> ApiKeyRecord | None:
        _, entry = self._client.kv.get(KEYS_PREFIX + key_id)
        return _record(entry)

    def _get_to_check(self, key_id: str) -> ApiKeyRecord | None:
        """The record as the nearest server has it, when no staler than a cached one may
        be (`cache_seconds`); otherwise, or when that server has none (a key just made),
        as the leader has it."""
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(KEY_READ_TRIES),
            wait=tenacity.wait_fixed(KEY_READ_RETRY_S),
            before_sleep=lambda state: log.info(
                "reading API key %s failed (%s); asking Consul once more",
                key_id, state.outcome.exception() if state.outcome else "?",
            ),
            reraise=True,
        )  # fmt: skip
        return retrying(self._read_to_check, key_id)

    def _read_to_check(self, key_id: str) -> ApiKeyRecord | None:
        read = read_stale(self._client, KEYS_PREFIX + key_id)
        if read.fresh_within(self.cache_seconds) and (found := _record(read.entry)):
            return found
        return self.get(key_id)

    def list(self) -> list[ApiKeyRecord]:
        _, entries = self._client.kv.get(KEYS_PREFIX, recurse=True)
        out = [
            ApiKeyRecord.model_validate(json.loads(e["Value"]))
            for e in entries or []
            if e.get("Value")
        ]
        return sorted(out, key=lambda r: r.created)

    def revoke(self, key_id: str) -> ApiKeyRecord:
        record = self.get(key_id)
        if record is None:
            raise KeyError(f"no API key with id {key_id!r}; `morgan keys list` shows the ids")
        record.revoked = True
        record.revoked_at = self.now()
        self._put(record)
        with self._lock:
            for k in [k for k, (r, _) in self._cache.items() if r.key_id == key_id]:
                del self._cache[k]
        return record

    # -- verification ------------------------------------------------------------------------

    def verify(self, key: str) -> ApiKeyRecord:
        """The record of a valid key; raises `AuthError` otherwise."""
        key_id, secret = parse_key(key)
        cache_key = hashlib.sha256(key.encode()).hexdigest()
        now_mono = self.clock()
        with self._lock:
            hit = self._cache.get(cache_key)
            bad = self._bad.get(cache_key)
        if bad is not None and now_mono - bad[1] < BAD_KEY_SECONDS:
            raise bad[0]
        if hit is not None and now_mono - hit[1] < self.cache_seconds:
            record = hit[0]
        else:
            found = self._get_to_check(key_id)
            if found is None:
                unknown = AuthError(
                    "unknown", "unknown API key; create one with `morgan keys create`"
                )
                raise self._remember_bad(cache_key, now_mono, unknown)
            if not secret_matches(found, secret):
                wrong = AuthError("wrong", "wrong API key secret; check the key you were given")
                raise self._remember_bad(cache_key, now_mono, wrong)
            record = found
            with self._lock:
                self._cache[cache_key] = (record, now_mono)
        if record.revoked:
            raise AuthError("revoked", f"API key {record.key_id} was revoked; ask for a new one")
        if record.expired(self.now()):
            raise AuthError(
                "expired",
                f"API key {record.key_id} expired at "
                f"{record.expires.isoformat() if record.expires else '?'}; "
                "ask for a new one",
            )
        return record

    def _remember_bad(self, cache_key: str, now: float, error: AuthError) -> AuthError:
        with self._lock:
            if len(self._bad) >= BAD_KEYS_MAX:
                self._bad = {k: v for k, v in self._bad.items() if now - v[1] < BAD_KEY_SECONDS}
            if len(self._bad) < BAD_KEYS_MAX:
                self._bad[cache_key] = (error, now)
        return error

    async def averify(self, key: str) -> ApiKeyRecord:
        return await asyncio.to_thread(self.verify, key)


def key_from_headers(headers: Any) -> str | None:
    """The key from `X-API-Key` or `Authorization: Bearer ...`, if any."""
    key = headers.get(API_KEY_HEADER) or headers.get(API_KEY_HEADER.lower())
    if key:
        return str(key)
    auth = headers.get("authorization") or headers.get("Authorization")
    if auth:
        scheme, _, value = str(auth).partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None


def key_from_subprotocols(headers: Any) -> str | None:
    """A browser's key on a WebSocket: the subprotocols `morgan, bearer.<key>` (a browser
    cannot set headers on a WebSocket, and a key in the URL ends up in logs and history)."""
    offered = headers.get("sec-websocket-protocol") or ""
    for item in str(offered).split(","):
        name = item.strip()
        if name.startswith(WS_KEY_PREFIX) and len(name) > len(WS_KEY_PREFIX):
            return name[len(WS_KEY_PREFIX) :]
    return None


async def require_api_key(request: Request) -> ApiKeyRecord:
    """FastAPI dependency: the caller's key record, or a 401 JSON error.

    Needs `request.app.state.api_key_store` (create_app sets it). When the app's auth
    middleware already checked this request, its result is reused."""
    from fastapi import HTTPException

    cached = getattr(request.state, "api_key", None)
    if isinstance(cached, ApiKeyRecord):
        return cached
    store: ApiKeyStore | None = getattr(request.app.state, "api_key_store", None)
    if store is None:
        raise HTTPException(503, detail="API key store not configured on this service")
    key = key_from_headers(request.headers)
    if not key:
        raise HTTPException(
            401,
            detail="missing API key: send X-API-Key or Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    try:
        record = await store.averify(key)
    except AuthError as exc:
        raise HTTPException(
            401, detail=exc.message, headers={"WWW-Authenticate": "Bearer"}
        ) from exc
    request.state.api_key = record
    return record
