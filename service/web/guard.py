"""What every request passes before any route sees it, so a new route is protected without a line
of its own. Pure ASGI middleware, outermost first:

* `BodyLimit`: a request body over the limit is refused with 413 before it is parsed or its
  sender authenticated: by its Content-Length at once, or, streamed, as soon as it passes the
  limit. Admin uploads (a file as the body) get `max_upload_mib`; everything else
  `max_body_kib` (rankings, logins and admin parameters are small; the annotator app takes no
  files).
* `SameOrigin`: no cross-origin use of a browser's credentials. A preflight from another
  origin gets 403 and no CORS headers; a state-changing request (POST, PUT, PATCH, DELETE) that
  carries cookies and names another origin (Origin, else Referer) gets 403, the CSRF check for
  Gradio's cookie session. Bearer-token clients (the CLI, the SDK) send no cookies and no
  Origin, so they pass.
* `AnnotatorLogin`: every route of the Gradio app at /annotate answers only a logged-in session,
  except the login page itself, the login and logout calls and static assets.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from service.web.auth import CLIENT_ADDRESS

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def headers_of(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}


async def _refuse(send: Callable, status: int, message: str, openai: bool = False) -> None:
    """A JSON error; under /v1 in OpenAI's shape, which its clients parse."""
    error = (
        {"message": message, "type": "invalid_request_error", "param": None, "code": None}
        if openai
        else message
    )
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], tuple[int, str]]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, what = self.limit_for(scope)
        too_big = f"the request body is over {what}"
        declared = headers_of(scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await _refuse(send, 413, too_big, scope["path"].startswith("/v1/"))
        seen, started, refused = 0, False, False

        async def counted() -> dict:
            # Past the limit: answer 413 now, and tell the app the client left, so it stops reading.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    if not started:
                        await _refuse(send, 413, too_big, scope["path"].startswith("/v1/"))
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if refused:
                return  # the 413 went out already; whatever the app makes of the disconnect is dropped
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not refused:
                raise


def _origin_of(value: str) -> str:
    parts = urlsplit(value)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else value.lower()


class SameOrigin:
    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        h = headers_of(scope)
        claimed = h.get("origin") or (_origin_of(h["referer"]) if "referer" in h else None)
        host = h.get("x-forwarded-host") or h.get("host", "")
        scheme = h.get("x-forwarded-proto") or scope.get("scheme", "http")
        foreign = (
            claimed is not None
            and claimed not in ("", "null")
            and _origin_of(claimed) != f"{scheme}://{host}".lower()
        )
        if foreign and scope["method"] == "OPTIONS":
            return await _refuse(send, 403, "cross-origin requests are not allowed")
        if scope["method"] in WRITES and "cookie" in h and (foreign or claimed == "null"):
            return await _refuse(
                send,
                403,
                f"a request from {claimed} may not act with this site's login (cross-site request refused)",
            )

        async def strip_cors(message: dict) -> None:
            # Whatever a mounted app adds, no other origin is ever allowed to read a response.
            if message["type"] == "http.response.start" and foreign:
                message = {
                    **message,
                    "headers": [
                        (k, v)
                        for k, v in message.get("headers", [])
                        if not k.lower().startswith(b"access-control-")
                    ],
                }
            await send(message)

        await self.app(scope, receive, strip_cors)


class ClientAddress:
    """Records each request's client address where the login throttle reads it (Gradio's login check
    is called with a name and a password only)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        token = CLIENT_ADDRESS.set((scope.get("client") or ("", 0))[0] or None)
        try:
            await self.app(scope, receive, send)
        finally:
            CLIENT_ADDRESS.reset(token)


class AnnotatorLogin:
    """`logged_in(scope)` says whether the request carries a live annotator session."""

    OPEN = ("/login", "/logout", "/favicon.ico", "/theme.css", "/robots.txt", "/manifest.json")
    OPEN_PREFIXES = ("/assets/", "/static/", "/svelte/")

    def __init__(self, app: ASGIApp, prefix: str, logged_in: Callable[[Scope], bool]):
        self.app, self.prefix, self.logged_in = app, prefix, logged_in

    def _open(self, path: str) -> bool:
        rest = path[len(self.prefix) :]
        # The page itself (without a session Gradio renders the login form), login/logout and assets;
        # everything else, `/gradio_api/file=` included, needs a session.
        return rest in ("", "/", *self.OPEN) or rest.startswith(self.OPEN_PREFIXES)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] in ("http", "websocket")
            and (path == self.prefix or path.startswith(self.prefix + "/"))
            and not self._open(path)
            and not self.logged_in(scope)
        ):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 4401})
                return
            return await _refuse(send, 401, "log in to the annotator app first")
        await self.app(scope, receive, send)
