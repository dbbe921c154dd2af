"""OpenTelemetry traces, off unless the standard `OTEL_*` variables ask for them.

On when `OTEL_TRACES_EXPORTER` names an exporter (`otlp`, `console`) or an OTLP endpoint is set
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` keeps them off. The OTLP exporter reads its own variables (endpoint,
headers, timeout); `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL` choose
`http/protobuf` (the default) or `grpc`. `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` name the
process. Off, `TRACER` makes non-recording spans, which cost the gateway next to nothing.

Spans: a gateway request (GenAI semantic conventions) with a child span for the call to the model
server, whose `traceparent` header vLLM receives; jobs; ranking submits.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.trace import Span, StatusCode

from service.core.errors import UserError

TRACER = trace.get_tracer("rankloop")


def enabled(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" or exporters == "none":
        return False
    return bool(exporters) or any(
        env.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def _exporter(name: str):
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise UserError(f"OTEL_TRACES_EXPORTER names {name!r}; rankloop knows otlp, console, none")
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    else:
        raise UserError(f"OTLP protocol {protocol!r}: valid: http/protobuf, grpc")
    return OTLPSpanExporter()


def setup_tracing(service_name: str = "rankloop") -> bool:
    """Install a tracer provider when the environment asks for traces; True when it did."""
    if not enabled():
        return False
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    names = [n.strip() for n in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").lower().split(",")]
    processors = [BatchSpanProcessor(_exporter(n)) for n in names if n]  # a bad name fails before install
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    provider = TracerProvider(resource=Resource.create({} if named else {"service.name": service_name}))
    for p in processors:
        provider.add_span_processor(p)
    trace.set_tracer_provider(provider)
    return True


def end_span(span: Span, status: int, error: str | None = None) -> None:
    """End a span that answered with HTTP `status` (an error from 400 on)."""
    span.set_attribute("http.response.status_code", status)
    if status >= 400:
        span.set_status(StatusCode.ERROR, error)
        span.set_attribute("error.type", str(status))
    span.end()
