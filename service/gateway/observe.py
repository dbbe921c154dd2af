"""The gateway's requests, observed: a server span per request (OpenTelemetry's GenAI semantic
conventions), its Prometheus counters and histograms, and one log line when it is answered or refused.

The span continues a client's `traceparent`; its child, the call to the model server, is made in
service/gateway/proxy.py. A log line names the key, never the key itself, and carries the request
only when traffic logging is on for it.
"""

from __future__ import annotations

import logging
import time
from contextvars import Token

from fastapi import Request
from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract
from opentelemetry.trace import Span, SpanKind

from service.core.logs import request_id
from service.core.metrics import FALLBACKS, GATEWAY_LATENCY, GATEWAY_REQUESTS, GATEWAY_TOKENS
from service.core.tracing import TRACER, end_span
from service.gateway.proxy import Outcome

LOG = logging.getLogger("rankloop.gateway")


def begin(request: Request, op: str, path: str) -> tuple[Span, Token[Context]]:
    """The request's span, made current (detach the returned token when the handler returns)."""
    rid = request_id(request.headers.get("x-request-id"))
    span = TRACER.start_span(
        op,
        context=extract(request.headers),  # a client's traceparent continues its trace
        kind=SpanKind.SERVER,
        attributes={"gen_ai.operation.name": op, "http.route": path, "rankloop.request_id": rid},
    )
    return span, context.attach(trace.set_span_in_context(span))


def refused(path: str, model: str, status: int, message: str, span: Span, start: float) -> None:
    """`model`: the deployed model chosen before the refusal, or 'none'."""
    GATEWAY_REQUESTS.labels(path, model, str(status)).inc()
    GATEWAY_LATENCY.labels(path, model).observe(time.perf_counter() - start)
    LOG.info(
        "%s %s %s: %s", path, model, status, message, extra={"route": path, "model": model, "status": status}
    )
    end_span(span, status, message)


def answered(path: str, model: str, key: str, out: Outcome, span: Span, logged: dict | None) -> None:
    """An answer, done (a stream's last byte out): `key` is the key's name; `logged` the request, when
    traffic logging is on."""
    GATEWAY_REQUESTS.labels(path, model, str(out.status)).inc()
    GATEWAY_LATENCY.labels(path, model).observe(out.latency_ms / 1000)
    GATEWAY_TOKENS.labels(key, model, "prompt").inc(out.prompt_tokens)
    GATEWAY_TOKENS.labels(key, model, "completion").inc(out.completion_tokens)
    span.set_attributes(
        {
            "gen_ai.response.model": model,
            "gen_ai.response.id": (out.body or {}).get("id") or "",
            "gen_ai.usage.input_tokens": out.prompt_tokens,
            "gen_ai.usage.output_tokens": out.completion_tokens,
        }
    )
    end_span(span, out.status)
    extra: dict = {
        "route": path,
        "model": model,
        "status": out.status,
        "key": key,
        "latency_ms": round(out.latency_ms, 1),
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
    }
    if logged is not None:
        extra["request"] = logged
    with trace.use_span(span, end_on_exit=False):  # a stream ends after its handler let go of the span
        LOG.info("%s %s %s %.0f ms", path, model, out.status, out.latency_ms, extra=extra)


def fell_back(model: str, fallback: str) -> None:
    """No replica of `model` answered and `fallback` takes the request."""
    FALLBACKS.labels(model, fallback).inc()
    LOG.warning(
        "%s is unavailable: %s answers", model, fallback, extra={"model": model, "fallback": fallback}
    )
