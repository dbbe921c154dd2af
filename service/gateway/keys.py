"""The gateway's side of API keys (stored by service/gateway/key_records.py): lookups, limits, usage.

Usage (requests, prompt and completion tokens, last use) is counted in memory and written
every few seconds and when the service stops: counters are statistics, not acknowledged
writes, and a write per request would cost the gateway more than the request.

Limits: `rpm` requests and `tpm` tokens (prompt + completion) per 60-second window; a request
over either gets 429 with the seconds until the window has room. A request reserves what it may
use when it is admitted (its prompt, estimated at one token per 4 bytes, plus `max_tokens` per
choice) and settles at its real usage when it ends, so a burst of concurrent long requests cannot
pass `tpm` on tokens not yet generated: the window can exceed `tpm` only by the prompt tokens the
estimate missed. A request that could never fit (it asks for more than `tpm` alone) is told so.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from service.core.metrics import RATE_LIMITED
from service.core.store import Store
from service.gateway.budgets import Budgets, BudgetSpent, Held
from service.gateway.flusher import PeriodicFlush
from service.gateway.key_records import KeyScope, changes, key_hash
from service.gateway.schemas import GatewayError

WINDOW_S = 60.0


@dataclass
class Key:
    id: int
    name: str
    scope: KeyScope
    rpm: int | None
    tpm: int | None
    log_traffic: bool
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None

    @property
    def budgets(self) -> dict[str, int | None]:
        return {"day": self.tokens_per_day, "month": self.tokens_per_month}


@dataclass
class Reservation:
    """What a request in flight holds: its entry in the tpm window, its part of the budgets."""

    window: list | None
    budget: Held | None
    settled: bool = False  # settled once: a second record() of it (an error after the answer) is ignored


@dataclass
class _Usage:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    last_used: datetime | None = None
    times: deque = field(default_factory=deque)  # request times in the window
    tokens: deque = field(default_factory=deque)  # [time, tokens] in the window: reserved, then settled


class KeyBook(PeriodicFlush):
    """The service's view of keys: lookups from memory, limits and usage.

    The active keys are held in memory and read again only after a key was created or revoked
    (`key_records.changes()`), so a request does not wait for the database: a query on the event loop
    each second per key cost ~10% of the gateway's time and stalled every stream it relays. A revoke takes
    effect at the next request."""

    def __init__(self, store: Store, flush_every_s: float = 5.0):
        super().__init__(flush_every_s, "key-usage")
        self.store = store
        self._lock = threading.Lock()
        self._usage: dict[int, _Usage] = {}
        self.budgets = Budgets(store)
        # Requests and tokens of a key in the window that other gateway processes admitted (service/
        # gateway/hub.py adds the replicas'; a replica, the service's and the other replicas').
        self.elsewhere: Callable[[int], tuple[int, int]] = lambda kid: (0, 0)
        self._view: tuple[int, dict[str, Key]] = (
            -1,
            {},
        )  # (key_records.changes() it reflects, the active keys)

    def lookup(self, key: str) -> Key | None:
        """The active key, or None (unknown or revoked)."""
        return self.active().get(key_hash(key))

    def active(self) -> dict[str, Key]:
        """Every active key by its hash. Called from the event loop and from threads: the view is
        replaced whole, and never by one older than itself."""
        seen, active = self._view
        now = changes()
        if now != seen:  # read before the query: a change during it is read again next time
            rows = self.store.query(
                "SELECT key_hash, id, name, scope, rpm, tpm, log_traffic, tokens_per_day, tokens_per_month "
                "FROM api_keys WHERE revoked_at IS NULL"
            )
            active = {r.pop("key_hash"): Key(**{**r, "scope": KeyScope(r["scope"])}) for r in rows}
            with self._lock:
                if now >= self._view[0]:
                    self._view = (now, active)
        return active

    def authenticate(self, authorization: str | None) -> Key:
        """The active key of an `Authorization: Bearer rk-...` header, admitted under its rate limits;
        else the error in OpenAI's shape (401 without a valid key, 429 over a limit)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise GatewayError(
                401,
                "send your API key: 'Authorization: Bearer rk-...' (`rankloop keys create NAME`)",
                code="missing_api_key",
            )
        key = self.lookup(token.strip())
        if key is None:
            raise GatewayError(401, "invalid or revoked API key", code="invalid_api_key")
        wait = self.admit(key)
        if wait > 0:
            raise GatewayError(
                429,
                f"rate limit of key {key.name!r} reached ({key.rpm} requests or {key.tpm} tokens "
                "per minute); retry later",
                type_="rate_limit_error",
                code="rate_limit_exceeded",
                retry_after=wait,
            )
        return key

    def admit(self, key: Key) -> float:
        """Count a request against the key's limits: 0 when admitted, else the seconds to wait."""
        now = time.monotonic()
        with self._lock:
            u = self._usage.setdefault(key.id, _Usage())
            while u.times and now - u.times[0] >= WINDOW_S:
                u.times.popleft()
            while u.tokens and now - u.tokens[0][0] >= WINDOW_S:
                u.tokens.popleft()
            requests, tokens = self.elsewhere(key.id)
            if key.rpm is not None and len(u.times) + requests >= key.rpm:
                RATE_LIMITED.labels(key.name, "rpm").inc()
                return WINDOW_S - (now - u.times[0]) if u.times else 1.0
            if key.tpm is not None and sum(n for _, n in u.tokens) + tokens >= key.tpm:
                RATE_LIMITED.labels(key.name, "tpm").inc()
                return WINDOW_S - (now - u.tokens[0][0]) if u.tokens else 1.0
            u.times.append(now)
            u.requests += 1
            u.last_used = datetime.now(UTC)
        return 0.0

    def reserve(self, key: Key, tokens: int) -> tuple[float, Reservation | None]:
        """Hold `tokens` of the key's `tpm` and budgets for a request: (0, the reservation to settle)
        when they fit, else (seconds until the tpm window has room, None). A spent budget raises
        BudgetSpent (service/gateway/budgets.py)."""
        budget = self.budgets.hold(key.id, key.budgets, tokens)
        if key.tpm is None:
            return 0.0, Reservation(None, budget)
        now = time.monotonic()
        with self._lock:
            u = self._usage.setdefault(key.id, _Usage())
            while u.tokens and now - u.tokens[0][0] >= WINDOW_S:
                u.tokens.popleft()
            if sum(n for _, n in u.tokens) + self.elsewhere(key.id)[1] + tokens > key.tpm:
                RATE_LIMITED.labels(key.name, "tpm").inc()
                wait = WINDOW_S - (now - u.tokens[0][0]) if u.tokens else 1.0
            else:
                held = [now, tokens]
                u.tokens.append(held)
                return 0.0, Reservation(held, budget)
        self.budgets.settle(key.id, 0, budget)
        return wait, None

    def hold(self, key: Key, forwarded: dict, n: int) -> Reservation | None:
        """Hold what a request (`forwarded`, asking `n` choices) may use of the key's `tpm` and budgets:
        its prompt at 4 bytes a token plus max_tokens per choice; or refuse it (GatewayError 400, 429)."""
        if key.tpm is None and not any(key.budgets.values()):
            return None
        budget = forwarded.get("max_completion_tokens") or forwarded.get("max_tokens") or 0
        prompt = -(-len(json.dumps(forwarded.get("messages") or forwarded.get("prompt") or "")) // 4)
        tokens = prompt + budget * n
        if key.tpm is not None and tokens > key.tpm:
            raise GatewayError(
                400,
                f"this request may use {tokens} tokens (a prompt of about {prompt} plus max_tokens {budget} x n "
                f"{n}), more than key {key.name!r} may use in a minute (tpm {key.tpm}); lower max_tokens or n",
                param="max_tokens",
            )
        for period, limit in key.budgets.items():
            if limit is not None and tokens > limit:
                raise GatewayError(
                    400,
                    f"this request may use {tokens} tokens, more than key {key.name!r}'s whole "
                    f"{'daily' if period == 'day' else 'monthly'} budget ({limit}); lower max_tokens or n",
                    param="max_tokens",
                )
        try:
            wait, held = self.reserve(key, tokens)
        except BudgetSpent as e:
            raise GatewayError(
                429,
                f"the {'daily' if e.period == 'day' else 'monthly'} token budget of key {key.name!r} is spent "
                f"({e.used} of {e.limit} tokens, requests in flight counted at their max_tokens; this one may "
                f"use {tokens}); it renews when the next UTC {e.period} begins",
                type_="insufficient_quota",
                code="insufficient_quota",
                retry_after=e.reset_s,
            ) from None
        if wait > 0:
            raise GatewayError(
                429,
                f"rate limit of key {key.name!r} reached: this request may use {tokens} tokens and "
                f"{key.tpm} per minute are allowed, with requests in flight counted at their max_tokens; "
                "retry later",
                type_="rate_limit_error",
                code="rate_limit_exceeded",
                retry_after=wait,
            )
        return held

    def record(
        self, key: Key, prompt_tokens: int, completion_tokens: int, held: Reservation | None = None
    ) -> None:
        """A finished request's usage; it replaces its reservation (`held`) in the window and budgets."""
        used = prompt_tokens + completion_tokens
        with self._lock:
            if held is not None:
                if held.settled:
                    return
                held.settled = True
            u = self._usage.setdefault(key.id, _Usage())
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            if held is not None and held.window is not None:
                held.window[1] = used  # still in the window, or already gone
            else:
                u.tokens.append([time.monotonic(), used])
        self.budgets.settle(key.id, used, held.budget if held else None)

    def window(self) -> dict[int, tuple[int, int]]:
        """Each key's requests and tokens (reserved or used) in this process's window now, for the
        other gateway processes."""
        now = time.monotonic()
        with self._lock:
            out = {}
            for kid, u in self._usage.items():
                while u.times and now - u.times[0] >= WINDOW_S:
                    u.times.popleft()
                while u.tokens and now - u.tokens[0][0] >= WINDOW_S:
                    u.tokens.popleft()
                if u.times or u.tokens:
                    out[kid] = (len(u.times), sum(n for _, n in u.tokens))
            return out

    def count(self, kid: int, prompt_tokens: int, completion_tokens: int, when: datetime) -> None:
        """A request another gateway process answered: its usage counted and written with ours (its own
        window counted there, and reported through `elsewhere`)."""
        with self._lock:
            u = self._usage.setdefault(kid, _Usage())
            u.requests += 1
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            u.last_used = max(u.last_used or when, when)
        self.budgets.settle(kid, prompt_tokens + completion_tokens, None, when)

    def flush(self) -> None:
        """Add the counts since the last flush to the stored ones."""
        with self.flush_lock:
            self._write()

    def _write(self) -> None:
        with self._lock:
            pending = {
                kid: (u.requests, u.prompt_tokens, u.completion_tokens, u.last_used)
                for kid, u in self._usage.items()
                if u.requests or u.prompt_tokens or u.completion_tokens
            }
            for u in self._usage.values():
                u.requests = u.prompt_tokens = u.completion_tokens = 0
        with self.store.write() as cur:
            self.budgets.write(cur)
            for kid, (req, pt, ct, last) in pending.items():
                cur.execute(
                    "UPDATE api_keys SET requests = requests + ?, prompt_tokens = prompt_tokens + ?, "
                    "completion_tokens = completion_tokens + ?, last_used_at = coalesce(?, last_used_at) "
                    "WHERE id = ?",
                    [req, pt, ct, last, kid],
                )
