"""The traffic log: one row per gateway request (route, model, system prompt version, key, tokens,
latency), with the request and response themselves when logging is on for the key or globally.

Rows are written in batches by a background thread (a write per request would cost the
gateway more than the request); `flush()` writes what is waiting, and feedback flushes
before it looks a response up. Rows older than `gateway.retention_days` are deleted.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from service.core.store import Store
from service.gateway.flusher import PeriodicFlush

COLUMNS = (
    "response_id",
    "key_id",
    "route",
    "model_id",
    "system_prompt_id",
    "n",
    "stream",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "request",
    "response",
    "created_at",
)


SCHEMA = pa.schema(
    [
        ("response_id", pa.string()),
        ("key_id", pa.int64()),
        ("route", pa.string()),
        ("model_id", pa.int64()),
        ("system_prompt_id", pa.int64()),
        ("n", pa.int32()),
        ("stream", pa.bool_()),
        ("status", pa.int32()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_ms", pa.float64()),
        ("request", pa.string()),
        ("response", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)


def prepare(row: dict) -> dict:
    """A row as the log keeps it: stamped now, the request and response as JSON text."""
    row = {**row, "created_at": datetime.now(UTC)}
    for col in ("request", "response"):
        row[col] = json.dumps(row[col]) if row.get(col) is not None else None
    return row


def table(rows: list[dict]) -> pa.Table:
    """Prepared rows as the `traffic` table's columns."""
    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA)


class TrafficLog(PeriodicFlush):
    def __init__(self, store: Store, retention_days: float, flush_every_s: float = 0.5):
        super().__init__(flush_every_s, "traffic-log")
        self.store, self.retention = store, timedelta(days=retention_days)
        self._rows: list[dict] = []
        self._lock = threading.Lock()

    def begin(self, row: dict) -> str | None:
        """A request is on its way to a model (`row`: what is known of it so far). A replica spools this,
        so a request it was answering when it died is still logged; here there is nothing to do."""
        return None

    def cancel(self, begun: str | None) -> None:
        """A begun request never reached a model (it is not logged)."""

    def add(self, row: dict, begun: str | None = None) -> None:
        row = prepare(row)
        with self._lock:
            self._rows.append(row)

    def flush(self) -> None:
        with self.flush_lock:
            self._write()

    def _write(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
        if not rows:
            return
        try:
            with self.store.write() as cur:
                self.store.insert_arrow(cur, "traffic", table(rows))
        except Exception:
            with self._lock:  # kept for the next flush
                self._rows = rows + self._rows
            raise

    def prune(self) -> int:
        """Delete rows past the retention period (their feedback stays, without the text)."""
        with self.store.write() as cur:
            return len(
                cur.execute(
                    "DELETE FROM traffic WHERE created_at < ? RETURNING id",
                    [datetime.now(UTC) - self.retention],
                ).fetchall()
            )

    def tick(self, beat: int) -> None:
        self.flush()
        if beat % 7200 == 1:  # at start, then about hourly
            self.prune()
