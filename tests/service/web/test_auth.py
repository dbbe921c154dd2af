"""Authentication (service/web/auth.py) and the failed-login throttle, through the real FastAPI app
(Starlette's TestClient on `create_app(..., mount_ui=False)`), a real store, real accounts and real
scrypt password hashing. The throttle's clock is injected, so no test sleeps.

The throttle's rule: successes never count against a client address (one office's NAT logs in
all day), failures do, per name and per address, and every count decays."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from annotator.accounts import LoginThrottle, add_annotator, login
from service.core.settings import load_settings
from service.core.store import Store
from service.gateway.key_records import create_key
from service.web.app import create_app
from service.web.auth import Auth, admin_key_ok, bearer_token
from tests.support.servicectl import running_service

ADMIN_KEY = "k" * 40
OFFICE = ("10.0.0.1", 4000)  # one NAT, many people


@dataclass
class Service:
    app: FastAPI
    store: Store
    auth: Auth
    now: list[float]  # the throttle's clock

    def client(self, address: tuple[str, int] = OFFICE) -> TestClient:
        """A client at `address` (the app sees it as the request's client address)."""
        return TestClient(self.app, client=address)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    settings = load_settings(
        overrides={"data_dir": str(tmp_path / "data"), "admin_key": ADMIN_KEY}, environ={}
    )
    with Store.open(settings.paths.db) as store:
        app = create_app(settings, store, mount_ui=False)
        now = [1000.0]
        auth: Auth = app.state.auth
        auth.throttle.clock = lambda: now[0]
        try:
            yield Service(app, store, auth, now)
        finally:
            app.state.ctx.jobs.stop_all()


def log_in(c: TestClient, name: str, password: str) -> httpx.Response:
    return c.post("/api/annotate/login", json={"name": name, "password": password})


# -- the throttle, through the app ------------------------------------------------------------------


@pytest.mark.slow  # 200 scrypt checks: ~15 s on an idle core
def test_two_hundred_logins_from_one_address_are_never_slowed(service: Service) -> None:
    """40 people behind one address log in 5 times each (the clock stands still: no decay helps)."""
    for i in range(40):
        add_annotator(service.store, f"person{i}", "annotator", f"password-{i}")
    with service.client() as c:
        for round_ in range(5):
            for i in range(40):
                r = log_in(c, f"person{i}", f"password-{i}")
                assert r.status_code == 200, (round_, i, r.text)
    assert service.auth.throttle.wait_s("anyone", OFFICE[0]) == 0
    # A few typos among them cost nothing either.
    with service.client() as c:
        for i in range(5):
            assert log_in(c, f"person{i}", "typo").status_code == 401
            assert log_in(c, f"person{i}", f"password-{i}").status_code == 200


def test_a_password_spray_from_one_address_is_slowed(service: Service) -> None:
    add_annotator(service.store, "alice", "annotator", "alice-password")
    free = service.auth.throttle.free_per_address
    with service.client() as c:
        codes = [log_in(c, f"user{i}", "Winter2024!").status_code for i in range(free)]
        assert codes == [401] * free  # one guess per name: the names' own throttles never trip
        r = log_in(c, "user-next", "Winter2024!")
        assert r.status_code == 429 and "from your address" in r.json()["error"]
        assert log_in(c, "alice", "alice-password").status_code == 429  # the address waits, whoever it is
    with service.client(("192.0.2.7", 1)) as elsewhere:  # another address is not held back
        assert log_in(elsewhere, "alice", "alice-password").status_code == 200
    with service.client() as c:
        waits = []
        for _ in range(5):  # each wait over, one more guess, and the next wait doubles
            waits.append(service.auth.throttle.wait_s("x", OFFICE[0]))
            service.now[0] += waits[-1]
            assert log_in(c, f"user{len(waits) + 100}", "Summer2024!").status_code == 401
            assert log_in(c, "user-next", "Summer2024!").status_code == 429
        assert waits == [1.0, 2.0, 4.0, 8.0, 16.0]


def test_a_name_is_still_protected_from_one_address_or_many(service: Service) -> None:
    add_annotator(service.store, "boss", "admin", "boss-password")
    for i in range(3):
        with service.client((f"198.51.100.{i}", 1)) as c:
            assert log_in(c, "boss", "guess").status_code == 401
    with service.client(("198.51.100.9", 1)) as c:
        r = log_in(c, "boss", "boss-password")  # a fourth address: the name waits all the same
        assert r.status_code == 429 and "try again in 1 s" in r.json()["error"]
        service.now[0] += 1
        assert log_in(c, "boss", "boss-password").status_code == 200
        assert service.auth.throttle.wait_s("boss") == 0  # success clears the name


def test_failure_counts_decay(service: Service) -> None:
    throttle = service.auth.throttle
    free, forget = throttle.free_per_address, throttle.forget_s
    with service.client() as c:
        for i in range(free + 2):
            service.now[0] += 60  # past any wait: every guess is checked
            assert log_in(c, f"user{i}", "guess").status_code == 401
        assert throttle.wait_s("anyone", OFFICE[0]) == 4.0  # 32 failures: 2^(32 - 30) s
        service.now[0] += forget  # one failure forgotten per forget_s without a new one
        assert throttle.wait_s("anyone", OFFICE[0]) == 0
        assert log_in(c, "user-a", "guess").status_code == 401  # 31 left + this one: 2^2 again
        assert throttle.wait_s("anyone", OFFICE[0]) == 4.0
        service.now[0] += forget * 3
        assert log_in(c, "user-b", "guess").status_code == 401  # 32 - 3 = 29: under the limit, +1
        assert throttle.wait_s("anyone", OFFICE[0]) == 1.0
        service.now[0] += forget * 40  # all forgotten: the address starts afresh
        assert all(log_in(c, f"fresh{i}", "guess").status_code == 401 for i in range(free))
    # A name's count decays the same way.
    assert all(not login(service.store, throttle, "carol", "guess") for _ in range(3))
    assert throttle.wait_s("carol") == 1.0
    service.now[0] += forget
    assert throttle.wait_s("carol") == 0
    assert login(service.store, throttle, "carol", "guess") is None
    assert throttle.wait_s("carol") == 1.0  # back at 3 failures, not 4


# -- the throttle's own rules -----------------------------------------------------------------------


def test_successes_neither_count_nor_forgive_an_address() -> None:
    now = [0.0]
    t = LoginThrottle(free=3, free_per_address=5, clock=lambda: now[0])
    for _ in range(500):  # successes: nothing accumulates, nothing is kept
        assert t.begin("alice", "10.0.0.1")
        t.succeeded("alice", "10.0.0.1")
    assert t.wait_s("bob", "10.0.0.1") == 0 and not t._counts
    for i in range(5):
        assert t.begin(f"user{i}", "10.0.0.1")
        t.failed(f"user{i}", "10.0.0.1")
    assert t.wait_s("alice", "10.0.0.1") == 1.0
    now[0] += 1
    assert t.begin("alice", "10.0.0.1")
    t.succeeded("alice", "10.0.0.1")  # one right password does not clear a sprayed address
    assert t.wait_s("bob", "10.0.0.1") > 0


def test_parallel_attempts_from_a_held_back_address_go_one_at_a_time() -> None:
    now = [0.0]
    t = LoginThrottle(free_per_address=5, max_in_flight=40, clock=lambda: now[0])
    granted: list[int] = []
    start = threading.Barrier(50)

    def attempt(i: int) -> None:
        start.wait()
        if t.begin(f"person{i}", "10.0.0.1"):
            granted.append(i)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(50)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # A clean address: a team logging in at once is let through, up to max_in_flight at a time.
    assert len(granted) == 40 and t.wait_s("anyone", "10.0.0.1") > 0
    for i in granted:  # all of them wrong: a spray, after all
        t.failed(f"person{i}", "10.0.0.1")
    now[0] += 3600  # past the wait: now one attempt at a time, each waiting for the one before
    assert t.begin("a", "10.0.0.1") and not t.begin("b", "10.0.0.1")


def test_the_table_stays_bounded_and_keeps_who_is_held_back() -> None:
    now = [0.0]
    t = LoginThrottle(free=3, free_per_address=5, max_keys=50, clock=lambda: now[0])
    for i in range(5):
        assert t.begin(f"user{i}", "10.0.0.1")
        t.failed(f"user{i}", "10.0.0.1")
    assert not t.begin("user99", "10.0.0.1") and t.begin("user99", "10.0.0.2")
    t.failed("user99", "10.0.0.2")
    for i in range(60):  # names of any length take one fixed-size key
        if t.begin("x" * 100_000 + str(i), f"10.1.{i}.1"):
            t.failed("x" * 100_000 + str(i), f"10.1.{i}.1")
    assert len(t._counts) <= 50
    assert t.wait_s("user0", "10.0.0.1") > 0  # still held back after the flood
    now[0] += 120  # everyone's wait is over: their entries may go
    assert t.begin("newcomer", "10.9.9.9")


# -- one auth module for every way in ---------------------------------------------------------------


def test_bearer_tokens_and_the_admin_key() -> None:
    assert bearer_token("Bearer abc ") == "abc" and bearer_token("bearer abc") == "abc"
    assert (
        bearer_token("Basic abc") is None and bearer_token("Bearer  ") is None and bearer_token(None) is None
    )
    assert admin_key_ok(ADMIN_KEY, ADMIN_KEY) and not admin_key_ok(ADMIN_KEY, ADMIN_KEY[:-1] + "x")
    assert not admin_key_ok(None, "") and not admin_key_ok(None, None) and not admin_key_ok(ADMIN_KEY, None)


def test_annotation_api_admin_and_gateway_share_one_auth(service: Service) -> None:
    add_annotator(service.store, "alice", "annotator", "alice-password")
    add_annotator(service.store, "boss", "admin", "boss-password")
    add_annotator(service.store, "sim-0", "simulated")
    client_key = create_key(service.store, "app")
    admin_scope = create_key(service.store, "ops", scope="admin")
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    with service.client() as c:
        alice = {"Authorization": f"Bearer {log_in(c, 'alice', 'alice-password').json()['token']}"}
        boss = {"Authorization": f"Bearer {log_in(c, 'boss', 'boss-password').json()['token']}"}
        # The annotation API: a person's token, or the admin key acting for a simulated account.
        assert c.get("/api/annotate/progress", headers=alice).status_code == 200
        assert c.get("/api/annotate/progress", headers={**admin, "X-Rankloop-Annotator": "sim-0"}).is_success
        r = c.get("/api/annotate/next", headers={**admin, "X-Rankloop-Annotator": "alice"})
        assert r.status_code == 403 and "not a simulated annotator" in r.json()["error"]
        r = c.get("/api/annotate/next", headers={**alice, "X-Rankloop-Annotator": "sim-0"})
        assert r.status_code == 401 and "needs the admin key" in r.json()["error"]
        r = c.get("/api/annotate/next")
        assert r.status_code == 401 and "log in first" in r.json()["error"]
        # /admin: the admin key, an admin's token, an admin-scope API key; nobody else.
        assert c.get("/admin/status", headers=admin).status_code == 200
        assert c.get("/admin/status", headers=boss).status_code == 200
        assert c.get("/admin/status", headers={"Authorization": f"Bearer {admin_scope}"}).status_code == 200
        r = c.get("/admin/status", headers={"Authorization": f"Bearer {client_key}"})
        assert r.status_code == 403 and "scope client" in r.json()["error"]
        r = c.get("/admin/status", headers=alice)
        assert r.status_code == 403 and r.json()["error"] == "admins only"
        r = c.get("/admin/status", headers={"Authorization": "Bearer rk-not-a-key"})
        assert r.status_code == 401 and "revoked API key" in r.json()["error"]
        # /v1: any active API key, errors in OpenAI's shape.
        for key in (client_key, admin_scope):
            r = c.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200 and r.json() == {"object": "list", "data": []}
        r = c.get("/v1/models")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = c.get("/v1/models", headers=alice)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        # Disabling an account ends its token everywhere.
        c.post("/admin/annotators/boss/disable", headers=admin).raise_for_status()
        r = c.get("/admin/status", headers=boss)
        assert r.status_code == 401 and "revoked" in r.json()["error"]


# -- the real service -------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_team_behind_one_address_logs_in_at_once_all_day(tmp_path: Path) -> None:
    """The reported failure: 32 annotators behind one NAT logged in at once and got 429. Through the
    real service (uvicorn, Gradio mounted): 32 at once, then again, then each through the app's own
    login form too; never a 429."""
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        for i in range(32):
            add_annotator(store, f"annotator{i}", "annotator", f"password-{i}")
    codes: list[int] = []
    lock = threading.Lock()
    with running_service(data) as url:

        def team(form: bool) -> None:
            start = threading.Barrier(32)

            def one(i: int) -> None:
                with httpx.Client(base_url=url, timeout=60) as c:
                    start.wait()
                    if form:
                        r = c.post(
                            "/annotate/login", data={"username": f"annotator{i}", "password": f"password-{i}"}
                        )
                    else:
                        r = c.post(
                            "/api/annotate/login", json={"name": f"annotator{i}", "password": f"password-{i}"}
                        )
                with lock:
                    codes.append(r.status_code)

            threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        for form in (False, False, True):
            team(form)
        r = httpx.post(f"{url}/api/annotate/login", json={"name": "annotator0", "password": "password-0"})
    assert codes == [200] * 96, sorted(set(codes))
    assert r.status_code == 200
