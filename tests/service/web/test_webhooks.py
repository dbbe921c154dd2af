"""Webhooks: events read from the tables past their cursors (each once, no history replayed), delivered
to a real HTTP receiver that checks every Standard Webhooks signature, retried after a 500, and sent by
a running service for a change made through it."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
from standardwebhooks import Webhook

from annotator import simulate_run
from annotator.simulated import Profile
from service.control.context import Context
from service.control.webhooks import DeliveryFilter, Dispatcher, NewWebhook, add_webhook, list_deliveries
from service.core.registry import promote, register_model
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.data.events import read_events
from tests.service.gateway.conftest import cli
from tests.support.seeding import seed_tasks
from tests.support.servicectl import running_service


class Receiver:
    """A real HTTP endpoint: verifies each delivery with the secret, answers 500 to the first `fail`."""

    def __init__(self, fail: int = 0):
        self.secret: str | None = None
        self.received: list[dict] = []
        self.bad: list[str] = []
        self.fail = fail
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    payload = Webhook(outer.secret).verify(body, dict(self.headers))
                except Exception as e:  # noqa: BLE001 - recorded, and the test fails on it
                    outer.bad.append(repr(e))
                    payload = None
                failing = outer.fail > 0
                outer.fail -= failing
                if payload is not None:
                    outer.received.append({"id": self.headers["webhook-id"], "refused": failing, **payload})
                self.send_response(500 if failing else 200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def ctx(store: Store) -> Context:
    return cast(Context, SimpleNamespace(store=store))  # the webhook operations use the store only


def test_events_are_read_once_from_the_tables_without_replaying_history(store: Store) -> None:
    seed_tasks(store, n_prompts=1, k=2, styles=("brief",), required=1)  # one task, batch-0
    with store.write() as cur:
        assert read_events(cur) == []  # what was there before is history
    profiles = simulate_run.ensure_accounts(store, {"sim-a": Profile()})
    simulate_run.run(
        simulate_run.LocalQueue(store, AnnotationOptions(gold_rate=0)), profiles, seed=0, parallel=False
    )
    model = register_model(store, "reward", Path("/models/rm"), name="rm")
    promote(store, model, "passed")
    with store.write() as cur:
        events = read_events(cur)
    kinds = [k for k, _ in events]
    assert kinds == [
        "ranking.created",
        "task.completed",
        "batch.completed",
        "model.registered",
        "model.promoted",
    ]
    assert events[0][1]["annotator"] == "sim-a" and events[2][1] == {"batch": "batch-0", "tasks": 1}
    assert events[4][1]["reason"] == "passed"
    with store.write() as cur:
        assert read_events(cur) == []  # each once


def test_deliveries_are_signed_and_retried_until_accepted(store: Store) -> None:
    receiver = Receiver(fail=1)
    hook = add_webhook(ctx(store), NewWebhook(url=receiver.url, events=["model.registered"]))
    receiver.secret = hook["secret"]
    other = add_webhook(ctx(store), NewWebhook(url=receiver.url + "/unused", events=["job.finished"]))
    dispatcher = Dispatcher(store)
    try:
        with store.write() as cur:
            read_events(cur)  # the cursors start now
        model = register_model(store, "policy", Path("/models/p"), name="p")
        assert dispatcher.enqueue() == 1  # one event, one endpoint that wants it
        dispatcher.send_due()  # answered 500: retried after 1 s
        (first,) = list_deliveries(ctx(store), DeliveryFilter())
        assert (first["status"], first["attempts"], first["last_status"]) == ("pending", 1, 500)
        dispatcher.send_due()
        assert list_deliveries(ctx(store), DeliveryFilter())[0]["attempts"] == 1  # not due yet
        time.sleep(1.1)
        dispatcher.send_due()
        (done,) = list_deliveries(ctx(store), DeliveryFilter(status="delivered"))
        assert done["attempts"] == 2 and done["last_status"] == 200
    finally:
        receiver.close()
    assert receiver.bad == []
    assert [(r["refused"], r["type"], r["data"]["model_id"]) for r in receiver.received] == [
        (True, "model.registered", model),
        (False, "model.registered", model),
    ]
    assert (
        receiver.received[0]["id"] == receiver.received[1]["id"] == done["id"]
    )  # a retry is the same message
    assert list_deliveries(ctx(store), DeliveryFilter(webhook_id=other["id"])) == []


def test_bad_webhooks_are_refused_with_what_is_valid() -> None:
    with pytest.raises(ValueError, match="valid: ranking.created"):
        NewWebhook(url="http://x/hook", events=["model.deleted"])
    with pytest.raises(ValueError, match="not an http"):
        NewWebhook(url="ftp://x/hook")


@pytest.mark.slow
def test_a_running_service_delivers_what_is_done_through_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        model = register_model(store, "policy", tmp_path, name="candidate")
    receiver = Receiver()
    try:
        with running_service(data):
            out = cli(data, "webhooks", "add", receiver.url, "--event", "model.promoted")
            receiver.secret = out.split("signing secret: ")[1].split()[0]
            cli(data, "models", "promote", str(model), "--reason", "it won")
            deadline = time.monotonic() + 15
            while not receiver.received and time.monotonic() < deadline:
                time.sleep(0.2)
            log = cli(data, "webhooks", "deliveries")
    finally:
        receiver.close()
    assert receiver.bad == []
    (got,) = receiver.received
    assert got["type"] == "model.promoted" and got["data"]["model_id"] == model
    assert got["data"]["reason"].endswith("it won") and "delivered" in log
    assert json.loads(json.dumps(got))  # plain JSON all the way
