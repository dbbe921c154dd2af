"""`rankloop gateway --control URL`: the /v1 gateway alone, as one of N stateless replicas behind any
load balancer (examples/gateway/nginx.conf), with the service at URL as its control plane
(service/gateway/mirror.py).

    /v1/*      the same routes and errors as the service's gateway
    /health    200 {"ok": true} once the service has sent its state; else 503
    /metrics   the replica's own gateway metrics (admin-scope key or the control key; or public)
"""

from __future__ import annotations

import gc
import hmac
import signal
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from service.core import metrics as core_metrics
from service.core.errors import UserError
from service.core.logs import setup_logging
from service.core.tracing import setup_tracing
from service.gateway.key_records import KeyScope
from service.gateway.mirror import ControlError, MirrorGateway
from service.gateway.router import build_router
from service.gateway.schemas import GatewayError
from service.gateway.spool import Spool
from service.web import metrics
from service.web.guard import BodyLimit
from service.web.serve import bind


def create_replica_app(gw: MirrorGateway, control_key: str, metrics_public: bool) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        client, gw.client = gw.client, None
        if client is not None:
            await client.close()

    app = FastAPI(
        title="rankloop gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.get("/health")
    @app.get("/healthz")
    def health() -> JSONResponse:
        # Up only while it has the service's state: a load balancer sends nothing to a replica that
        # has none yet (or whose control key was revoked).
        return JSONResponse({"ok": gw.serving}, status_code=200 if gw.serving else 503)

    def require_admin(authorization: str | None) -> str:
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() == "bearer" and token:
            if hmac.compare_digest(token.encode(), control_key.encode()):
                return "control-key"
            key = gw.keys.lookup(token)
            if key is not None and key.scope == KeyScope.ADMIN:
                return f"key:{key.name}"
        raise HTTPException(401, "send 'Authorization: Bearer KEY' with an admin-scope key")

    registry = CollectorRegistry(auto_describe=False)
    for metric in core_metrics.ALL:
        registry.register(metric)
    registry.register(metrics.Replicas(gw, scrape=False))
    app.include_router(metrics.build_router(registry, metrics_public, require_admin))
    app.include_router(
        build_router(gw, lambda request: gw.keys.authenticate(request.headers.get("authorization")))
    )

    def limit_for(scope: dict) -> tuple[int, str]:
        kib = gw.settings.gateway.max_body_kib
        return kib * 2**10, f"the limit of {kib} KiB (the service's setting gateway.max_body_kib)"

    app.add_middleware(BodyLimit, limit_for=limit_for)
    return app


def run_gateway(
    control: str,
    control_key: str,
    host: str,
    port: int,
    spool_dir: Path,
    log_format: str = "text",
    metrics_public: bool = False,
) -> None:
    """Serve /v1 on host:port until interrupted, with the service at `control` as the control plane."""
    import uvicorn

    setup_logging(log_format)
    setup_tracing()
    spool = Spool(spool_dir)
    try:
        sock = bind(host, port)
    except UserError:
        spool.close()
        raise
    address = f"{host}:{sock.getsockname()[1]}"
    gw = MirrorGateway(control, control_key, spool, address)
    try:
        gw.sync()  # the first state, and what an earlier run left in the spool
    except ControlError as e:
        sock.close()
        spool.close()
        raise UserError(
            f"{e}; is `rankloop serve` running there, and is the control key an admin-scope key?"
        ) from None
    gw.start()
    try:
        app = create_replica_app(gw, control_key, metrics_public)
        gc.collect()
        gc.freeze()  # as in `serve`: a full collection over the app's objects stalls every relayed stream
        print(
            f"rankloop gateway at http://{address}/v1, controlled by {control} "
            f"(replica {spool.replica}, spool {spool_dir})",
            flush=True,
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        config = uvicorn.Config(app, log_level="warning", log_config=None, timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        gw.stop()
        sock.close()
