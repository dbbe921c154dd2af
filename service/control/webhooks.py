"""Webhooks, as the Standard Webhooks spec (standardwebhooks.com) has them: each delivery is a POST of
`{"type", "timestamp", "data"}` with `webhook-id`, `webhook-timestamp` and `webhook-signature` (HMAC-SHA256
of `id.timestamp.body` with the endpoint's `whsec_` secret, signed by the `standardwebhooks` package).

    rankloop webhooks add https://ci.example/hook [--event job.finished --event model.promoted]
    rankloop webhooks list | remove ID | deliveries [--status failed]

The service's dispatcher reads new events every second (service/data/events.py) and stores one
delivery per subscribed endpoint in the same transaction that moves the event cursors: the outbox, so
a crash loses none. A delivery is retried while the endpoint answers anything but 2xx (or nothing), after
1 s, 10 s, 1 min, 10 min, 1 h and 6 h, then marked failed; every attempt's status is in the delivery log.
Events made while no service runs are delivered when it starts.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Literal

import httpx
from pydantic import Field, field_validator
from standardwebhooks import Webhook

from service.control.context import Context
from service.control.serving_ops import _Params
from service.core.errors import NotFound
from service.core.store import Store
from service.data.events import EVENTS, fingerprint, read_events
from service.gateway.flusher import PeriodicFlush

RETRY_S = (1, 10, 60, 600, 3600, 6 * 3600)  # after each failed attempt; then the delivery has failed
TIMEOUT_S = 10.0
BATCH = 64


class NewWebhook(_Params):
    url: str = Field(description="the endpoint (http:// or https://) that receives the events")
    events: list[str] = Field(
        default_factory=lambda: list(EVENTS), description="events to send (default: all)"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")) or len(v) > 2000:
            raise ValueError(f"{v!r} is not an http:// or https:// URL")
        return v

    @field_validator("events")
    @classmethod
    def _events(cls, v: list[str]) -> list[str]:
        bad = [e for e in v if e not in EVENTS]
        if bad or not v:
            raise ValueError(
                f"unknown event(s) {', '.join(bad) or '(none given)'}; valid: {', '.join(EVENTS)}"
            )
        return list(dict.fromkeys(v))


class WebhookId(_Params):
    webhook_id: int = Field(ge=1, le=2**63 - 1, description="the webhook's id (`rankloop webhooks list`)")


class DeliveryFilter(_Params):
    webhook_id: int | None = Field(None, ge=1, description="only this webhook's deliveries")
    status: Literal["pending", "delivered", "failed"] | None = Field(None, description="only these")
    limit: int = Field(100, ge=1, le=10_000, description="newest first, at most this many")


def add_webhook(ctx: Context, p: NewWebhook) -> dict:
    store = ctx.store
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with store.write() as cur:
        if not cur.execute("SELECT 1 FROM webhooks WHERE active").fetchone():
            read_events(cur)  # nobody listened: the events start now, not where the cursors were left
        hook_id = cur.execute(
            "INSERT INTO webhooks (url, secret, events) VALUES (?, ?, ?) RETURNING id",
            [p.url, secret, p.events],
        ).fetchone()[0]  # type: ignore[index]
    return {
        "id": hook_id,
        "url": p.url,
        "events": p.events,
        "secret": secret,
        "note": "verify deliveries with it",
    }


def list_webhooks(ctx: Context, _: object = None) -> list[dict]:
    return ctx.store.query(
        "SELECT w.id, w.url, w.events, w.active, count(d.id) FILTER (WHERE d.status = 'delivered') AS delivered, "
        "count(d.id) FILTER (WHERE d.status = 'pending') AS pending, count(d.id) FILTER (WHERE d.status = 'failed') "
        "AS failed, w.created_at FROM webhooks w LEFT JOIN webhook_deliveries d ON d.webhook_id = w.id "
        "GROUP BY ALL ORDER BY w.id"
    )


def remove_webhook(ctx: Context, p: WebhookId) -> dict:
    """Stop sending to a webhook (its delivery log stays; what was pending is dropped as failed)."""
    with ctx.store.write() as cur:
        if not cur.execute(
            "UPDATE webhooks SET active = false WHERE id = ? AND active RETURNING id", [p.webhook_id]
        ).fetchall():
            raise NotFound(f"no active webhook {p.webhook_id}; `rankloop webhooks list` shows them")
        cur.execute(
            "UPDATE webhook_deliveries SET status = 'failed', last_error = 'webhook removed' "
            "WHERE webhook_id = ? AND status = 'pending'",
            [p.webhook_id],
        )
    return {"id": p.webhook_id, "removed": True}


def list_deliveries(ctx: Context, p: DeliveryFilter) -> list[dict]:
    return ctx.store.query(
        "SELECT id, webhook_id, event, status, attempts, last_status, last_error, next_at, delivered_at, created_at "
        "FROM webhook_deliveries WHERE (? IS NULL OR webhook_id = ?) AND (? IS NULL OR status = ?) "
        "ORDER BY created_at DESC, id LIMIT ?",
        [p.webhook_id, p.webhook_id, p.status, p.status, p.limit],
    )


class Dispatcher(PeriodicFlush):
    """The service's webhook sender: each second, new events into the outbox, due deliveries out."""

    def __init__(self, store: Store, every_s: float = 1.0):
        super().__init__(every_s, "webhooks")
        self.store = store
        self._http = httpx.Client(timeout=httpx.Timeout(TIMEOUT_S, connect=3.0), follow_redirects=False)
        self._pool = ThreadPoolExecutor(16, thread_name_prefix="webhook-send")
        self._seen: tuple | None = None  # the sources' fingerprint when last read

    def start(self) -> None:
        self.enqueue()  # before the service answers: on a first start the cursors begin here
        super().start()

    def tick(self, beat: int) -> None:
        with self.flush_lock:
            self.enqueue()
        self.send_due()  # outside the lock: a slow endpoint does not hold up the outbox or a stop

    def flush(self) -> None:
        """At stop: what happened goes into the outbox; it is sent after the next start."""
        with self.flush_lock:
            self.enqueue()

    def enqueue(self) -> int:
        """Store a delivery per new event and subscribed endpoint, and move the cursors, at once. Nothing
        is written while no webhook is active or nothing changed."""
        now = datetime.now(UTC)
        cur = self.store.cursor()
        if not cur.execute("SELECT 1 FROM webhooks WHERE active").fetchone():
            return 0
        seen = fingerprint(cur)
        if seen == self._seen:
            return 0
        self._seen = seen
        with self.store.write() as cur:
            events = read_events(cur)
            hooks = cur.execute("SELECT id, events FROM webhooks WHERE active").fetchall()
            rows = [
                [
                    f"msg_{uuid.uuid4().hex}",
                    hook,
                    kind,
                    json.dumps({"type": kind, "timestamp": now.isoformat(), "data": data}, default=str),
                ]
                for kind, data in events
                for hook, wanted in hooks
                if kind in wanted
            ]
            if rows:
                cur.executemany(
                    "INSERT INTO webhook_deliveries (id, webhook_id, event, payload) VALUES (?, ?, ?, ?)",
                    rows,
                )
        return len(rows)

    def send_due(self) -> None:
        due = self.store.query(
            "SELECT d.id, d.payload, d.attempts, w.url, w.secret FROM webhook_deliveries d JOIN webhooks w "
            "ON w.id = d.webhook_id WHERE d.status = 'pending' AND w.active AND d.next_at <= now() "
            "ORDER BY d.created_at LIMIT ?",
            [BATCH],
        )
        results = list(self._pool.map(self._send, due))
        if results:
            with self.store.write() as cur:
                cur.executemany(
                    "UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1, last_status = ?, last_error = ?, "
                    "next_at = ?, delivered_at = ? WHERE id = ? AND status = 'pending'",  # not if removed meanwhile
                    results,
                )

    def _send(self, d: dict) -> list:
        """One attempt: the row update it leads to."""
        now = datetime.now(UTC)
        body = d["payload"].encode()
        headers = {
            "content-type": "application/json",
            "webhook-id": d["id"],
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Webhook(d["secret"]).sign(d["id"], now, body),
        }
        status, error = None, None
        try:
            r = self._http.post(d["url"], content=body, headers=headers)
            status = r.status_code
            if 200 <= status < 300:
                return ["delivered", status, None, now, now, d["id"]]
            error = f"answered {status}: {r.text[:200]}"
        except httpx.HTTPError as e:
            error = f"{type(e).__name__}: {e}"[:300]
        attempt = d["attempts"]  # attempts before this one
        if attempt >= len(RETRY_S):
            return ["failed", status, error, now, None, d["id"]]
        return ["pending", status, error, now + timedelta(seconds=RETRY_S[attempt]), None, d["id"]]

    def stop(self) -> None:
        super().stop()
        self._pool.shutdown(wait=False)
