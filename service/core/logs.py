"""The service's logs: text for people, or JSON lines for a log pipeline (`log_format: json`,
`rankloop serve --log-format json`).

Every record carries the request id (`x-request-id`, taken from the client when it sends a sane one)
and the trace and span ids of the current OpenTelemetry span, so a log line finds its trace. What a
record may hold is decided where it is written: a key's name, never the key; prompt text only when
traffic logging is on for that request.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import uuid

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LOGGERS = ("rankloop", "uvicorn", "uvicorn.error")


def request_id(sent: str | None) -> str:
    """The request's id: the client's `x-request-id` when it is short and plain, else a new one."""
    rid = sent if sent and _SANE_ID.fullmatch(sent) else uuid.uuid4().hex
    REQUEST_ID.set(rid)
    return rid


class Ids(logging.Filter):
    """Adds request_id, trace_id and span_id (None when there is none) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        ctx = trace.get_current_span().get_span_context()
        record.trace_id = format(ctx.trace_id, "032x") if ctx.is_valid else None
        record.span_id = format(ctx.span_id, "016x") if ctx.is_valid else None
        return True


def formatter(fmt: str) -> logging.Formatter:
    if fmt == "json":
        return JsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}{trace_id}{span_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    return logging.Formatter("{asctime} {levelname} {name}: {message}", style="{")


def setup_logging(fmt: str = "text", level: int = logging.INFO) -> logging.Handler:
    """Send rankloop's and uvicorn's records to stderr in `fmt` (text or json); returns the handler."""
    if fmt not in ("text", "json"):
        raise ValueError(f"log format {fmt!r}: valid: text, json")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(Ids())
    handler.setFormatter(formatter(fmt))
    for name in LOGGERS:
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.propagate = False
    logging.getLogger("rankloop").setLevel(level)
    return handler
