"""The service against a careless user and an attacker: bad inputs answer 4xx (never 500) and change
nothing; every route the app registers refuses anonymous callers (enumerated from the app); no
cross-origin use of a login; bodies over the limit refused before they are read; files private;
logins revocable (the login throttle: test_auth.py)."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount

from annotator.accounts import add_annotator
from service.cli.main import main
from service.core.settings import load_settings
from service.core.store import Store
from service.web.auth import ExpiringSessions
from tests.support import REPO
from tests.support.seeding import seed_tasks
from tests.support.servicectl import admin_headers, running_service

pytestmark = pytest.mark.slow

# Reachable without a login: the health check, the annotator's login page, its login and logout
# calls and the static assets the login page needs.
OPEN = {
    "/healthz",
    "/annotate",
    "/annotate/",
    "/annotate/login",
    "/annotate/logout",
    "/annotate/favicon.ico",
    "/annotate/theme.css",
    "/annotate/robots.txt",
    "/annotate/manifest.json",
    "/api/annotate/login",
}
OPEN_PREFIXES = ("/annotate/assets/", "/annotate/static/", "/annotate/svelte/")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory):
    data = tmp_path_factory.mktemp("hard") / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=4, k=4)
        add_annotator(store, "alice", "annotator", "alice-password")
        add_annotator(store, "sim-0", "simulated")
    with running_service(data, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0"}) as url:
        yield url, data


def routes(data: Path) -> list[tuple[str, str]]:
    """Every (method, path) the service's app registers, Gradio's included, from the app itself."""
    from service.web.app import create_app

    settings = load_settings(overrides={"data_dir": str(data.parent / "enumerate")}, environ={})
    with Store.open(settings.paths.db) as store:
        app = create_app(settings, store)
        app.state.ctx.jobs.stop_all()

    def walk(rs, prefix=""):
        for r in rs:
            if isinstance(r, Mount):
                yield from walk(r.routes, prefix + r.path)
            elif hasattr(r, "methods"):
                for m in sorted((r.methods or {"GET"}) - {"HEAD"}):
                    yield m, (prefix + r.path).replace("{", "").replace("}", "").replace(":path", "")

    return sorted(set(walk(app.routes)))


def test_every_route_refuses_anonymous_callers(service) -> None:
    url, data = service
    checked, open_seen = 0, 0
    with httpx.Client(base_url=url, timeout=30) as c:
        for method, path in routes(data):
            if path in OPEN or path.startswith(OPEN_PREFIXES):
                open_seen += 1
                assert c.request(method, path).status_code < 500, (method, path)
                continue
            r = c.request(method, path, json={} if method in ("POST", "PUT", "PATCH") else None)
            assert r.status_code in (401, 403, 404, 405), (method, path, r.status_code, r.text[:200])
            if r.status_code in (401, 403):
                assert "error" in r.json() or "detail" in r.json(), (method, path)
            checked += 1
    assert checked > 60 and open_seen >= 5, (checked, open_seen)  # Gradio's routes are in the sweep


def test_cross_origin_requests_get_no_credentials(service) -> None:
    url, data = service
    evil = {"Origin": "http://evil.example"}
    r = httpx.options(f"{url}/admin/tasks/1/gold", headers={**evil, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403 and not any(h.startswith("access-control-") for h in r.headers)
    r = httpx.options(
        f"{url}/annotate/gradio_api/queue/join", headers={**evil, "Access-Control-Request-Method": "POST"}
    )
    assert r.status_code == 403
    # A cross-site form post riding on a browser's cookies is refused before any route sees it.
    r = httpx.post(
        f"{url}/annotate/gradio_api/queue/join", headers={**evil, "Cookie": "access-token-x=y"}, json={}
    )
    assert r.status_code == 403 and "cross-site" in r.json()["error"]
    r = httpx.post(
        f"{url}/admin/tasks/1/gold",
        headers={**evil, "Cookie": "a=b", **admin_headers(data)},
        json={"ranks": [1, 2, 3, 4]},
    )
    assert r.status_code == 403
    r = httpx.get(f"{url}/healthz", headers=evil)
    assert "access-control-allow-origin" not in r.headers
    # Same origin, or no Origin at all (the CLI, the SDK): allowed through to the route's own checks.
    r = httpx.post(
        f"{url}/admin/tasks/999/gold", headers={**admin_headers(data), "Origin": url}, json={"ranks": [1]}
    )
    assert r.status_code == 422 and "no task 999" in r.json()["error"]


def test_bodies_over_the_limit_are_refused_before_login(service) -> None:
    url, _ = service

    def chunks():
        for _ in range(64):
            yield b"x" * 2**20  # 64 MiB, streamed without a length

    r = httpx.post(
        f"{url}/api/annotate/submit",
        content=b"x" * (300 * 2**10),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and "max_body_kib" in r.json()["error"]
    r = httpx.post(
        f"{url}/api/annotate/submit",
        content=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 413
    r = httpx.post(f"{url}/annotate/gradio_api/upload", content=b"x" * (2 * 2**20))
    assert r.status_code == 413
    assert httpx.get(f"{url}/healthz").status_code == 200


BAD = [  # (method, path, json body, who, status, words in the error)
    (
        "POST",
        "/api/annotate/submit",
        {"task_id": 2**200, "submission_id": "a", "ranks": [1, 2]},
        "sim",
        422,
        "task_id: Input should be less than or equal to",
    ),
    (
        "POST",
        "/api/annotate/submit",
        {"task_id": -1, "submission_id": "a", "ranks": [1, 2]},
        "sim",
        422,
        "task",
    ),
    (
        "POST",
        "/api/annotate/submit",
        {"task_id": 1, "submission_id": "", "ranks": [1, 2]},
        "sim",
        422,
        "submission_id",
    ),
    (
        "POST",
        "/api/annotate/submit",
        {"task_id": 1, "submission_id": "a" * 200, "ranks": [1]},
        "sim",
        422,
        "submission_id",
    ),
    ("POST", "/api/annotate/submit", {"task_id": 1, "submission_id": "a"}, "sim", 422, "ranks"),
    (
        "POST",
        "/api/annotate/submit",
        {"task_id": 1, "submission_id": "a", "ranks": [1, 2], "skip_reason": "bored"},
        "sim",
        422,
        "skip",
    ),
    (
        "POST",
        "/api/annotate/submit",
        {"task_id": 1, "submission_id": "a", "ranks": [1.5, 2]},
        "sim",
        422,
        "ranks",
    ),
    (
        "POST",
        "/api/annotate/submit",
        {"task_id": 1, "submission_id": "a", "ranks": [1, 2], "extra": 1},
        "sim",
        422,
        "extra",
    ),
    ("POST", "/api/annotate/submit", [1, 2], "sim", 422, "object"),
    ("POST", "/api/annotate/login", '{"name": "\\ud800", "password": "x"}', None, 422, "unicode string"),
    ("POST", "/api/annotate/login", {"name": "a" * 2_000_000, "password": "x"}, None, 413, "max_body_kib"),
    ("POST", "/api/annotate/login", {"name": "a" * 100, "password": "x"}, None, 422, "name"),
    ("POST", "/api/annotate/login", {"name": "alice"}, None, 422, "password"),
    ("POST", "/api/annotate/login", {"name": "alice", "password": "p" * 5000}, None, 422, "password"),
    ("POST", "/admin/snapshots", {"eval_fraction": 2}, "admin", 422, "eval_fraction"),
    ("POST", "/admin/snapshots", {"eval_fraction": "half"}, "admin", 422, "eval_fraction"),
    ("POST", "/admin/snapshots", {"min_gold_agreement": 7}, "admin", 422, "min_gold_agreement"),
    ("POST", "/admin/snapshots", {"exclude_annotators": ["nobody"]}, "admin", 400, "no annotator named"),
    ("POST", "/admin/jobs", {"kind": "bake", "config": {}}, "admin", 400, "unknown job kind"),
    (
        "POST",
        "/admin/jobs",
        {"kind": "reward", "config": {"snapshot": "s", "base_model": "m", "epochs": -1}},
        "admin",
        422,
        "epochs",
    ),
    ("POST", "/admin/jobs", {"kind": "reward", "config": {}}, "admin", 400, "no snapshot to train on"),
    (
        "POST",
        "/admin/jobs",
        {"kind": "dpo", "config": {"snapshot": "s", "base_model": "m", "output_dir": "/etc/rankloop"}},
        "admin",
        400,
        "outside the data directory",
    ),
    (
        "POST",
        "/admin/jobs",
        {"kind": "dpo", "config": {"snapshot": "/etc", "base_model": "/usr/lib"}},
        "admin",
        400,
        "base_model /usr/lib is outside the data directory",
    ),
    (
        "POST",
        "/admin/jobs",
        {"kind": "sample", "config": {"models": ["/usr/lib"]}},
        "admin",
        400,
        "models /usr/lib is outside",
    ),
    (
        "POST",
        "/admin/jobs",
        {"kind": "evaluate", "config": {"candidate": 1, "prompt_file": "/etc/passwd"}},
        "admin",
        400,
        "prompt_file /etc/passwd is outside",
    ),
    (
        "POST",
        "/admin/jobs",
        {"kind": "evaluate", "config": {"candidate": 2**200}},
        "admin",
        422,
        "out of range",
    ),
    ("POST", "/admin/jobs", {"kind": "evaluate", "config": {"candidate": 999}}, "admin", 404, "no model"),
    ("POST", "/admin/jobs", {"kind": "sample", "config": {"models": []}}, "admin", 422, "models"),
    ("GET", "/admin/jobs/99999", None, "admin", 404, "no job 99999"),
    ("GET", "/admin/jobs/abc", None, "admin", 422, "job_id"),
    ("GET", f"/admin/jobs/{2**200}", None, "admin", 422, "out of range"),
    ("GET", "/admin/models/12345", None, "admin", 404, "no model with id"),
    ("GET", f"/admin/models/{2**70}", None, "admin", 404, "no model with id"),
    ("POST", "/admin/models/1/promote", {}, "admin", 422, "reason"),
    (
        "POST",
        "/admin/annotators",
        {"name": "bad name!", "role": "annotator", "password": "longenough"},
        "admin",
        400,
        "not valid",
    ),
    (
        "POST",
        "/admin/annotators",
        {"name": "bob", "role": "king", "password": "longenough"},
        "admin",
        400,
        "role",
    ),
    (
        "POST",
        "/admin/annotators",
        {"name": "bob", "role": "annotator", "password": "short"},
        "admin",
        400,
        "at least 8",
    ),
    (
        "POST",
        "/admin/annotators",
        '{"name": "\\ud800", "role": "annotator", "password": "longenough"}',
        "admin",
        400,
        "not valid",
    ),
    ("POST", "/admin/annotators/nobody/disable", {}, "admin", 404, "no annotator named"),
    ("POST", "/admin/annotators/nobody/logout", {}, "admin", 404, "no annotator named"),
    ("POST", "/admin/tasks/999/gold", {"ranks": [1, 2]}, "admin", 422, "no task"),
    ("POST", "/admin/tasks/1/gold", {"ranks": [9, 9, 9, 9]}, "admin", 422, "outside"),
    ("POST", "/admin/tasks/1/gold", {"ranks": "first"}, "admin", 422, "ranks"),
    ("GET", "/admin/leaderboard?by=colour", None, "admin", 422, "by"),
    ("POST", "/admin/rewards", {"prompt": "hi", "responses": ["a"]}, "admin", 400, "no reward model"),
    ("POST", "/admin/export", {"format": "xml", "out": "x"}, "admin", 422, "format"),
    ("POST", "/admin/simulated", {"profiles": {"alice": {}}}, "admin", 400, "not a simulated annotator"),
    ("POST", "/admin/simulated", {"profiles": {"sim-9": {"noise": -1}}}, "admin", 422, "noise"),
    ("POST", "/admin/judges", {"name": "alice"}, "admin", 422, "profile"),
    ("GET", "/admin/judge-templates/none-such", None, "admin", 404, ""),
    ("POST", "/admin/prompts?params=notjson", None, "admin", 422, "not valid JSON"),
    ("POST", "/admin/prompts?params=[1]", None, "admin", 422, "JSON object"),
    ("POST", "/admin/status", {}, "admin", 405, ""),
    ("POST", "/annotate/login", None, None, 422, ""),  # Gradio's login form without its fields
    ("POST", "/annotate/gradio_api/queue/join", {"fn_index": 0}, None, 401, "log in"),
    ("POST", "/annotate/gradio_api/upload", None, None, 401, "log in"),
    ("GET", "/annotate/gradio_api/file=/etc/passwd", None, None, 401, "log in"),
    (
        "POST",
        "/api/annotate/submit",
        {"task_id": 1, "submission_id": "a", "ranks": [1, 2]},
        None,
        401,
        "log in",
    ),
    ("GET", "/api/annotate/next", None, "forged", 401, "invalid, expired or revoked"),
    ("GET", "/admin/status", None, "forged", 401, "Bearer ADMIN_KEY"),
]


@pytest.mark.parametrize(
    ("method", "path", "body", "who", "status", "words"),
    BAD,
    ids=[f"{m} {p[:40]} {i}" for i, (m, p, *_rest) in enumerate(BAD)],
)
def test_bad_inputs_get_a_clear_4xx_and_change_nothing(
    service, method, path, body, who, status, words
) -> None:
    url, data = service
    headers = (
        admin_headers(data)
        if who == "admin"
        else {**admin_headers(data), "X-Rankloop-Annotator": "sim-0"}
        if who == "sim"
        else {"Authorization": "Bearer 1.1700000000000.99999999999.forged"}
        if who == "forged"
        else {}
    )
    before = httpx.get(f"{url}/admin/status", headers=admin_headers(data)).json()
    raw = (
        {"content": body, "headers": {**headers, "Content-Type": "application/json"}}
        if isinstance(body, str)
        else {"json": body, "headers": headers}
    )
    r = httpx.request(method, url + path, timeout=30, **raw)
    assert r.status_code == status, (r.status_code, r.text[:300])
    if words:
        assert words in r.json()["error"], r.json()
    assert httpx.get(f"{url}/admin/status", headers=admin_headers(data)).json() == before


def test_logins_can_be_revoked_and_app_sessions_expire(service) -> None:
    url, data = service
    r = httpx.post(f"{url}/api/annotate/login", json={"name": "alice", "password": "alice-password"})
    alice = {"Authorization": f"Bearer {r.json()['token']}"}
    assert httpx.get(f"{url}/api/annotate/progress", headers=alice).status_code == 200
    with httpx.Client(base_url=url) as browser:
        assert (
            browser.post(
                "/annotate/login", data={"username": "alice", "password": "alice-password"}
            ).status_code
            == 200
        )
        assert browser.get("/annotate/config").status_code == 200
        assert main(["--data", str(data), "annotators", "logout", "alice"]) == 0  # through the service
        assert httpx.get(f"{url}/api/annotate/progress", headers=alice).status_code == 401
        assert browser.get("/annotate/config").status_code == 401  # the app session ended too
    now = [0.0]
    sessions = ExpiringSessions(ttl_s=60, clock=lambda: now[0])
    sessions["t"] = "alice"
    assert sessions.get("t") == "alice" and "t" in sessions
    now[0] = 61
    assert sessions.get("t") is None and "t" not in sessions


def test_data_directory_and_secrets_are_private(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb"):
        pass
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "rankloop.duckdb").stat().st_mode) == 0o600
    os.chmod(data, 0o755)
    os.chmod(data / "rankloop.duckdb", 0o644)
    assert main(["--data", str(data), "status"]) == 0
    err = capsys.readouterr().err
    assert "was open to other users" in err and "was readable by other users" in err
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "rankloop.duckdb").stat().st_mode) == 0o600
    key = data / "admin.key"
    key.write_text("x" * 40)
    os.chmod(key, 0o644)
    assert main(["--data", str(data), "serve", "--port", "0"]) == 2
    assert "readable by other users" in capsys.readouterr().err
    os.chmod(key, 0o600)
    key.write_text("short")
    assert main(["--data", str(data), "serve", "--port", "0"]) == 2
    assert "at least 32" in capsys.readouterr().err
    assert (
        main(["--data", str(data), "--config", str(_settings(tmp_path, "admin_key: short")), "status"]) == 2
    )
    assert "admin_key" in capsys.readouterr().err


def _settings(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"settings-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text + "\n")
    return path


def test_cli_refuses_bad_data_and_bad_outputs_with_a_message(tmp_path: Path, capsys) -> None:
    plain = tmp_path / "afile"
    plain.write_text("not a directory")
    for command in (["status"], ["serve", "--port", "0"]):
        assert main(["--data", str(plain), *command]) == 2
        assert "is a file" in capsys.readouterr().err
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=2, k=2)
    out = tmp_path / "export.jsonl"
    out.write_text("previous export\n")
    for target, words in [
        (tmp_path, "directory"),
        (Path("/dev/full"), "not a regular file"),
        (Path("/proc/rankloop/x.jsonl"), ""),
    ]:
        assert main(["--data", str(data), "export", "--format", "jsonl", "--out", str(target)]) == 2
        assert words in capsys.readouterr().err
    assert out.read_text() == "previous export\n"
    # A damaged database: refused with a message by every command, and by serve before it listens.
    db = data / "rankloop.duckdb"
    db.write_bytes(db.read_bytes()[: 4096 * 3])
    for command in (["status"], ["serve", "--port", "0"]):
        assert main(["--data", str(data), *command]) == 2
        assert "damaged" in capsys.readouterr().err


def test_kill_9_under_32_annotators_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Three times: 32 simulated annotators rank through the service over HTTP, and the service is
    killed with SIGKILL mid-stream. Every acknowledged submission is stored exactly once afterwards,
    and no task gets more than its R rankings."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=100, k=4, required=2)  # 200 tasks x R = 2
        for i in range(32):
            add_annotator(store, f"sim-{i}", "simulated")
    acked: list[str] = []
    lock = threading.Lock()
    for round_ in range(3):
        log = open(tmp_path / f"serve-{round_}.log", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "--data", str(data), "serve", "--port", "0"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RANKLOOP_ANNOTATION__GOLD_RATE": "0"},
        )
        deadline, url = time.monotonic() + 90, None
        while time.monotonic() < deadline and url is None:
            try:
                info = json.loads((data / "service.json").read_text())
                if (
                    info.get("pid") == proc.pid
                    and httpx.get(f"{info['url']}/healthz", timeout=2).status_code == 200
                ):
                    url = info["url"]
            except (OSError, ValueError, httpx.HTTPError):
                time.sleep(0.2)
        assert url, (tmp_path / f"serve-{round_}.log").read_text()
        stop = threading.Event()

        def annotate(name: str, url: str = url, stop: threading.Event = stop) -> None:
            headers = {**admin_headers(data), "X-Rankloop-Annotator": name}
            with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
                try:
                    while (
                        not stop.is_set() and (task := c.get("/api/annotate/next").json()["task"]) is not None
                    ):
                        body = {
                            "task_id": task["task_id"],
                            "submission_id": uuid.uuid4().hex,
                            "ranks": list(range(1, len(task["candidates"]) + 1)),
                        }
                        if c.post("/api/annotate/submit", json=body).status_code == 200:
                            with lock:
                                acked.append(body["submission_id"])
                except (httpx.HTTPError, ValueError):
                    pass  # the service was killed under us: what it acknowledged must be stored

        threads = [threading.Thread(target=annotate, args=(f"sim-{i}",)) for i in range(32)]
        before = len(acked)
        for t in threads:
            t.start()
        while len(acked) < before + 60 and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
        log.close()
        assert len(acked) > before, f"round {round_}: nothing was acknowledged"
    with Store.open(data / "rankloop.duckdb") as store:
        stored = {
            r["submission_id"]: r["n"]
            for r in store.query("SELECT submission_id, count(*) AS n FROM rankings GROUP BY submission_id")
        }
        over = store.query("SELECT task_id, count(*) AS n FROM rankings GROUP BY task_id HAVING count(*) > 2")
    assert all(stored.get(s) == 1 for s in acked), [s for s in acked if stored.get(s) != 1][:5]
    assert not over, over[:5]
