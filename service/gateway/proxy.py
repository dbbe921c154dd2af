"""Forwarding one request to a pool: pick a replica, send, pass the answer back (streams chunk by
chunk), count usage, release the replica.

A replica that refuses the connection before answering is marked unhealthy and the request goes
to another one (it never started there); with none left the client gets 503 and Retry-After at
once, never a hang. Streams ask vLLM for a final usage chunk, so every response carries usage.

The upstream client is aiohttp, not httpx: a relayed stream costs one read per network packet,
and on the same cores as the model server httpx's per-chunk overhead cost about a sixth of the
throughput at 32 streams (bench/serve.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from fastapi.responses import JSONResponse, StreamingResponse
from opentelemetry import trace
from opentelemetry.propagate import inject
from opentelemetry.trace import Span, SpanKind

from service.core.metrics import GATEWAY_TOKEN_GAP, GATEWAY_TTFT, UPSTREAM_ERRORS, UPSTREAM_RETRIES
from service.core.tracing import TRACER, end_span
from service.gateway.schemas import GatewayError
from service.gateway.upstreams import Pool, Upstream

RETRY_AFTER_S = 2
TAIL = 4096  # bytes of a stream kept to read its usage chunk


@dataclass
class Outcome:
    """What a finished request tells the key's counters and the traffic log."""

    status: int
    body: dict | None  # the answer (a stream's is rebuilt from its chunks when it is logged)
    prompt_tokens: int
    completion_tokens: int
    latency_ms: float


def _usage(body: dict | None) -> tuple[int, int]:
    usage = (body or {}).get("usage") or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def _last_usage(tail: bytes) -> dict | None:
    for line in reversed(tail.split(b"\n")):
        if line.startswith(b"data: {") and b'"usage"' in line:
            try:
                chunk = json.loads(line[6:])
            except json.JSONDecodeError:
                continue
            if chunk.get("usage"):
                return chunk
    return None


async def _connect(
    client: aiohttp.ClientSession, pool: Pool, path: str, body: dict
) -> tuple[Upstream, aiohttp.ClientResponse, Span]:
    """A replica's answer to `body`, under a client span (the caller ends it when the answer is read)
    whose `traceparent` the model server receives."""
    span = TRACER.start_span(f"POST {path}", kind=SpanKind.CLIENT, attributes={"rankloop.model": pool.name})
    try:
        upstream, resp = await _send(client, pool, path, body, span)
    except BaseException as e:
        end_span(span, getattr(e, "status", 499), str(e))
        raise
    span.set_attribute("server.address", upstream.url)
    return upstream, resp, span


def prefix_of(body: dict) -> str | None:
    """What requests must share to reuse a replica's prefix cache: a chat's messages but its last
    (the system prompt and the conversation so far), or all of a one-turn chat's (so K samples of one
    question meet, and different questions under one system prompt still spread), or the start of a
    completion's prompt."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        head = messages[:-1]
        if not any(isinstance(m, dict) and m.get("role") == "user" for m in head):
            head = messages
        return json.dumps(head, sort_keys=True)
    prompt = body.get("prompt")
    return prompt[:512] if isinstance(prompt, str) else None


async def _send(
    client: aiohttp.ClientSession, pool: Pool, path: str, body: dict, span: Span
) -> tuple[Upstream, aiohttp.ClientResponse]:
    headers: dict[str, str] = {}
    inject(headers, context=trace.set_span_in_context(span))  # traceparent (nothing when tracing is off)
    tried: set[int] = set()
    stale = 0
    while True:
        upstream = pool.acquire(skip=tried, prefix=prefix_of(body))
        if upstream is None:
            UPSTREAM_ERRORS.labels(pool.name, "no_replica").inc()
            raise GatewayError(
                503,
                f"no replica of {pool.name} is up; the supervisor is restarting it",
                type_="server_error",
                code="model_unavailable",
                retry_after=RETRY_AFTER_S,
            )
        try:
            return upstream, await client.post(
                upstream.url + path,
                json={**body, "model": upstream.served_name},
                headers={**headers, "Authorization": f"Bearer {upstream.key}"},
            )
        except (
            aiohttp.ClientConnectorError
        ):  # refused: nothing reached the model; mark it down and try another
            pool.release(upstream)
            upstream.healthy = False
            tried.add(id(upstream))
            UPSTREAM_ERRORS.labels(pool.name, "refused").inc()
            UPSTREAM_RETRIES.labels(pool.name).inc()
        except (
            TimeoutError,
            aiohttp.ServerTimeoutError,
        ):  # no connection or no answer in time: never retried
            pool.release(upstream)
            UPSTREAM_ERRORS.labels(pool.name, "timeout").inc()
            raise GatewayError(
                504, f"the model server of {pool.name} did not answer in time", type_="server_error"
            ) from None
        except aiohttp.ClientConnectionError:  # a kept-alive connection it had closed (reset or disconnected)
            pool.release(upstream)
            UPSTREAM_ERRORS.labels(pool.name, "closed").inc()
            stale += 1
            if stale > 2:
                raise GatewayError(
                    502, f"the model server of {pool.name} closed the connection", type_="server_error"
                ) from None
            UPSTREAM_RETRIES.labels(pool.name).inc()
        except aiohttp.ClientError as e:  # anything else from the client library: the upstream's fault
            pool.release(upstream)
            UPSTREAM_ERRORS.labels(pool.name, "failed").inc()
            raise GatewayError(
                502, f"the model server of {pool.name} failed: {e!r}", type_="server_error"
            ) from None
        except BaseException:  # cancelled (the client left) or anything else: the replica is free again
            pool.release(upstream)
            raise


async def fetch(client: aiohttp.ClientSession, pool: Pool, path: str, body: dict) -> Outcome:
    """A whole (not streamed) answer from a replica of `pool`."""
    start = time.perf_counter()
    upstream, resp, span = await _connect(client, pool, path, body)
    return await _whole(pool, upstream, resp, span, start)


async def _whole(
    pool: Pool, upstream: Upstream, resp: aiohttp.ClientResponse, span: Span, start: float
) -> Outcome:
    try:
        raw = await resp.read()
    except (aiohttp.ClientError, TimeoutError) as e:
        UPSTREAM_ERRORS.labels(pool.name, "broken").inc()
        end_span(span, 502, repr(e))
        raise GatewayError(
            502, f"the model server of {pool.name} broke off its answer ({e!r})", type_="server_error"
        ) from None
    finally:
        pool.release(upstream)
        resp.release()
    end_span(span, resp.status)
    try:
        answer = json.loads(raw)
    except json.JSONDecodeError:
        raise GatewayError(
            502, f"the model server answered {resp.status} with no JSON", type_="server_error"
        ) from None
    return Outcome(resp.status, answer, *_usage(answer), (time.perf_counter() - start) * 1000)


@dataclass
class _Seen:
    """What a relayed stream has shown so far."""

    tail: bytes = b""  # the last bytes, where the usage event is
    last: float = 0.0  # when the last chunk was relayed (0: none yet)
    kept: list[bytes] = field(default_factory=list)  # every chunk, when the answer is logged
    finished: bool = False


async def forward(
    client: aiohttp.ClientSession,
    pool: Pool,
    path: str,
    body: dict,
    headers: dict[str, str],
    done: Callable[[Outcome], None],
    keep_chunks: bool,
) -> Any:
    """Send `body` to `path` on a replica of `pool`; `done` gets the outcome when the answer is complete."""
    start = time.perf_counter()
    upstream, resp, span = await _connect(client, pool, path, body)
    if not (body.get("stream") and resp.status == 200):
        out = await _whole(pool, upstream, resp, span, start)
        done(out)
        return JSONResponse(out.body, status_code=out.status, headers=headers)

    seen = _Seen()
    ttft, gap = GATEWAY_TTFT.labels(pool.name), GATEWAY_TOKEN_GAP.labels(pool.name)

    async def finish() -> None:
        """Once, however the stream ends (also when the client leaves before it starts)."""
        if seen.finished:
            return
        seen.finished = True
        pool.release(upstream)
        end_span(span, 200)
        last = _last_usage(seen.tail)
        answer = rebuild(b"".join(seen.kept)) if keep_chunks else last
        done(Outcome(200, answer, *_usage(last), (time.perf_counter() - start) * 1000))
        resp.close()  # a stream cut short leaves its connection unusable; a finished one was released

    async def chunks() -> AsyncIterator[bytes]:
        try:
            async for chunk in resp.content.iter_any():  # whatever has arrived: several events when behind
                now = time.perf_counter()
                if seen.last:
                    gap.observe(now - seen.last)
                else:
                    ttft.observe(now - start)
                seen.last = now
                seen.tail = (seen.tail + chunk)[-TAIL:]
                if keep_chunks:
                    seen.kept.append(chunk)
                yield chunk
        finally:
            await finish()

    return Relay(chunks(), finish, media_type="text/event-stream", headers=headers)


class Relay(StreamingResponse):
    """A streamed answer that releases its replica even if it is cancelled before it starts."""

    def __init__(self, content: AsyncIterator[bytes], finish: Callable[[], Any], **kw: Any):
        super().__init__(content, **kw)
        self._finish = finish

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._finish()


def rebuild(stream: bytes) -> dict | None:
    """A streamed answer as one response body (id, model, each choice's text, usage), for the log."""
    out: dict[str, Any] | None = None
    texts: dict[int, list[str]] = {}
    for line in stream.split(b"\n"):
        if not line.startswith(b"data: {"):
            continue
        try:
            chunk = json.loads(line[6:])
        except json.JSONDecodeError:  # a stream cut off mid-line
            continue
        out = out or {"id": chunk.get("id"), "model": chunk.get("model"), "object": chunk.get("object")}
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            texts.setdefault(choice.get("index", 0), []).append(
                delta.get("content") or choice.get("text") or ""
            )
        if chunk.get("usage"):
            out["usage"] = chunk["usage"]
    if out is not None:
        out["choices"] = [{"index": i, "text": "".join(t)} for i, t in sorted(texts.items())]
    return out
