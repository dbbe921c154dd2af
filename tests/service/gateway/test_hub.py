"""Stateless gateway replicas, in one process on a real DuckDB file: the replica's spool on disk
(service/gateway/spool.py) and the service's hub (service/gateway/hub.py) it syncs with: rows stored
exactly once however often they are sent, limits and budgets counted across processes, state sent
only when it changed."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.core.errors import UserError
from service.core.settings import Settings
from service.core.store import Store
from service.gateway.budgets import labels
from service.gateway.hub import Hub
from service.gateway.key_records import create_key, revoke_key
from service.gateway.router import Gateway
from service.gateway.schemas import GatewayError
from service.gateway.spool import DIED, Spool
from service.gateway.traffic import prepare


def row(key_id: int, marker: str, **extra) -> dict:
    return prepare(
        {
            "key_id": key_id,
            "route": "current",
            "model_id": 1,
            "n": 1,
            "stream": False,
            "status": 200,
            "prompt_tokens": 3,
            "completion_tokens": 4,
            "request": {"marker": marker},
            **extra,
        }
    )


def test_the_spool_keeps_rows_until_acknowledged_and_logs_a_request_cut_by_a_crash(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    done = spool.begin(row(1, "done"))
    spool.add(row(1, "done"), done)
    cut = spool.begin(row(1, "cut"))  # the process dies while this one streams
    gone = spool.begin(row(1, "never reached a model"))
    spool.cancel(gone)
    spool.add(row(1, "second"), None)
    assert [r["seq"] for r in spool.pending(10, 1 << 20)] == [1, 2]
    assert [r["seq"] for r in spool.pending(10, 1)] == [1]  # a batch is capped in bytes, but never empty
    spool.ack(1)
    with pytest.raises(UserError, match="another gateway is using the spool"):
        Spool(tmp_path / "spool")  # one process per spool
    assert cut
    spool.close()  # as a SIGKILL leaves it: the file as written, the last line possibly cut short
    with (tmp_path / "spool" / "traffic.jsonl").open("a") as f:
        f.write('{"seq": 9, "row": {"trunc')

    again = Spool(tmp_path / "spool")
    rows = again.pending(10, 1 << 20)
    assert [(r["seq"], json.loads(r["request"])["marker"], r["status"]) for r in rows] == [
        (2, "second", 200),
        (3, "cut", DIED),  # begun, never ended: logged once, as cut off
    ]
    assert (
        again.replica == (tmp_path / "spool" / "replica.id").read_text()
    )  # the same replica after a restart
    again.ack(3)
    again.close()
    assert Spool(tmp_path / "spool").pending(10, 1 << 20) == []  # nothing left, numbering goes on from 3


def test_compaction_keeps_what_is_still_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("service.gateway.spool.COMPACT_BYTES", 1)
    spool = Spool(tmp_path / "s")
    open_one = spool.begin(row(1, "open"))
    for i in range(3):
        spool.add(row(1, f"r{i}"), None)
    spool.ack(2)  # compacts: the open request and row 3 stay
    lines = (tmp_path / "s" / "traffic.jsonl").read_text().splitlines()
    assert len(lines) == 2
    spool.add(row(1, "after"), open_one)
    spool.close()
    assert [r["seq"] for r in Spool(tmp_path / "s").pending(10, 1 << 20)] == [3, 4]


@pytest.fixture
def hub(store: Store, tmp_path: Path) -> Hub:
    gw = Gateway.create(store, Settings(data_dir=tmp_path))
    return Hub(store, gw.settings, gw.deployer, gw.keys)


def sync(hub: Hub, replica: str, rows=(), window=None, held=(), etag=None) -> dict:
    return hub.sync(replica, f"{replica}:1", etag, list(rows), window or {}, list(held))


def numbered(rows: list[dict], first: int = 1) -> list[dict]:
    return [{**r, "seq": first + i, "created_at": r["created_at"].isoformat()} for i, r in enumerate(rows)]


def test_rows_are_stored_exactly_once_however_often_they_are_sent(hub: Hub, store: Store) -> None:
    create_key(store, "app")
    kid = store.scalar("SELECT id FROM api_keys WHERE name = 'app'")
    rows = numbered([row(kid, f"m{i}") for i in range(5)])
    assert sync(hub, "aaaaaaaa", rows[:3])["acked"] == 3
    assert sync(hub, "aaaaaaaa", rows)["acked"] == 5  # 1-3 again (an answer lost): not stored twice
    assert sync(hub, "aaaaaaaa", rows[:2])["acked"] == 5
    assert sync(hub, "bbbbbbbb", numbered([row(kid, "other")]))["acked"] == 1  # its own numbering
    markers = [
        json.loads(r["request"])["marker"] for r in store.query("SELECT request FROM traffic ORDER BY id")
    ]
    assert sorted(markers) == ["m0", "m1", "m2", "m3", "m4", "other"]
    hub.keys.flush()  # usage counted from the stored rows, once each
    assert store.query(
        "SELECT requests, prompt_tokens, completion_tokens FROM api_keys WHERE id = ?", [kid]
    ) == [{"requests": 6, "prompt_tokens": 18, "completion_tokens": 24}]
    fresh = Hub(
        store, hub.settings, hub.deployer, hub.keys
    )  # a restarted service reads the last numbers from the table
    assert sync(fresh, "aaaaaaaa", rows)["acked"] == 5
    assert store.scalar("SELECT count(*) FROM traffic") == 6


def test_state_is_sent_when_it_changes(hub: Hub, store: Store) -> None:
    first = sync(hub, "aaaaaaaa")
    assert first["state"]["routes"]["primary"] is None and first["state"]["keys"] == {}
    assert sync(hub, "aaaaaaaa", etag=first["etag"])["state"] is None
    create_key(store, "app", rpm=5)
    changed = sync(hub, "aaaaaaaa", etag=first["etag"])
    (key,) = changed["state"]["keys"].values()
    assert key["name"] == "app" and key["rpm"] == 5
    revoke_key(store, "app")
    assert sync(hub, "aaaaaaaa", etag=changed["etag"])["state"]["keys"] == {}


def test_limits_and_budgets_count_every_process(hub: Hub, store: Store) -> None:
    create_key(store, "app", rpm=10, tpm=1000, tokens_per_day=500)
    keys = hub.keys
    key = next(iter(keys.active().values()))
    day = labels(datetime.now(UTC))["day"][0]
    # Replica A admitted 6 requests holding 400 tokens; B admitted 3 and holds 50 of the budget.
    sync(hub, "aaaaaaaa", window={str(key.id): (6, 400)}, held=[(key.id, day, 400)])
    answer = sync(hub, "bbbbbbbb", window={str(key.id): (3, 100)}, held=[(key.id, day, 50)])
    assert answer["others"] == {key.id: (6, 400)}  # what B must count: A's (and the service's, none)
    assert answer["budget_used"] == [[key.id, day, 400]]  # everyone's but B's own hold
    assert keys.admit(key) == 0  # the service's own gateway: 9 elsewhere + this one = 10
    assert keys.admit(key) > 0
    with pytest.raises(GatewayError, match="daily token budget"):
        keys.hold(key, {"prompt": "x", "max_tokens": 60}, 1)  # 450 held elsewhere + 61 > 500
    assert keys.hold(key, {"prompt": "x", "max_tokens": 40}, 1) is not None
    a = sync(hub, "aaaaaaaa", window={str(key.id): (6, 400)})
    assert a["others"] == {key.id: (4, 141)}  # B's 3 and 100, the service's 1 and 41


def test_a_replica_that_stops_reporting_counts_no_more(hub: Hub, store: Store, monkeypatch) -> None:
    create_key(store, "app", rpm=5)
    key = next(iter(hub.keys.active().values()))
    sync(hub, "aaaaaaaa", window={str(key.id): (5, 0)})
    assert hub.keys.admit(key) > 0
    monkeypatch.setattr("service.gateway.hub.FRESH_S", 0.0)
    assert hub.keys.admit(key) == 0


def _hold_spool(path: str, ready, stop) -> None:
    Spool(Path(path))
    ready.set()
    stop.wait(10)


def test_a_second_process_cannot_share_a_spool(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    ready, stop = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_spool, args=(str(tmp_path / "s"), ready, stop))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(UserError, match="give each gateway its own --spool"):
            Spool(tmp_path / "s")
    finally:
        stop.set()
        proc.join(10)
    Spool(tmp_path / "s").close()  # free once that process is gone
