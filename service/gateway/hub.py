"""The service's side of stateless gateway replicas (`rankloop gateway --control URL`,
service/gateway/mirror.py): one call, `POST /admin/gateway/sync`, a few times a second per replica.

A replica sends its traffic rows (numbered; stored exactly once, see service/gateway/spool.py), what
its keys have in the rate-limit window, and what its requests in flight hold of the token budgets.
It gets back the state it serves (keys, routes with the replicas' addresses and keys, system prompts,
gateway settings; only when its hash changed), what every other gateway process has in each key's
window, and each budgeted key's use so far.

Limits across processes: each process admits against its own window plus the others' as last
reported, so a limit can be passed by what the other processes admit between two reports (one sync
period, `SYNC_EVERY_S`, plus the time the answer takes). A replica whose report is older than
`FRESH_S` (stopped, killed, cut off) counts no more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from service.core.settings import Settings
from service.core.store import Store
from service.data.prompts import latest_system_prompts
from service.gateway.budgets import PERIODS, labels
from service.gateway.deploy import Deployer
from service.gateway.keys import KeyBook
from service.gateway.traffic import table

SYNC_EVERY_S = 0.25
log = logging.getLogger("rankloop.gateway")
FRESH_S = 3.0
PROMPTS_TTL_S = 1.0


@dataclass
class Report:
    at: float  # time.monotonic() of the last sync
    address: str
    window: dict[int, tuple[int, int]]  # key id -> (requests, tokens) in the window
    held: dict[tuple[int, str], int]  # (key id, period label) -> tokens held by requests in flight


class Hub:
    """What the service tells its replicas, and what they told it last."""

    def __init__(self, store: Store, settings: Settings, deployer: Deployer, keys: KeyBook):
        self.store, self.settings, self.deployer, self.keys = store, settings, deployer, keys
        self._lock = threading.Lock()  # the reports only: never held across I/O or another lock
        self._ingest = threading.Lock()  # one ingest at a time: the cached last numbers match the table
        self._reports: dict[str, Report] = {}
        self._last: dict[str, int] = {}  # replica -> last row number stored (read from the table once)
        self._prompts: tuple[float, dict] = (-PROMPTS_TTL_S, {})
        # The service's own gateway counts what the replicas hold.
        keys.elsewhere = lambda kid: self._window(kid, None)
        keys.budgets.elsewhere = lambda kid, label: self._held(kid, label, None)

    def _fresh(self, but: str | None) -> list[Report]:
        now = time.monotonic()
        with self._lock:
            return [r for rid, r in self._reports.items() if rid != but and now - r.at < FRESH_S]

    def _window(self, kid: int, but: str | None) -> tuple[int, int]:
        parts = [r.window.get(kid, (0, 0)) for r in self._fresh(but)]
        return sum(p[0] for p in parts), sum(p[1] for p in parts)

    def _held(self, kid: int, label: str, but: str | None) -> int:
        return sum(r.held.get((kid, label), 0) for r in self._fresh(but))

    # -- one sync -----------------------------------------------------------------------------------

    def sync(
        self, replica: str, address: str, etag: str | None, rows: list[dict], window: dict, held: list
    ) -> dict:
        # The state goes back even when the rows cannot be stored now: a revoked key must still reach
        # the replica (which sends the rows again next time).
        error = None
        try:
            stored = self._store(replica, address, rows)
        except Exception as e:  # noqa: BLE001 - reported to the replica, which logs it
            error = f"the service could not store this replica's traffic: {e}"
            log.error("%s (replica %s at %s)", error, replica, address)
            stored = self._last.get(replica, 0)
        report = Report(
            time.monotonic(),
            address,
            {int(k): (int(v[0]), int(v[1])) for k, v in window.items()},
            {(int(k), str(label)): int(n) for k, label, n in held},
        )
        with self._lock:
            self._reports[replica] = report
        state = self.state()
        tag = hashlib.sha256(json.dumps(state, sort_keys=True, default=str).encode()).hexdigest()
        keys = self.keys
        own = keys.window()
        others = {}
        for key in {*own, *(k for r in self._fresh(replica) for k in r.window)}:
            mine, theirs = own.get(key, (0, 0)), self._window(key, replica)
            others[key] = (mine[0] + theirs[0], mine[1] + theirs[1])
        now = labels(datetime.now(UTC))
        used = [
            [
                k.id,
                now[period][0],
                keys.budgets.used(k.id, now[period][0]) - report.held.get((k.id, now[period][0]), 0),
            ]
            for k in keys.active().values()
            for period in PERIODS
            if k.budgets[period] is not None
        ]
        return {
            "acked": stored,
            "error": error,
            "etag": tag,
            "state": state if tag != etag else None,
            "others": others,
            "budget_used": used,
        }

    def _store(self, replica: str, address: str, rows: list[dict]) -> int:
        """Store the rows numbered above the last stored for `replica`, and that number, in one
        transaction: a resend stores nothing twice. The new last number."""
        store = self.store
        with self._ingest:
            last = self._last.get(replica)
            if last is None:
                last = int(
                    store.scalar(
                        "SELECT coalesce(max(last_seq), 0) FROM gateway_replicas WHERE id = ?", [replica]
                    )
                )
            new = sorted((r for r in rows if int(r["seq"]) > last), key=lambda r: int(r["seq"]))
            if new or replica not in self._last:
                top = int(new[-1]["seq"]) if new else last
                with store.write() as cur:
                    if new:
                        parsed = [
                            {
                                **r,
                                "created_at": datetime.fromisoformat(r["created_at"]),
                                # whatever an upstream called its answer, stored as text
                                "response_id": None
                                if r.get("response_id") is None
                                else str(r["response_id"]),
                            }
                            for r in new
                        ]
                        store.insert_arrow(cur, "traffic", table(parsed))
                    cur.execute(
                        "INSERT INTO gateway_replicas (id, address, last_seq, seen_at) VALUES (?, ?, ?, now()) "
                        "ON CONFLICT (id) DO UPDATE SET address = excluded.address, last_seq = excluded.last_seq, "
                        "seen_at = excluded.seen_at",
                        [replica, address, top],
                    )
                last = top
            self._last[replica] = last
        for r in new:  # their usage counts with the service's own (written every few seconds)
            self.keys.count(
                int(r["key_id"]),
                int(r.get("prompt_tokens") or 0),
                int(r.get("completion_tokens") or 0),
                datetime.fromisoformat(r["created_at"]),
            )
        return last

    # -- what replicas serve --------------------------------------------------------------------------

    def state(self) -> dict:
        at, prompts = self._prompts
        if time.monotonic() - at >= PROMPTS_TTL_S:
            prompts = {p["name"]: p for p in latest_system_prompts(self.store)}
            self._prompts = (time.monotonic(), prompts)
        return {
            "keys": {h: asdict(k) for h, k in self.keys.active().items()},
            "routes": self.deployer.spec(),
            "prompts": prompts,
            "gateway": self.settings.gateway.model_dump(),
        }

    def replicas(self) -> list[dict]:
        """The gateway replicas that synced since the service started, for `rankloop deploy routes`."""
        now = time.monotonic()
        with self._lock:
            return [
                {
                    "id": rid,
                    "address": r.address,
                    "last_sync_s": round(now - r.at, 2),
                    "up": now - r.at < FRESH_S,
                }
                for rid, r in sorted(self._reports.items(), key=lambda kv: kv[1].address)
            ]
