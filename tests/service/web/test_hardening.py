"""The service against a careless user and an attacker: bad inputs answer 4xx (never 500) and change
nothing; every route the app registers refuses anonymous callers (enumerated from the app); no
cross-origin use of a login; bodies over the limit refused before they are read; logins revocable
(the login throttle: test_auth.py; private files and a service killed under load: test_durability.py)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount

from annotator.accounts import add_annotator
from service.cli.main import main
from service.core.settings import load_settings
from service.core.store import Store
from service.web.auth import ExpiringSessions
from tests.support.seeding import seed_tasks
from tests.support.servicectl import admin_headers, running_service

pytestmark = pytest.mark.slow

# Reachable without a login: the health checks (up or down, nothing more), the annotator's login page,
# its login and logout calls and the static assets the login page needs.
OPEN = {
    "/healthz",
    "/health",
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
        422,
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
