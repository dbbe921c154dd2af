"""API keys in the database: created once (only a SHA-256 hash is stored), scoped, limited,
revocable. A key is `rk-` and 43 random URL-safe characters: 256 bits, so a fast hash cannot
be searched and the lookup needs no per-row secret. The gateway's runtime side (lookups,
limits, usage counters) is service/gateway/keys.py.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from enum import StrEnum

from service.core.errors import NotFound, UserError
from service.core.store import Store


class KeyScope(StrEnum):
    """What a key opens: `client` the /v1 gateway; `admin` the gateway and /admin (service/web/auth.py)."""

    CLIENT = "client"
    ADMIN = "admin"


SCOPES = tuple(KeyScope)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Moved by every create and revoke, after its commit. While the service runs it is the only writer
# of the database, so its in-memory view of the keys (service/gateway/keys.py) is current exactly
# when this has not moved since it was read.
_changes = 0


def changes() -> int:
    return _changes


def _changed() -> None:
    global _changes
    _changes += 1


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(
    store: Store,
    name: str,
    scope: str = KeyScope.CLIENT,
    rpm: int | None = None,
    tpm: int | None = None,
    log_traffic: bool = False,
    tokens_per_day: int | None = None,
    tokens_per_month: int | None = None,
) -> str:
    """Store a new key's hash; returns the key itself, which is shown once and never again."""
    if not NAME.match(name or ""):
        raise UserError(
            f"key name {name!r} is not valid: 1-64 letters, digits, '_', '.', '-', starting with a "
            "letter or digit"
        )
    if scope not in SCOPES:
        raise UserError(f"unknown scope {scope!r}; valid: {', '.join(SCOPES)}")
    for limit, value, top in (
        ("rpm", rpm, 10**9),
        ("tpm", tpm, 10**9),
        ("tokens-per-day", tokens_per_day, 10**15),
        ("tokens-per-month", tokens_per_month, 10**15),
    ):
        if value is not None and not 1 <= value <= top:
            raise UserError(f"--{limit} must be between 1 and {top}, got {value}")
    key = "rk-" + secrets.token_urlsafe(32)
    with store.write() as cur:
        if cur.execute("SELECT 1 FROM api_keys WHERE name = ?", [name]).fetchone():
            raise UserError(f"a key named {name!r} exists; revoke it or pick another name")
        cur.execute(
            "INSERT INTO api_keys (name, key_hash, prefix, scope, rpm, tpm, log_traffic, tokens_per_day, "
            "tokens_per_month) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [name, key_hash(key), key[:7], scope, rpm, tpm, log_traffic, tokens_per_day, tokens_per_month],
        )
    _changed()
    return key


def revoke_key(store: Store, name: str) -> None:
    with store.write() as cur:
        if (
            cur.execute(
                "UPDATE api_keys SET revoked_at = now() WHERE name = ? AND revoked_at IS NULL RETURNING id",
                [name],
            ).fetchone()
            is None
        ):
            raise NotFound(f"no active key named {name!r}; `rankloop keys list` shows them")
    _changed()


def list_keys(store: Store) -> list[dict]:
    """Every key with its usage; never the key itself."""
    return store.query(
        "SELECT name, prefix, scope, rpm, tpm, tokens_per_day, tokens_per_month, log_traffic, requests, "
        "prompt_tokens, completion_tokens, (SELECT coalesce(sum(tokens), 0) FROM key_usage u WHERE "
        "u.key_id = k.id AND u.period = strftime(current_date, '%Y-%m-%d')) AS tokens_today, last_used_at, "
        "revoked_at IS NOT NULL AS revoked, created_at FROM api_keys k ORDER BY id"
    )
