"""The gateway in production, on a real service with a real vLLM server: metrics that move with
traffic, traces across two gateways, JSON logs, and the fallback model."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import time
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from service.cli.main import main
from service.control.commands import COMMANDS
from service.core.registry import register_model
from service.core.settings import Settings
from service.core.store import Store
from service.gateway.key_records import create_key
from service.web.app import create_app
from tests.service.gateway.conftest import CHAT, cli, client, replica_pids, usage
from tests.support.servicectl import admin_headers, start_gateway

pytestmark = pytest.mark.slow

# This module's service prints its spans as JSON (the console exporter, flushed every 0.1 s) and logs
# JSON lines; test_gateway.py's runs with neither, as a service does by default.
SERVICE_ENV = {
    "OTEL_TRACES_EXPORTER": "console",
    "OTEL_BSP_SCHEDULE_DELAY": "100",
    "RANKLOOP_LOG_FORMAT": "json",
    # The service's vLLM servers on another address than its own loopback one, as for replicas elsewhere.
    "RANKLOOP_GATEWAY__REPLICA_HOST": "127.0.0.2",
}


def test_metrics_traces_and_json_logs_of_real_traffic(service, tiny_model: Path, tmp_path: Path) -> None:
    """/metrics moves with real traffic and shows the replica's vLLM metrics; a gateway in this process
    (in front of the service, as an endpoint) makes a server span and a child upstream span whose
    traceparent the service receives and continues down to its own call to vLLM; logs are JSON lines."""
    url, data = service["url"], service["data"]
    assert httpx.get(url + "/metrics").status_code == 401

    def scrape() -> dict:
        r = httpx.get(url + "/metrics", headers=admin_headers(data))
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(r.text)
            for s in f.samples
        }

    def moved(after: dict, before: dict, name: str, **labels: str) -> float:
        k = (name, frozenset(labels.items()))
        return after.get(k, 0) - before.get(k, 0)

    before = scrape()
    c = client(service)
    c.chat.completions.create(model="current", messages=CHAT, max_tokens=4)
    # 48 tokens, so that the stream arrives in more than one read
    long = {"min_tokens": 48}
    streamed = list(
        c.chat.completions.create(model="current", messages=CHAT, max_tokens=48, stream=True, extra_body=long)
    )
    with pytest.raises(openai.NotFoundError):
        c.chat.completions.create(model="nope", messages=CHAT, max_tokens=4)
    after = scrape()
    route = "/v1/chat/completions"
    assert (
        moved(after, before, "rankloop_gateway_requests_total", route=route, model="blue", status="200") == 2
    )
    assert (
        moved(after, before, "rankloop_gateway_requests_total", route=route, model="none", status="404") == 1
    )
    assert moved(after, before, "rankloop_gateway_time_to_first_token_seconds_count", model="blue") == 1
    assert moved(after, before, "rankloop_gateway_inter_token_latency_seconds_count", model="blue") >= 1
    assert (
        moved(after, before, "rankloop_gateway_request_duration_seconds_count", route=route, model="blue")
        == 2
    )
    completion = usage(streamed[-1]).completion_tokens
    assert (
        moved(after, before, "rankloop_gateway_tokens_total", key="app", model="blue", kind="completion")
        >= completion
    )
    assert after[("rankloop_gateway_replica_up", frozenset({"model": "blue", "replica": "0"}.items()))] == 1
    vllm = [dict(labels) for name, labels in after if name == "vllm:num_requests_running"]
    assert vllm and all(v["model"] == "blue" and v["replica"] == "0" for v in vllm)

    # Spans: an in-memory exporter on a gateway in this process.
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    front = tmp_path / "front"
    with Store.open(front / "rankloop.duckdb") as store:
        blue = register_model(store, "policy", tiny_model, name="blue", status="active")
        front_key = create_key(store, "front")
        app = create_app(Settings(data_dir=front, admin_key="a" * 32), store, mount_ui=False)
        deploy = COMMANDS["deploy"]
        deploy.run(
            app.state.ctx,
            deploy.params.model_validate({"model_id": blue, "endpoint": url, "endpoint_key": service["key"]}),
        )
        with TestClient(app) as front_client:
            r = front_client.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {front_key}", "x-request-id": "req-observed-1"},
                json={"model": "current", "messages": CHAT, "max_tokens": 4},
            )
        app.state.gateway.stop()
    assert r.status_code == 200 and r.headers["x-request-id"] == "req-observed-1"
    spans = {s.name: s for s in exporter.get_finished_spans()}
    server, upstream = spans["chat current"], spans["POST /v1/chat/completions"]
    assert server.kind == SpanKind.SERVER and upstream.kind == SpanKind.CLIENT
    assert upstream.parent is not None and upstream.parent.span_id == server.context.span_id
    assert upstream.context.trace_id == server.context.trace_id
    attrs = server.attributes or {}
    assert attrs["gen_ai.request.model"] == "current" and attrs["gen_ai.response.model"] == "blue"
    assert attrs["gen_ai.usage.output_tokens"] >= 1 and attrs["rankloop.request_id"] == "req-observed-1"
    # The service printed its spans (console exporter) and its logs (JSON lines) on its output: its server
    # span continues our upstream span's trace, and its own upstream span is the call vLLM received.
    trace_id = format(server.context.trace_id, "032x")
    deadline = time.monotonic() + 10
    while True:
        text = service["log"].read_text()
        theirs = [x for x in _json_objects(text) if x.get("context", {}).get("trace_id") == "0x" + trace_id]
        if len(theirs) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    by_kind = {x["kind"]: x for x in theirs}
    assert by_kind["SpanKind.SERVER"]["parent_id"] == "0x" + format(upstream.context.span_id, "016x")
    assert by_kind["SpanKind.CLIENT"]["parent_id"] == by_kind["SpanKind.SERVER"]["context"]["span_id"]
    lines = [x for x in _json_objects(text) if x.get("logger") == "rankloop.gateway"]
    ours = [x for x in lines if x.get("trace_id") == trace_id]
    assert ours and ours[0]["request_id"] and ours[0]["key"] == "app" and ours[0]["status"] == 200
    assert all("messages" not in json.dumps(x) and service["key"] not in json.dumps(x) for x in lines)


def _traffic(data: Path, tmp: Path) -> list[dict]:
    """The traffic table as the service holds it now (through a backup: the service owns the file)."""
    out = cli(data, "backup", "--to", str(tmp))
    with Store.open(Path(out.split("backup written to ")[1].split(":")[0]) / "rankloop.duckdb") as store:
        return store.query("SELECT status, request, response_id FROM traffic WHERE request IS NOT NULL")


def test_two_gateway_replicas_share_keys_traffic_and_limits(service, tmp_path: Path) -> None:
    """Two `rankloop gateway` processes in front of the service: both serve (whole, streamed, feedback);
    a revoked key is refused by both within a second; a replica killed with SIGKILL mid-stream and
    restarted (its acknowledgements lost too, so it sends everything again) leaves every request it
    and the other served logged exactly once; rpm holds across the two."""
    url, data = service["url"], service["data"]
    admin = admin_headers(data)
    control = httpx.post(f"{url}/admin/keys", headers=admin, json={"name": "gw", "scope": "admin"}).json()[
        "key"
    ]
    key = httpx.post(f"{url}/admin/keys", headers=admin, json={"name": "spread", "log_traffic": True}).json()[
        "key"
    ]
    routes = httpx.get(f"{url}/admin/routes", headers=admin).json()["routes"]
    assert routes["current"]["replicas"][0]["url"].startswith("http://127.0.0.2:")  # gateway.replica_host
    gws = [start_gateway(url, control, tmp_path / f"gw{i}") for i in (1, 2)]
    bases = [u for _, u in gws]
    sent: list[str] = []

    def ask(base: str, stream: bool = False):
        sent.append(f"ask {len(sent)}")
        c = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
        msgs = [{"role": "user", "content": sent[-1]}]
        return c.chat.completions.create(model="current", messages=msgs, max_tokens=8, stream=stream)

    try:
        whole = ask(bases[0])
        assert whole.model == "blue" and usage(whole).completion_tokens > 0
        assert [ch for ch in ask(bases[1], stream=True)][-1].usage is not None
        assert httpx.get(bases[1] + "/health").json() == {"ok": True}
        assert httpx.get(bases[1] + "/metrics").status_code == 401
        scraped = httpx.get(bases[1] + "/metrics", headers={"Authorization": f"Bearer {control}"}).text
        assert (
            'rankloop_gateway_requests_total{model="blue",route="/v1/chat/completions",status="200"} 1.0'
            in scraped
        )
        vote = httpx.post(
            bases[1] + "/v1/feedback",
            headers={"Authorization": f"Bearer {key}"},
            json={"response_id": whole.id, "score": 1},  # served by the other replica
        )
        assert vote.status_code == 200, vote.text

        # Requests the killed replica answered but may not have sent yet, then one cut mid-stream.
        for _ in range(3):
            ask(bases[0])
        cut = ask(bases[0], stream=True)
        next(iter(cut))
        gws[0][0].send_signal(signal.SIGKILL)
        gws[0][0].wait(10)
        (tmp_path / "gw1" / "acked").unlink(missing_ok=True)  # as if every acknowledgement was lost
        gws[0] = start_gateway(url, control, tmp_path / "gw1")
        ask(gws[0][1])
        ask(bases[1])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            rows = _traffic(data, tmp_path / f"backup-{time.monotonic()}")
            rows = [r for r in rows if json.loads(r["request"])["messages"][-1]["content"].startswith("ask ")]
            asked = [json.loads(r["request"])["messages"][-1]["content"] for r in rows]
            if set(sent) <= set(asked):
                break
            time.sleep(0.5)
        assert sorted(asked) == sorted(sent), "each request logged exactly once"
        statuses = {json.loads(r["request"])["messages"][-1]["content"]: r["status"] for r in rows}
        assert statuses.pop(sent[5]) in (200, 502)  # the cut stream: ended before the kill, or logged as cut
        assert set(statuses.values()) == {200}

        # Limits across replicas: rpm 4, two requests at each replica, each seen by the other by then.
        limited = httpx.post(f"{url}/admin/keys", headers=admin, json={"name": "rpm4", "rpm": 4}).json()[
            "key"
        ]
        time.sleep(0.6)
        codes = []
        for base in (gws[0][1], gws[0][1], bases[1], bases[1], bases[1], gws[0][1]):
            r = httpx.post(
                base + "/v1/completions",
                headers={"Authorization": f"Bearer {limited}"},
                json={"model": "current", "prompt": "Hi", "max_tokens": 1},
            )
            codes.append(r.status_code)
            time.sleep(0.6)  # longer than a sync: each replica has heard of the other's requests
        assert codes == [200, 200, 200, 200, 429, 429], codes

        # A revoked key: refused by both within a second.
        cli(data, "keys", "revoke", "spread")
        revoked, refused = time.monotonic(), {}
        while len(refused) < 2 and time.monotonic() - revoked < 5:
            for base in (gws[0][1], bases[1]):
                if base not in refused:
                    r = httpx.post(
                        base + "/v1/chat/completions",
                        headers={"Authorization": f"Bearer {key}"},
                        json={"model": "current", "messages": CHAT, "max_tokens": 1},
                    )
                    if r.status_code == 401:
                        refused[base] = time.monotonic() - revoked
        assert len(refused) == 2 and max(refused.values()) < 1.0, refused
        status = cli(data, "status")
        assert "gateways        2 of 2 replicas syncing" in status, status
    finally:
        for proc, _ in gws:
            proc.terminate()
            proc.wait(15)


def test_the_fallback_answers_when_every_replica_is_down(service) -> None:
    """green deployed with `--fallback previous`: blue keeps its servers; with green's only replica
    killed, requests are answered by blue and say so, and the metrics count it."""
    url, data = service["url"], service["data"]
    out = cli(data, "deploy", str(service["green"]), "--fallback", "previous")
    routes = httpx.get(url + "/admin/routes", headers=admin_headers(data)).json()["routes"]
    assert routes["current"]["model"] == "green" and routes["fallback"]["model"] == "blue", out
    (pid,) = replica_pids(service)
    os.killpg(os.getpgid(pid), signal.SIGKILL)
    auth = {"Authorization": f"Bearer {service['key']}"}
    r = httpx.post(
        url + "/v1/chat/completions",
        headers=auth,
        json={"model": "current", "messages": CHAT, "max_tokens": 4},
    )
    assert r.status_code == 200 and r.json()["model"] == "blue", r.text
    assert r.headers["x-rankloop-model-id"] == str(service["blue"])
    assert r.headers["x-rankloop-fallback"] == "green is unavailable; blue answered"
    streamed = list(
        client(service).chat.completions.create(model="current", messages=CHAT, max_tokens=4, stream=True)
    )
    assert streamed and all(ch.model == "blue" for ch in streamed)
    metrics = httpx.get(url + "/metrics", headers=admin_headers(data)).text
    assert 'rankloop_gateway_fallbacks_total{fallback="blue",model="green"}' in metrics
    for bad, words in [("nope", "fallback"), ("0", "fallback")]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert main(["--data", str(data), "deploy", str(service["blue"]), "--fallback", bad]) == 2
        assert words in err.getvalue()


def _json_objects(text: str) -> list[dict]:
    """Every JSON object that starts a line of a log (JSON log lines and multi-line printed spans)."""
    decoder, found = json.JSONDecoder(), []
    for m in re.finditer(r"^\{", text, re.MULTILINE):
        try:
            found.append(decoder.raw_decode(text, m.start())[0])
        except json.JSONDecodeError:
            continue
    return found
