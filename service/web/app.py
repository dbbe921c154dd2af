"""The service's FastAPI app: the annotator (Gradio, at /annotate), its JSON API, /admin, the
OpenAI-compatible gateway (/v1), /healthz.

One process owns the database: the app holds the only `Store`, and every route and
Gradio handler uses it; who may call what is decided in service/web/auth.py. Each part
gets what it needs passed in, typed: the routers are built by factories, the gateway's
with the web layer's `authenticate`, and the Gradio app with an `AnnotatorServices`. Errors a client can fix come back as 4xx
with a JSON body `{"error": "..."}`, never a stack trace.

    app = create_app(settings, store)      # then: uvicorn.run(app, ...)
"""

from __future__ import annotations

import secrets
from contextlib import asynccontextmanager
from http.cookies import SimpleCookie

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.routing import Mount

from annotator.accounts import LoginThrottle
from annotator.queue import NotLeased
from annotator.ranking import RankingError
from reward.configfile import ConfigError
from service.control.commands import COMMANDS
from service.control.context import Context
from service.control.scoring import ScorerCache
from service.core.errors import CLIENT_ERRORS, StorageError, UserError, describe
from service.core.paths import DataPaths, write_private
from service.core.settings import Settings
from service.core.store import Store
from service.engine.supervisor import EngineSupervisor
from service.gateway.hub import Hub
from service.gateway.router import Gateway, build_router
from service.gateway.schemas import GatewayError
from service.jobs.runner import JobRunner
from service.web import admin, annotate_api, hub_api, metrics
from service.web.auth import Auth, ExpiringSessions, SessionSigner
from service.web.guard import AnnotatorLogin, BodyLimit, ClientAddress, SameOrigin, headers_of


def data_secret(paths: DataPaths) -> bytes:
    """The data directory's signing secret (created once, readable only by its owner)."""
    path = paths.secret_key
    if not path.exists():
        write_private(path, secrets.token_bytes(32))
    return path.read_bytes()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: Settings, store: Store, *, mount_ui: bool = True) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        client, gateway.client = gateway.client, None
        if client is not None:  # the upstream connections, closed in their own event loop
            await client.close()

    app = FastAPI(title="rankloop", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    gateway = Gateway.create(store, settings)
    auth = Auth(
        store,
        settings.admin_key,
        SessionSigner(data_secret(settings.paths), ttl_s=settings.session_ttl_h * 3600),
        gateway.keys,
        LoginThrottle(),
    )
    # The control plane: every admin operation runs with this context, jobs on its runner.
    ctx = Context(
        store, settings, JobRunner(store, settings, EngineSupervisor(settings)), ScorerCache(), gateway
    )
    # What `serve` and tests reach: the gateway (started and stopped by serve) and the control plane.
    app.state.settings, app.state.store, app.state.auth = settings, store, auth
    app.state.gateway, app.state.ctx = gateway, ctx

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return _error(422, "; ".join(parts))

    # Errors a client can fix; the most specific class wins (NotLeased is a UserError). A damaged database
    # is the operator's to fix, not the client's: 503, with the same message the command line prints.
    for error, status in [
        (StorageError, 503),
        (RankingError, 422),
        (ConfigError, 422),
        (NotLeased, 409),
        (UserError, 400),
        *((e, 422) for e in CLIENT_ERRORS if e is not UserError),
    ]:
        app.add_exception_handler(error, lambda request, exc, status=status: _error(status, describe(exc)))

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return exc.response()

    # Anonymous: up or down only (replicas and errors are at /admin/routes). /health too, the path
    # vLLM and load balancers probe, so a service can stand behind another's gateway as an endpoint.
    @app.get("/healthz")
    @app.get("/health")
    def healthz() -> dict:
        return {"ok": True}

    app.state.metrics = metrics.registry_for(store, gateway)
    app.include_router(metrics.build_router(app.state.metrics, settings.metrics.public, auth.admin))
    app.include_router(annotate_api.build_router(auth, store, settings.annotation))
    app.include_router(build_router(gateway, auth.client_key))
    gateway.hub = Hub(
        store, settings, gateway.deployer, gateway.keys
    )  # stateless gateway replicas (`rankloop gateway --control URL`) sync here
    app.include_router(hub_api.build_router(gateway.hub, auth.admin))
    app.include_router(admin.build_router(auth, ctx))
    if mount_ui:
        app = _mount_annotator(app, settings, store, auth, ctx)

    # Outermost last: the size limit before anything reads the body, then the origin check.
    app.add_middleware(SameOrigin)
    app.add_middleware(ClientAddress)
    app.add_middleware(BodyLimit, limit_for=body_limit(settings))
    return app


def _mount_annotator(app: FastAPI, settings: Settings, store: Store, auth: Auth, ctx: Context) -> FastAPI:
    """The Gradio app at /annotate, behind its login, with sessions that expire and can be revoked."""
    import gradio as gr
    from gradio.routes import App as GradioApp

    from annotator.app import build_ui, gradio_auth
    from annotator.render import SHORTCUTS_CSS, SHORTCUTS_JS
    from annotator.services import AnnotatorServices

    def serving(name: str, /, **params: object) -> dict:  # the admin tab's deploy, promote and rollback
        command = COMMANDS[name]
        return command.run(ctx, command.params.model_validate(params))

    services = AnnotatorServices(store, auth.login, settings.annotation, serving)
    blocks = build_ui(services)
    app = gr.mount_gradio_app(
        app,
        blocks,
        path="/annotate",
        auth=gradio_auth(services),
        auth_message="rankloop: log in with your annotator account",
        allowed_paths=[],
        blocked_paths=[str(settings.data_dir.resolve())],
        show_error=True,
        footer_links=[],
        ssr_mode=False,
        mcp_server=False,
        head=SHORTCUTS_JS,
        css=SHORTCUTS_CSS,
    )
    # Gradio's queue polls for work every 1 ms on Linux, in the event loop the /v1 gateway relays its
    # streams in: 1,000 wake-ups a second, measurable on 2 cores (bench/serve.py). Every 20 ms adds at
    # most that to an annotator's click. (A private attribute: gradio is pinned below 7.)
    if getattr(blocks, "_queue", None) is not None:
        blocks._queue.sleep_when_free = 0.02
    ui = next(r.app for r in app.routes if isinstance(r, Mount) and r.path == "/annotate")
    assert isinstance(ui, GradioApp), ui
    # Gradio's session table, with an expiry and revocation (disabled or logged out since: it ends).
    sessions = ExpiringSessions(settings.session_ttl_h * 3600, still_valid=auth.app_session_valid)
    ui.tokens = sessions
    cookies = (f"access-token-{ui.cookie_id}", f"access-token-unsecure-{ui.cookie_id}")

    def session_user(cookie_header: str) -> str | None:
        jar = SimpleCookie(cookie_header)
        return next((u for n in cookies if n in jar and (u := sessions.get(jar[n].value))), None)

    def logged_in(scope: dict) -> bool:
        return session_user(headers_of(scope).get("cookie", "")) is not None

    app.add_middleware(AnnotatorLogin, prefix="/annotate", logged_in=logged_in)

    @app.get("/report", include_in_schema=False)
    def report(request: Request) -> HTMLResponse:
        """The loop's report, rebuilt from the database, for an admin logged in to the app (the admin
        tab links here)."""
        if not auth.is_admin(session_user(request.headers.get("cookie", ""))):
            raise HTTPException(403, "admins only: log in to the annotator app with an admin account")
        from service.report.report import build_report

        return HTMLResponse(build_report(store))

    return app


def body_limit(settings: Settings):
    uploads = {"/admin" + c.path for c in COMMANDS.values() if c.upload}

    def limit_for(scope: dict) -> tuple[int, str]:
        if str(scope.get("path", "")).startswith("/v1/"):
            return settings.gateway.max_body_kib * 2**10, (
                f"the limit of {settings.gateway.max_body_kib} KiB (setting gateway.max_body_kib)"
            )
        if scope.get("method") == "POST" and (
            scope.get("path") in uploads or scope.get("path") == "/admin/gateway/sync"
        ):
            return settings.max_upload_mib * 2**20, (
                f"the upload limit of {settings.max_upload_mib} MiB (setting max_upload_mib)"
            )
        return (
            settings.max_body_kib * 2**10,
            f"the limit of {settings.max_body_kib} KiB (setting max_body_kib)",
        )

    return limit_for
