"""The OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions.

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="rk-...")
    client.chat.completions.create(model="current", messages=[{"role": "user", "content": "Hi"}])

`model` is a route: `current` (the deployed policy, split with a canary by weight) or a
deployed model's name. `system_prompt: NAME` (rankloop's field) puts that stored system
prompt first; a route with a system-prompt experiment assigns one per user. Each answer's
headers name the model and system prompt it got (`x-rankloop-model-id`, `x-rankloop-system-prompt`).
`model: "arena"` answers with two anonymous choices from the deployed model and its canary;
`POST /v1/feedback` records a judgment of a response, and a vote between choices becomes a ranking.

The web app builds the routes with `build_router(gateway, authenticate)`: `authenticate(request)`
returns the caller's API key (service/web/auth.py provides it; the gateway imports no web code).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from opentelemetry import context
from opentelemetry.trace import Span
from pydantic import ValidationError

from service.core.errors import UserError
from service.core.logs import REQUEST_ID
from service.core.settings import Settings
from service.core.store import Store
from service.core.tracing import end_span
from service.data.prompts import latest_system_prompts
from service.gateway import observe
from service.gateway.deploy import Deployer
from service.gateway.feedback import Feedback, record_feedback
from service.gateway.hub import Hub
from service.gateway.keys import Key, KeyBook
from service.gateway.proxy import Outcome, fetch, forward
from service.gateway.schemas import ChatRequest, CompletionRequest, GatewayError, parse
from service.gateway.traffic import TrafficLog

ARENA = "arena"


@dataclass
class Gateway:
    """The gateway's parts, one per service."""

    store: Store
    settings: Settings
    deployer: Deployer
    keys: KeyBook
    traffic: TrafficLog
    client: aiohttp.ClientSession | None = None
    hub: Hub | None = None  # where gateway replicas sync (the service's; None in a replica)
    _prompts: dict[str, tuple[dict | None, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, store: Store, settings: Settings) -> Gateway:
        return cls(
            store,
            settings,
            Deployer(store, settings),
            KeyBook(store),
            TrafficLog(store, settings.gateway.retention_days),
        )

    def start(self) -> None:
        self.deployer.start()
        self.keys.start()
        self.traffic.start()

    def stop(self) -> None:
        self.deployer.stop_all()
        self.keys.stop()
        self.traffic.stop()

    def http(self) -> aiohttp.ClientSession:
        if self.client is None:  # made in the event loop that uses it; it lives as long as the process
            self.client = aiohttp.ClientSession(
                # No limit on a whole answer (a long stream is fine); 600 s of silence is not.
                timeout=aiohttp.ClientTimeout(total=None, connect=5.0, sock_read=600.0),
                # Idle connections are dropped before vLLM's own uvicorn closes them (5 s), so a request
                # rarely meets a connection the server has just closed (those are retried anyway).
                connector=aiohttp.TCPConnector(limit=1024, limit_per_host=0, keepalive_timeout=4),
                auto_decompress=False,
                skip_auto_headers=["Accept-Encoding"],
            )  # bytes pass through as sent
        return self.client

    async def record_feedback(self, key: Key, fb: Feedback, request: Request) -> Response:
        """A client's judgment of a response, stored (a gateway replica sends it to the service)."""
        await run_in_threadpool(self.traffic.flush)  # the response may still wait in the log's queue
        return JSONResponse(
            await run_in_threadpool(record_feedback, self.store, key, fb, self.settings.gateway)
        )

    def system_prompt(self, name: str) -> dict | None:
        """The newest version of a stored system prompt (cached for a few seconds)."""
        now = time.monotonic()
        with self._lock:
            hit = self._prompts.get(name)
        if hit and now - hit[1] < 5.0:
            return hit[0]
        try:
            found = latest_system_prompts(self.store, [name])
        except UserError:  # an unknown name
            found = []
        with self._lock:
            self._prompts[name] = (found[0] if found else None, now)
        return found[0] if found else None


class Authenticate(Protocol):
    """Who is calling /v1: the request's API key, admitted under its rate limits, or a `GatewayError`
    (401, 429). The web layer provides it (`service.web.auth.Auth.client_key`): the gateway knows keys,
    not how a service authenticates."""

    def __call__(self, request: Request, /) -> Key: ...


def build_router(gw: Gateway, authenticate: Authenticate) -> APIRouter:
    """The /v1 routes of `gw`, each request authenticated by `authenticate`."""
    router = APIRouter(prefix="/v1", tags=["gateway"])

    @router.get("/models")
    async def models(request: Request) -> dict:
        authenticate(request)
        dep = gw.deployer
        names = (["current"] if dep.primary else []) + [p.name for p in (dep.primary, dep.canary) if p]
        names += [ARENA] if dep.primary and dep.canary else []
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "rankloop"}
                for n in dict.fromkeys(names)
            ],
        }

    @router.post("/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _counted(gw, authenticate, request, ChatRequest, "/v1/chat/completions")

    @router.post("/completions")
    async def completions(request: Request) -> Response:
        return await _counted(gw, authenticate, request, CompletionRequest, "/v1/completions")

    @router.post("/feedback")
    async def feedback(request: Request) -> Response:
        key = authenticate(request)
        try:
            fb = Feedback.model_validate(await _json(request))
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "body"
            raise GatewayError(400, f"{field}: {err['msg']}", param=field) from None
        return await gw.record_feedback(key, fb, request)

    return router


async def _json(request: Request) -> dict:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GatewayError(400, f"the request body is not valid JSON: {e}") from None


async def _counted(
    gw: Gateway, authenticate: Authenticate, request: Request, model: type, path: str
) -> Response:
    """A completion under its server span and request id; a refusal is counted, logged and its span
    ended here (an answer does that itself when its last byte is out)."""
    start = time.perf_counter()
    span, token = observe.begin(request, "chat" if model is ChatRequest else "text_completion", path)
    try:
        return await _complete(gw, authenticate(request), request, model, path, span)
    except GatewayError as e:
        observe.refused(path, getattr(request.state, "model", "none"), e.status, e.message, span, start)
        raise
    except BaseException:
        end_span(span, 500, "internal error")
        raise
    finally:
        context.detach(token)


async def _complete(gw: Gateway, key: Key, request: Request, model: type, path: str, span: Span) -> Response:
    limits = gw.settings.gateway
    body = await _json(request)
    req = parse(model, body, limits.max_n, limits.max_tokens)
    op = "chat" if model is ChatRequest else "text_completion"
    span.update_name(f"{op} {req.model}")  # GenAI convention: "{operation} {request model}"
    span.set_attributes(
        {
            "gen_ai.request.model": req.model,
            "gen_ai.request.max_tokens": req.max_tokens or req.max_completion_tokens or limits.max_tokens,
            "gen_ai.request.choice.count": req.n,
        }
    )
    sticky = req.user or f"key:{key.id}"
    if req.model == ARENA:
        request.state.model = ARENA
        return await _arena(gw, key, req, body, path, span)
    pool = gw.deployer.choose(req.model, sticky)
    if pool is None:
        dep = gw.deployer
        served = (
            ", ".join(["current", *[p.name for p in (dep.primary, dep.canary) if p]]) if dep.primary else ""
        )
        if req.model == "current" or not served:
            raise GatewayError(
                503,
                "no model is deployed yet (`rankloop deploy MODEL_ID`)"
                + (f"; {dep.error}" if dep.error else ""),
                type_="server_error",
                code="model_unavailable",
                retry_after=5,
            )
        raise GatewayError(
            404,
            f"no route or deployed model named {req.model!r}; valid: {served}",
            param="model",
            code="model_not_found",
        )
    request.state.model = pool.name
    forwarded = {k: v for k, v in body.items() if k != "system_prompt"}
    system = _system_prompt(gw, req, forwarded, sticky)
    if req.stream:
        forwarded["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    if req.max_tokens is None and req.max_completion_tokens is None:
        forwarded["max_tokens"] = limits.max_tokens
    held = gw.keys.hold(key, forwarded, req.n)
    log_all = limits.log_traffic or key.log_traffic

    answering = [pool]  # the pool that answers: `pool`, or its fallback
    row = {
        "key_id": key.id,
        "route": req.model,
        "model_id": pool.model_id,
        "system_prompt_id": system["id"] if system else None,
        "n": req.n,
        "stream": req.stream,
        "request": forwarded if log_all else None,
    }
    begun = gw.traffic.begin(row)

    def done(out: Outcome) -> None:
        gw.keys.record(key, out.prompt_tokens, out.completion_tokens, held)
        observe.answered(path, answering[0].name, key.name, out, span, forwarded if log_all else None)
        gw.traffic.add(
            {
                **row,
                "response_id": (out.body or {}).get("id"),
                "model_id": answering[0].model_id,
                "status": out.status,
                "prompt_tokens": out.prompt_tokens,
                "completion_tokens": out.completion_tokens,
                "latency_ms": out.latency_ms,
                "response": out.body if log_all else None,
            },
            begun,
        )

    headers = {
        "x-request-id": REQUEST_ID.get() or "",
        "x-rankloop-model-id": str(pool.model_id),
        "x-rankloop-system-prompt": system["name"] if system else "",
    }
    try:
        try:
            return await forward(gw.http(), pool, path, forwarded, headers, done, keep_chunks=log_all)
        except GatewayError as e:  # no replica of `pool` answered: its fallback, if it has one
            # `current` falls back; a client that named a model gets that model or the error
            unavailable = e.code == "model_unavailable" and req.model == "current"
            backup = gw.deployer.fallback_for(pool) if unavailable else None
            if backup is None:
                raise
        answering[0] = backup
        request.state.model = backup.name
        observe.fell_back(pool.name, backup.name)
        headers = {
            **headers,
            "x-rankloop-model-id": str(backup.model_id),
            "x-rankloop-fallback": f"{pool.name} is unavailable; {backup.name} answered",
        }
        return await forward(gw.http(), backup, path, forwarded, headers, done, keep_chunks=log_all)
    except BaseException:
        gw.keys.record(key, 0, 0, held)  # it never reached a model: nothing was used
        gw.traffic.cancel(begun)
        raise


async def _arena(gw: Gateway, key: Key, req, body: dict, path: str, span: Span) -> JSONResponse:
    """Two anonymous answers, one from each deployed model (current and canary) in random order; the
    client's vote (`POST /v1/feedback` with preferred_index) becomes a ranking. Always logged."""
    dep = gw.deployer
    if not isinstance(req, ChatRequest) or req.stream or req.n != 1:
        raise GatewayError(
            400, "the arena answers chat requests with n = 1, whole (not streamed)", param="model"
        )
    if dep.primary is None or dep.canary is None:
        raise GatewayError(
            503,
            "the arena needs two deployed models: `rankloop deploy MODEL_ID --canary PCT` adds the second",
            type_="server_error",
            code="model_unavailable",
            retry_after=30,
        )
    forwarded = {k: v for k, v in body.items() if k != "system_prompt"}
    system = _system_prompt(gw, req, forwarded, req.user or f"key:{key.id}")
    forwarded.setdefault("max_tokens", gw.settings.gateway.max_tokens)
    pools = [dep.primary, dep.canary]
    random.shuffle(pools)
    held = gw.keys.hold(key, forwarded, 2)  # two answers: the key's tpm and budgets hold both
    try:
        outs = await asyncio.gather(*[fetch(gw.http(), p, path, forwarded) for p in pools])
    except BaseException:
        gw.keys.record(key, 0, 0, held)
        raise
    bad = next((o for o in outs if o.status != 200), None)
    if bad is not None:
        gw.keys.record(key, sum(o.prompt_tokens for o in outs), sum(o.completion_tokens for o in outs), held)
        observe.answered(path, ARENA, key.name, bad, span, None)
        return JSONResponse(bad.body, status_code=bad.status)
    bodies = [o.body or {} for o in outs]  # a 200 from fetch() always has its body
    usage = {
        k: sum(b["usage"][k] for b in bodies) for k in ("prompt_tokens", "completion_tokens", "total_tokens")
    }
    answer = {
        "id": f"arena-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": ARENA,
        "usage": usage,
        "choices": [{**b["choices"][0], "index": i} for i, b in enumerate(bodies)],
    }
    gw.keys.record(key, usage["prompt_tokens"], usage["completion_tokens"], held)
    whole = Outcome(
        200, answer, usage["prompt_tokens"], usage["completion_tokens"], max(o.latency_ms for o in outs)
    )
    log_all = gw.settings.gateway.log_traffic or key.log_traffic
    observe.answered(path, ARENA, key.name, whole, span, forwarded if log_all else None)
    gw.traffic.add(
        {
            "response_id": answer["id"],
            "key_id": key.id,
            "route": ARENA,
            "model_id": None,
            "system_prompt_id": system["id"] if system else None,
            "n": 2,
            "stream": False,
            "status": 200,
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "latency_ms": whole.latency_ms,
            "request": forwarded,
            "response": {**answer, "rankloop_models": [p.model_id for p in pools]},
        }
    )
    return JSONResponse(answer)


def _system_prompt(gw: Gateway, req, forwarded: dict, sticky: str) -> dict | None:
    """Put the asked-for (or the experiment's) stored system prompt first; None when there is none."""
    if not isinstance(req, ChatRequest):
        if getattr(req, "system_prompt", None) or (req.model_extra or {}).get("system_prompt"):
            raise GatewayError(
                400, "system_prompt applies to /v1/chat/completions only", param="system_prompt"
            )
        return None
    has_own = any(isinstance(m, dict) and m.get("role") == "system" for m in req.messages)
    name = req.system_prompt
    if name and has_own:
        raise GatewayError(
            400, "give either a system message or system_prompt, not both", param="system_prompt"
        )
    if name is None and not has_own:
        name = gw.deployer.arm(sticky)
    if name is None:
        return None
    found = gw.system_prompt(name)
    if found is None:
        raise GatewayError(
            404,
            f"no system prompt named {name!r}; `rankloop system-prompts list` shows them",
            param="system_prompt",
        )
    forwarded["messages"] = [{"role": "system", "content": found["text"]}, *req.messages]
    return found
