"""Metrics, logs and traces without a model server: /metrics behind the admin key, the queue's and the
jobs' gauges and the ranking counters moving with real submits, JSON log lines carrying request and
trace ids, when traces are on, and a Grafana dashboard that only names metrics that exist."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import re
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from annotator.accounts import add_annotator
from annotator.queue import next_task, submit
from annotator.ranking import Submission
from service.core import metrics
from service.core.errors import UserError
from service.core.logs import REQUEST_ID, Ids, formatter, request_id
from service.core.settings import MetricsOptions, Settings
from service.core.store import Store
from service.core.tracing import enabled, setup_tracing
from service.web.app import create_app
from tests.support import REPO
from tests.support.seeding import seed_tasks

ADMIN = "admin-" + "k" * 32
DASHBOARD = REPO / "examples" / "observability" / "grafana-dashboard.json"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Every sample of a scrape: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


@pytest.fixture
def app_store(tmp_path: Path):
    data = tmp_path / "data"
    store = Store.open(data / "rankloop.duckdb")
    seed_tasks(store, n_prompts=3, k=2, required=1)  # 6 tasks x R=1
    yield Settings(data_dir=data, admin_key=ADMIN), store
    store.close()


def test_metrics_need_the_admin_key_and_move_with_rankings(app_store) -> None:
    settings, store = app_store
    client = TestClient(create_app(settings, store, mount_ui=False))
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    scrape = lambda: samples(client.get("/metrics", headers={"Authorization": f"Bearer {ADMIN}"}).text)  # noqa: E731
    before = scrape()
    assert before[("rankloop_tasks", (("state", "open"),))] == 6
    assert before[("rankloop_tasks", (("state", "leased"),))] == 0
    aid = add_annotator(store, f"sim-{uuid.uuid4().hex[:6]}", "simulated")
    task = next_task(store, aid, settings.annotation.model_copy(update={"gold_rate": 0}))
    assert task is not None
    leased = scrape()
    assert leased[("rankloop_tasks", (("state", "leased"),))] == 1
    assert leased[("rankloop_tasks", (("state", "open"),))] == 5
    submit(store, aid, Submission(task_id=task["task_id"], ranks=[1, 2], submission_id=uuid.uuid4().hex))
    after = scrape()
    assert after[("rankloop_tasks", (("state", "completed"),))] == 1
    assert after[("rankloop_tasks", (("state", "leased"),))] == 0
    role = (("role", "simulated"),)
    assert after[("rankloop_rankings_total", role)] == before.get(("rankloop_rankings_total", role), 0) + 1
    count = ("rankloop_submit_duration_seconds_count", ())
    assert after[count] == before.get(count, 0) + 1
    batches = ("rankloop_group_commit_batch_size_count", ())
    assert after[batches] == before.get(batches, 0) + 1
    with store.write() as cur:
        cur.execute("INSERT INTO jobs (kind, status) VALUES ('reward', 'failed'), ('reward', 'failed')")
    assert scrape()[("rankloop_jobs", (("kind", "reward"), ("state", "failed")))] == 2
    values = {v for _, labels in after for _, v in labels}
    assert not [v for v in values if "#" in v or len(v) > 64]  # no label carries a task's text


def test_metrics_can_be_public_and_healthz_says_only_up(app_store) -> None:
    settings, store = app_store
    settings = settings.model_copy(update={"metrics": MetricsOptions(public=True)})
    client = TestClient(create_app(settings, store, mount_ui=False))
    r = client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert client.get("/healthz").json() == client.get("/health").json() == {"ok": True}


def test_bad_metrics_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="listen"):
        MetricsOptions(listen="no-port")
    with pytest.raises(ValueError, match="log_format"):
        Settings(log_format="xml")


def test_json_log_lines_carry_request_and_trace_ids() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(Ids())
    handler.setFormatter(formatter("json"))
    log = logging.getLogger("rankloop.test-json")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    tracer = TracerProvider().get_tracer("test")  # a recording tracer of its own, not the global one
    try:
        rid = request_id("client-id-1")
        with tracer.start_as_current_span("x") as span:
            log.info("answered %s", "current", extra={"status": 200, "key": "app"})
        request_id("bad id with spaces")  # not sane: replaced by a new one
        log.info("later")
    finally:
        log.removeHandler(handler)
        REQUEST_ID.set(None)
    first, second = [json.loads(line) for line in out.getvalue().splitlines()]
    ctx = span.get_span_context()
    assert rid == "client-id-1" and first["request_id"] == "client-id-1"
    assert first["trace_id"] == format(ctx.trace_id, "032x") and first["span_id"] == format(
        ctx.span_id, "016x"
    )
    assert first["message"] == "answered current" and first["status"] == 200 and first["level"] == "INFO"
    assert re.fullmatch(r"[0-9a-f]{32}", second["request_id"]) and second["trace_id"] is None


def test_traces_are_off_unless_the_otel_variables_ask() -> None:
    assert not enabled({})
    assert enabled({"OTEL_TRACES_EXPORTER": "console"})
    assert enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert not enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"})
    assert not enabled({"OTEL_TRACES_EXPORTER": "none"})


def test_an_unknown_exporter_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(UserError, match="zipkin.*otlp, console, none"):
        setup_tracing()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "carrier-pigeon")
    with pytest.raises(UserError, match="carrier-pigeon"):
        setup_tracing()


def test_the_dashboard_names_only_metrics_that_exist() -> None:
    ours = set()
    for metric in metrics.ALL:
        for fam in metric.collect():
            suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(fam.type, [""])
            ours |= {fam.name + s for s in suffixes}
    ours |= {
        "rankloop_tasks",
        "rankloop_jobs",
        "rankloop_gateway_replica_up",
        "rankloop_gateway_replica_in_flight",
    }
    spec = importlib.util.find_spec("vllm")  # its source, not imported (that takes seconds)
    assert spec is not None and spec.origin is not None
    vllm_source = "".join(p.read_text() for p in (Path(spec.origin).parent / "v1" / "metrics").glob("*.py"))
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    named = {n for e in exprs for n in re.findall(r"\b(?:rankloop_|vllm:)[a-z_:]+", e)}
    assert len(exprs) >= 20 and any(n.startswith("vllm:") for n in named)
    for name in named:
        if name.startswith("rankloop_"):
            assert name in ours, f"{name}: no such rankloop metric"
        else:
            base = re.sub(r"_(total|bucket|sum|count)$", "", name)
            assert f'"{base}"' in vllm_source, f"{name}: vLLM defines no {base}"


def test_a_replica_that_answers_no_prometheus_text_costs_the_scrape_nothing() -> None:
    """An endpoint elsewhere may answer /metrics with a web page: its metrics are skipped, not the scrape."""
    import httpx

    from service.web.metrics import _scrape

    pages = {
        "/metrics": "<html><body>not here</body></html>",
    }
    html = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, text=pages[r.url.path])))
    assert _scrape(html, "http://replica", "k") == []  # a real replica's metrics: test_gateway_ops.py
