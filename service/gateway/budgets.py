"""Token budgets per key per UTC day and month (`rankloop keys create NAME --tokens-per-day N
--tokens-per-month M`).

Every key's tokens are counted per day and month (`key_usage`, written with the other usage
counters every few seconds and at stop, so a restart keeps them, give or take the last seconds).
A request holds its possible use (the same estimate `tpm` reserves) while it runs, so concurrent
requests cannot together spend past a budget by more than the prompt tokens the estimate missed;
when a budget is spent the gateway answers 429 until the next UTC day or month begins.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import duckdb

from service.core.store import Store

PERIODS = ("day", "month")


class BudgetSpent(Exception):
    def __init__(self, period: str, limit: int, used: int, reset_s: float):
        super().__init__(f"{period} budget {limit} spent ({used})")
        self.period, self.limit, self.used, self.reset_s = period, limit, used, reset_s


@dataclass
class Held:
    """What a request in flight holds of its key's budgets: (key id, period label, tokens)."""

    parts: list[tuple[int, str, int]]


def labels(now: datetime) -> dict[str, tuple[str, float]]:
    """Each period's label (`2026-12-05`, `2026-12`) and the seconds until the next one begins."""
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    next_month = (now.replace(day=1) + timedelta(days=32)).replace(
        day=1, hour=0, minute=0, second=0, microsecond=0
    )
    return {
        "day": (now.strftime("%Y-%m-%d"), (tomorrow - now).total_seconds()),
        "month": (now.strftime("%Y-%m"), (next_month - now).total_seconds()),
    }


class Budgets:
    """Tokens used per key and period: stored (read once from `store`; a gateway replica, which has no
    database, is told them by the service), counted since, held by requests in flight, and held
    `elsewhere` (by other gateway processes)."""

    def __init__(self, store: Store | None):
        self.store = store
        self._lock = threading.Lock()
        self._stored: dict[tuple[int, str], int] = {}  # read once per key and period
        self._unsaved: dict[tuple[int, str], int] = {}
        self._sending: dict[tuple[int, str], int] = {}  # a replica's counts on their way to the service
        self._held: dict[tuple[int, str], int] = {}
        self.elsewhere: Callable[[int, str], int] = lambda kid, label: 0

    def _used(self, kid: int, label: str) -> int:
        k = (kid, label)
        if k not in self._stored:
            self._stored[k] = (
                int(
                    self.store.scalar(
                        "SELECT coalesce(sum(tokens), 0) FROM key_usage WHERE key_id = ? AND period = ?",
                        [kid, label],
                    )
                )
                if self.store is not None
                else 0
            )
        return (
            self._stored[k]
            + self._unsaved.get(k, 0)
            + self._sending.get(k, 0)
            + self._held.get(k, 0)
            + self.elsewhere(kid, label)
        )

    def used(self, kid: int, label: str) -> int:
        with self._lock:
            return self._used(kid, label)

    def held(self) -> dict[tuple[int, str], int]:
        """What this process's requests in flight hold, by key and period label."""
        with self._lock:
            return {k: n for k, n in self._held.items() if n}

    def sending(self) -> None:
        """A replica is sending its requests (and with them the tokens counted so far) to the service."""
        with self._lock:
            for k, n in self._unsaved.items():
                self._sending[k] = self._sending.get(k, 0) + n
            self._unsaved = {}

    def sent(self, used: dict[tuple[int, str], int] | None) -> None:
        """The service answered with every process's stored use (`used`, which counts what was sent), or
        the send failed (None: those counts wait for the next)."""
        with self._lock:
            if used is None:
                for k, n in self._sending.items():
                    self._unsaved[k] = self._unsaved.get(k, 0) + n
            else:
                self._stored = dict(used)
            self._sending = {}

    def hold(self, kid: int, limits: dict[str, int | None], tokens: int) -> Held | None:
        """Hold `tokens` against the key's budgets (`limits`: period -> tokens or None), or raise
        BudgetSpent naming the first one they would pass."""
        if not any(limits.values()):
            return None
        now = labels(datetime.now(UTC))
        with self._lock:
            for period in PERIODS:
                limit = limits.get(period)
                label, reset_s = now[period]
                if limit is not None and (used := self._used(kid, label)) + tokens > limit:
                    raise BudgetSpent(period, limit, used, reset_s)
            parts = [(kid, now[p][0], tokens) for p in PERIODS if limits.get(p) is not None]
            for kid_, label, n in parts:
                self._held[(kid_, label)] = self._held.get((kid_, label), 0) + n
        return Held(parts)

    def settle(self, kid: int, tokens: int, held: Held | None, when: datetime | None = None) -> None:
        """A finished request: its hold is released and what it used is counted (in the periods of
        `when`, default now: a replica's row that arrives after midnight counts for its own day)."""
        now = labels(when or datetime.now(UTC))
        with self._lock:
            for kid_, label, n in held.parts if held else []:
                self._held[(kid_, label)] -= n
            for period in PERIODS:
                k = (kid, now[period][0])
                self._unsaved[k] = self._unsaved.get(k, 0) + tokens

    def write(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Add the unsaved counts to `key_usage` (in the caller's transaction)."""
        with self._lock:
            pending, self._unsaved = self._unsaved, {}
            for k, n in pending.items():
                if k in self._stored:
                    self._stored[k] += n
        for (kid, label), n in pending.items():
            if n:
                cur.execute(
                    "INSERT INTO key_usage (key_id, period, tokens) VALUES (?, ?, ?) "
                    "ON CONFLICT (key_id, period) DO UPDATE SET tokens = tokens + excluded.tokens",
                    [kid, label, n],
                )
