"""The Python client against a real `rankloop serve`: typed operations (uploads and downloads too),
the annotation API as a person and acting for a simulated account, the CLI's errors, the async client;
retries against a server that is busy once."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from reward.configfile import ConfigError
from service.core.store import Store
from service.sdk import AsyncRankloop, CommandFailed, Rankloop
from service.sdk.generate import OUT, source
from tests.support.seeding import seed_tasks
from tests.support.servicectl import admin_headers, running_service


def test_the_operations_are_generated_from_the_command_table() -> None:
    assert OUT.read_text() == source(), "run `python -m service.sdk.generate`"


@pytest.mark.slow
def test_the_client_against_a_real_service(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=2, k=2, styles=("brief",), required=1)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "What is a llama?"}\n{"prompt": "Name a river."}\n')
    with running_service(data, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0"}) as url:
        key = admin_headers(data)["Authorization"].split()[1]
        with Rankloop(url, key=key) as rl:
            made = rl.keys_create(name="app", rpm=5)
            assert made["key"].startswith("rk-") and made["scope"] == "client"
            assert [k["name"] for k in rl.keys_list()] == ["app"]
            assert rl.prompts_add(file=prompts)["added"] == 2  # an upload
            with pytest.raises(CommandFailed, match="a key named 'app' exists") as e:
                rl.keys_create(name="app")
            assert e.value.code == 2  # the exit code `rankloop keys create` gives
            with pytest.raises(ConfigError, match="rpm"):  # refused before it is sent, as by the CLI
                rl.keys_create(name="other", rpm=0)
            rl.annotators_add(name="alice", role="annotator", password="correct horse 42")
            rl.annotators_add(name="sim-1", role="simulated")
            task = rl.next_task(acting_for="sim-1")
            done = rl.submit(
                {"task_id": task["task_id"], "submission_id": "s1", "ranks": [1, 2]}, acting_for="sim-1"
            )
            assert done["task_id"] == task["task_id"] and not done["duplicate"]
            board = rl.quality_dashboard()
            assert [w["annotator"] for w in board["weeks"]] == ["sim-1"]
            csv_text = httpx.get(f"{url}/admin/quality/dashboard.csv", headers=admin_headers(data)).text
            assert csv_text.startswith("annotator,role,week,") and "\nsim-1,simulated," in csv_text
            assert httpx.get(f"{url}/admin/quality/dashboard.csv").status_code == 401
            # Listing operations come a page at a time.
            for i in range(5):
                rl.annotators_add(name=f"page-{i}", role="simulated")
            assert len(rl.annotators_list(limit=2, offset=1)) == 2
            names = [a["name"] for a in rl.pages("annotators.list", page_size=2)]
            assert names == [a["name"] for a in rl.annotators_list()] and len(names) == 7
            with pytest.raises(CommandFailed, match="not a listing operation"):
                next(rl.pages("keys.create"))
            guideline = tmp_path / "guide.md"
            guideline.write_text("Prefer correct answers.")
            assert rl.guidelines_set(file=guideline)["version"] == 1  # an upload
            rl.annotators_add(name="rita", role="reviewer", password="correct horse 43")
            with pytest.raises(CommandFailed, match="no account 'nobody'"):
                rl.review_resolve(task_id=1, reviewer="nobody", ranks=[1, 2], rationale="x")

        alice = Rankloop(url).login("alice", "correct horse 42")
        mine = alice.next_task()
        assert mine is not None and mine["task_id"] != task["task_id"]  # sim-1's task needed one ranking
        assert mine["guidelines"]["text"] == "Prefer correct answers." == alice.guidelines()["text"]
        with pytest.raises(CommandFailed, match="takes 1 strength"):
            alice.submit(
                {"task_id": mine["task_id"], "submission_id": "a0", "ranks": [2, 1], "strengths": []}
            )
        alice.submit(
            {
                "task_id": mine["task_id"],
                "submission_id": "a1",
                "ranks": [2, 1],
                "strengths": ["clearly"],
                "attributes": [{"helpfulness": 1}, {"helpfulness": 3}],
            }
        )
        assert alice.progress()["total"] == 1
        with pytest.raises(CommandFailed, match="needs role reviewer or admin"):
            alice.next_review()
        rita = Rankloop(url).login("rita", "correct horse 43")
        assert rita.next_review() is None  # nothing is contested
        with pytest.raises(CommandFailed, match="needs a rationale"):
            rita.review(mine["task_id"], [1, 2], " ")
        with pytest.raises(CommandFailed, match="is not contested"):
            rita.review(mine["task_id"], [1, 2], "the first is correct")
        rita.close()
        with pytest.raises(CommandFailed, match="admin"):
            alice.keys_list()  # a person's token opens the annotation API, not /admin
        alice.close()

        async def async_part() -> tuple[list, dict]:
            async with AsyncRankloop(url, key=key) as arl:
                keys = await arl.keys_list()
                paged = [a["name"] async for a in arl.pages("annotators.list", page_size=3)]
                assert paged == [a["name"] for a in await arl.annotators_list()]
                written = await arl.export(format="jsonl", out=tmp_path / "rankings.jsonl")  # a download
                with pytest.raises(CommandFailed, match="no job"):
                    await arl.jobs_show(job_id=99)
                return keys, written

        keys, written = asyncio.run(async_part())
    assert [k["name"] for k in keys] == ["app"]
    lines = (tmp_path / "rankings.jsonl").read_text().splitlines()
    assert len(lines) == 2 and written, written


class Busy:
    """A server that answers 503 once to each path, then 200 with a JSON body."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                first = all(p != self.path for _, p in outer.seen)
                outer.seen.append((self.command, self.path))
                body = json.dumps({"error": "busy"} if first else [{"name": "app"}]).encode()
                self.send_response(503 if first else 200)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_reads_are_retried_when_the_service_is_busy_and_writes_are_not() -> None:
    busy = Busy()
    try:
        rl = Rankloop(busy.url, key="k", max_retries=2)
        assert rl.keys_list() == [{"name": "app"}]  # a GET: 503, then asked again
        with pytest.raises(CommandFailed, match="busy"):
            rl.keys_revoke(name="app")  # a POST may have done its work: not sent again
        assert busy.seen == [
            ("GET", "/admin/keys"),
            ("GET", "/admin/keys"),
            ("POST", "/admin/keys/app/revoke"),
        ]
        assert asyncio.run(AsyncRankloop(busy.url, key="k").keys_list()) == [{"name": "app"}]
    finally:
        busy.server.shutdown()
        busy.server.server_close()  # refused from now on
    with pytest.raises(CommandFailed, match="does not answer"):
        Rankloop(busy.url, max_retries=0)._annotation("GET", "/progress")
