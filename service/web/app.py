"""The service's FastAPI app: the annotator (Gradio, at /annotate), its JSON API, /admin, /healthz.

One process owns the database: the app holds the only `Store` on `app.state`, and
every route and Gradio handler uses it. Errors a client can fix come back as 4xx
with a JSON body `{"error": "..."}`, never a stack trace.

    app = create_app(settings, store)      # then: uvicorn.run(app, ...)
"""

from __future__ import annotations

import secrets

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from annotator import api as annotate_api
from annotator.accounts import LoginThrottle, SessionSigner
from annotator.queue import NotLeased
from annotator.ranking import RankingError
from reward.configfile import ConfigError
from service.core.errors import StoreError
from service.core.paths import DataPaths, write_private
from service.core.settings import Settings
from service.core.store import Store
from service.loop.commands import Context
from service.loop.engines import EngineSupervisor
from service.loop.jobs import JobRunner
from service.loop.scoring import ScorerCache
from service.web import admin


def data_secret(paths: DataPaths) -> bytes:
    """The data directory's signing secret (created once, readable only by its owner)."""
    path = paths.secret_key
    if not path.exists():
        write_private(path, secrets.token_bytes(32))
    return path.read_bytes()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(settings: Settings, store: Store, *, mount_ui: bool = True) -> FastAPI:
    app = FastAPI(title="rankloop", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.store = store
    app.state.throttle = LoginThrottle()
    app.state.signer = SessionSigner(data_secret(settings.paths))
    # The control plane: every admin operation runs with this context, jobs on its runner.
    app.state.ctx = Context(store, settings, JobRunner(store, settings, EngineSupervisor(settings)), ScorerCache())
    app.state.scorers = app.state.ctx.scorers
    app.state.queue_settings = settings.annotation

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return _error(422, "; ".join(parts))

    # Errors a client can fix; the most specific class wins (NotLeased is a StoreError).
    for error, status in [(RankingError, 422), (ConfigError, 422), (NotLeased, 409), (StoreError, 400)]:
        app.add_exception_handler(error, lambda request, exc, status=status: _error(status, str(exc)))

    @app.get("/healthz")
    def healthz() -> dict:
        return {"ok": True}

    app.include_router(annotate_api.router)
    app.include_router(admin.router)
    if mount_ui:
        import gradio as gr

        from annotator.app import build_ui, gradio_auth
        from annotator.render import SHORTCUTS_CSS, SHORTCUTS_JS

        app = gr.mount_gradio_app(
            app, build_ui(app.state), path="/annotate", auth=gradio_auth(app.state),
            auth_message="rankloop: log in with your annotator account",
            allowed_paths=[], blocked_paths=[str(settings.data_dir.resolve())], show_error=True,
            footer_links=[], ssr_mode=False, mcp_server=False, head=SHORTCUTS_JS, css=SHORTCUTS_CSS,
        )
    return app
