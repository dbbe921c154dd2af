"""The gateway's tests share one real service with a real vLLM server per module (`service`)."""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path

import httpx
import openai
import pytest
from openai.types import Completion, CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from service.cli.main import main
from service.core.registry import register_model
from service.core.store import Store
from service.data.prompts import add_system_prompts
from tests.support.servicectl import admin_headers, running_service

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "What is a cat?"}]


def usage(r: ChatCompletion | ChatCompletionChunk | Completion) -> CompletionUsage:
    """The usage the gateway always reports."""
    assert r.usage is not None, r
    return r.usage


def cli(data: Path, *args: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--data", str(data), *args])
    assert code == 0, out.getvalue()
    return out.getvalue()


@pytest.fixture(scope="module")
def service(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """One service for the module. It starts as an operator's first start does: blue was deployed while no
    service ran (recorded only), and `rankloop serve` brings it up behind a service that answers at once."""
    data = tmp_path_factory.mktemp("gateway") / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        blue = register_model(store, "policy", tiny_model, name="blue", status="active")
        green = register_model(store, "policy", tiny_model, name="green", status="active")
        draft = register_model(store, "policy", tiny_model, name="draft")
        add_system_prompts(store, {"brief": "Answer in one short sentence.", "detailed": "Answer in detail."})
    recorded = cli(data, "deploy", str(blue))  # no service runs
    key = cli(data, "keys", "create", "app").split(": ")[1].split()[0]
    env = {
        **getattr(request.module, "SERVICE_ENV", {}),  # what a module adds (traces, JSON logs)
        "RANKLOOP_VLLM__DTYPE": "float32",
        "RANKLOOP_VLLM__MAX_MODEL_LEN": "256",
        "RANKLOOP_GATEWAY__MAX_TOKENS": "64",
    }
    with running_service(data, env=env) as url:
        c = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)
        deadline, waits = time.monotonic() + 240, []
        while time.monotonic() < deadline:  # the service answers at once; the model comes up behind it
            try:
                first = c.chat.completions.create(model="current", messages=CHAT, max_tokens=2).model
                break
            except openai.InternalServerError as e:
                waits.append((e.status_code, e.response.headers.get("retry-after")))
                time.sleep(1)
        else:
            pytest.fail("the recorded deployment did not start")
        yield {
            "log": data.parent / f"serve-{data.name}.log",
            "url": url,
            "data": data,
            "key": key,
            "blue": blue,
            "green": green,
            "draft": draft,
            "start": {"recorded": recorded, "first": first, "waits": waits, "status": cli(data, "status")},
        }


def client(service) -> openai.OpenAI:
    return openai.OpenAI(base_url=service["url"] + "/v1", api_key=service["key"], max_retries=0)


def replica_pids(service) -> list[int]:
    routes = httpx.get(service["url"] + "/admin/routes", headers=admin_headers(service["data"])).json()[
        "routes"
    ]
    ports = [int(r["url"].rsplit(":", 1)[1]) for r in routes["current"]["replicas"]]
    import psutil

    pids = []
    for port in ports:
        for conn in psutil.net_connections("tcp"):
            if conn.status == "LISTEN" and getattr(conn.laddr, "port", None) == port and conn.pid:
                pids.append(conn.pid)
    return pids
