"""The real service over HTTP: nothing without login, roles, throttling, no stray files,
and 20 concurrent simulated annotators through the submit path."""

import threading
import uuid
from pathlib import Path

import httpx
import pytest

from annotator.accounts import add_annotator
from service.core.store import Store
from tests.support.seeding import seed_tasks
from tests.support.servicectl import admin_headers, running_service

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("svc") / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=125, k=4, required=2)  # 250 tasks x R=2 = 500 rankings
        add_annotator(store, "alice", "annotator", "alice-password")
        add_annotator(store, "boss", "admin", "boss-password")
        for i in range(20):
            add_annotator(store, f"sim-{i}", "simulated")
    with running_service(data, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0"}) as url:
        yield url, data


def token(url: str, name: str, password: str) -> str:
    r = httpx.post(f"{url}/api/annotate/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def test_nothing_answers_without_login(service) -> None:
    url, _ = service
    for path in [
        "/annotate/config",
        "/annotate/gradio_api/info",
        "/annotate/gradio_api/queue/data",
        "/api/annotate/next",
        "/api/annotate/progress",
        "/admin/status",
        "/admin/quality",
    ]:
        r = httpx.get(url + path)
        assert r.status_code == 401, path
    r = httpx.post(
        f"{url}/annotate/gradio_api/queue/join", json={"fn_index": 0, "data": [], "session_hash": "x"}
    )
    assert r.status_code == 401
    r = httpx.post(
        f"{url}/api/annotate/submit", json={"task_id": 1, "submission_id": "x", "ranks": [1, 2, 3, 4]}
    )
    assert r.status_code == 401 and "log in first" in r.json()["error"]


def test_roles(service) -> None:
    url, data = service
    alice = {"Authorization": f"Bearer {token(url, 'alice', 'alice-password')}"}
    assert httpx.get(f"{url}/admin/status", headers=alice).status_code == 403
    assert httpx.get(f"{url}/api/annotate/progress", headers=alice).status_code == 200
    boss = {"Authorization": f"Bearer {token(url, 'boss', 'boss-password')}"}
    assert httpx.get(f"{url}/admin/status", headers=boss).json()["tasks"] == 250
    assert httpx.get(f"{url}/admin/status", headers=admin_headers(data)).status_code == 200
    # The admin key may act only for simulated accounts, never for people.
    r = httpx.get(
        f"{url}/api/annotate/next", headers={**admin_headers(data), "X-Rankloop-Annotator": "alice"}
    )
    assert r.status_code == 403 and "not a simulated annotator" in r.json()["error"]
    r = httpx.get(f"{url}/api/annotate/next", headers={**alice, "X-Rankloop-Annotator": "sim-1"})
    assert r.status_code == 401  # a person's token is not the admin key
    assert (
        httpx.get(
            f"{url}/api/annotate/next", headers={"Authorization": "Bearer 1.99999999999.forged"}
        ).status_code
        == 401
    )


def test_failed_logins_are_throttled(service) -> None:
    url, _ = service
    codes = [
        httpx.post(f"{url}/api/annotate/login", json={"name": "boss", "password": "guess"}).status_code
        for _ in range(5)
    ]
    assert codes[:3] == [401, 401, 401] and 429 in codes[3:]
    r = httpx.post(f"{url}/api/annotate/login", json={"name": "boss", "password": "boss-password"})
    assert r.status_code == 429 and "try again in" in r.json()["error"]  # even the right password waits


def test_gradio_serves_no_files_outside_its_assets(service) -> None:
    url, data = service
    with httpx.Client(base_url=url) as c:
        assert (
            c.post("/annotate/login", data={"username": "alice", "password": "alice-password"}).status_code
            == 200
        )
        assert c.get("/annotate/config").status_code == 200  # logged in now
        for path in ["/etc/passwd", str(data / "rankloop.duckdb"), str(data / "admin.key")]:
            r = c.get(f"/annotate/gradio_api/file={path}")
            assert r.status_code in (403, 404), path
            assert "root:" not in r.text


def test_bad_submissions_get_clear_4xx(service) -> None:
    url, data = service
    sim = {**admin_headers(data), "X-Rankloop-Annotator": "sim-0"}
    task = httpx.get(f"{url}/api/annotate/next", headers=sim).json()["task"]
    before = httpx.get(f"{url}/admin/status", headers=admin_headers(data)).json()["rankings"]
    cases = [
        ({"ranks": [1, 2, 3]}, 422, "the task has 4 candidates but 3 ranks"),
        ({"ranks": [1, 2, 3, 9]}, 422, "rank 9 is outside 1..4"),
        ({"ranks": [1, 2, 3, 4], "task_id": task["task_id"] + 1}, 409, "not leased to you"),
        ({"ranks": "best"}, 422, "ranks"),
    ]
    for extra, code, message in cases:
        body = {"task_id": task["task_id"], "submission_id": uuid.uuid4().hex, **extra}
        r = httpx.post(f"{url}/api/annotate/submit", json=body, headers=sim)
        assert r.status_code == code and message in r.json()["error"], r.text
    assert httpx.get(f"{url}/admin/status", headers=admin_headers(data)).json()["rankings"] == before
    r = httpx.post(
        f"{url}/api/annotate/submit",
        headers=sim,
        json={"task_id": task["task_id"], "submission_id": uuid.uuid4().hex, "ranks": [1, 1, 2, 3]},
    )
    assert r.status_code == 200


def test_twenty_concurrent_annotators_store_exactly_500(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=125, k=4, required=2)  # 250 tasks x R = 2: room for exactly 500
        for i in range(20):
            add_annotator(store, f"sim-{i}", "simulated")
    retried, errors = [], []
    with running_service(data, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0"}) as url:

        def annotate(name: str) -> None:
            headers = {**admin_headers(data), "X-Rankloop-Annotator": name}
            with httpx.Client(base_url=url, headers=headers, timeout=60) as c:
                try:
                    n = 0
                    while (task := c.get("/api/annotate/next").json()["task"]) is not None:
                        body = {
                            "task_id": task["task_id"],
                            "submission_id": uuid.uuid4().hex,
                            "ranks": list(range(1, len(task["candidates"]) + 1)),
                        }
                        first = c.post("/api/annotate/submit", json=body)
                        assert first.status_code == 200, first.text
                        n += 1
                        if n % 3 == 0:  # a retry after a "dropped connection": same submission id
                            again = c.post("/api/annotate/submit", json=body)
                            assert again.status_code == 200 and again.json() == {
                                **first.json(),
                                "duplicate": True,
                            }
                            retried.append(body["submission_id"])
                except BaseException as e:
                    errors.append(e)

        threads = [threading.Thread(target=annotate, args=(f"sim-{i}",)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    assert len(retried) > 100
    with Store.open(data / "rankloop.duckdb") as store:  # the service has let go of the database
        assert store.scalar("SELECT count(*) FROM rankings") == 500
        assert store.scalar("SELECT count(DISTINCT submission_id) FROM rankings") == 500
        per_task = store.query(
            "SELECT task_id, count(*) AS n, count(DISTINCT annotator_id) AS people "
            "FROM rankings GROUP BY task_id"
        )
        assert len(per_task) == 250 and {(r["n"], r["people"]) for r in per_task} == {(2, 2)}
        assert store.scalar("SELECT count(DISTINCT annotator_id) FROM rankings") == 20
