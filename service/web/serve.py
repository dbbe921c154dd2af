"""`rankloop serve`: the one long-running process that owns the data directory.

It opens the database, starts the FastAPI app (annotator at /annotate, JSON API,
/admin) with uvicorn, and records its address in `<data>/service.json` so that
`rankloop` commands run meanwhile can reach it instead of the locked database. The
admin key comes from settings (`admin_key`, `RANKLOOP_ADMIN_KEY`) or is generated
once into `<data>/admin.key` (mode 0600).
"""

from __future__ import annotations

import gc
import signal
import socket
import sys

from service.control.backup_schedule import BackupSchedule
from service.control.webhooks import Dispatcher
from service.core.discovery import admin_key, write_service_file
from service.core.errors import UserError
from service.core.logs import setup_logging
from service.core.settings import Settings
from service.core.store import Store
from service.core.tracing import setup_tracing
from service.jobs.runner import reap_stale


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound first so the address (port 0 = any free one) is known before uvicorn
    starts; a port in use is a UserError naming it."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UserError(
            f"cannot listen on {host}:{port}: {e.strerror}; pick another --port (0 = any free port)"
        ) from None
    return sock


def serve(settings: Settings) -> None:
    """Run until interrupted; the database is held for exactly that long."""
    import uvicorn

    from service.web.app import create_app

    setup_logging(settings.log_format)
    setup_tracing()  # only when the OTEL_* variables ask for traces
    store = Store.open(settings.paths.db)
    try:  # a damaged database or a bad key stops here, before the port is taken
        store.check_readable()
        settings = settings.model_copy(update={"admin_key": admin_key(settings)})
    except BaseException:
        store.close()
        raise
    info = settings.paths.service_file
    try:
        sock = bind(settings.host, settings.port)
    except UserError:
        store.close()
        raise
    url = f"http://{settings.host}:{sock.getsockname()[1]}"
    app = scrape = schedule = hooks = None
    try:
        reap_stale(store)  # jobs of a service that died are marked failed, not left running
        app = create_app(settings, store)
        resumed = app.state.ctx.jobs.resume()  # trainers still running on a Ray cluster, followed again
        if resumed:
            print(f"following again jobs {resumed}: their trainers run on a Ray cluster", flush=True)
        app.state.gateway.start()  # the recorded deployment starts serving in the background
        # The app holds ~280k objects after start (Gradio, FastAPI, pydantic): a full garbage collection
        # over them took 75-95 ms, a stall of every stream the gateway relays. Frozen, the collector
        # skips them (vLLM's frontend does the same).
        gc.collect()
        gc.freeze()
        scrape = _metrics_listener(settings, app.state.metrics)
        if settings.backup.every_h:
            schedule = BackupSchedule(
                store,
                settings.paths,
                settings.backup.every_h,
                settings.backup.dir or settings.paths.root / "backups",
                settings.backup.keep,
            )
            schedule.start()
        hooks = Dispatcher(store)  # webhooks: new events into the outbox, deliveries out, each second
        hooks.start()
        write_service_file(settings, url)
        print(
            f"rankloop serving {settings.data_dir} at {url}\n  annotator: {url}/annotate\n"
            f"  admin API: {url}/admin (key in {settings.paths.admin_key} unless configured)\n"
            f"  OpenAI API: {url}/v1 (keys: rankloop keys create NAME)",
            flush=True,
        )
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it; as SystemExit it lets `finally` clean up.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # Open browser tabs keep event streams open: give them 5 s, then close them.
        # log_config=None: uvicorn's records go through setup_logging's handler (text or JSON).
        config = uvicorn.Config(app, log_level="warning", log_config=None, timeout_graceful_shutdown=5)
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        if app is not None:  # a job, a trainer or a vLLM server must not outlive the service that runs it
            app.state.ctx.jobs.stop_all()
            app.state.ctx.jobs.engines.stop_all()
            app.state.gateway.stop()
        if scrape is not None:
            scrape.shutdown()
        if schedule is not None:
            schedule.stop()
        if hooks is not None:
            hooks.stop()
        info.unlink(missing_ok=True)
        sock.close()
        store.close()


def _metrics_listener(settings: Settings, registry):
    """`metrics.listen`: the same metrics on a separate address, with no key (prometheus_client's server)."""
    if settings.metrics.listen is None:
        return None
    from prometheus_client import start_http_server

    host, port = settings.metrics.listen.rsplit(":", 1)
    try:
        server, _ = start_http_server(int(port), host or "0.0.0.0", registry=registry)
    except OSError as e:
        raise UserError(
            f"cannot serve metrics on {settings.metrics.listen}: {e.strerror}; "
            "set metrics.listen to a free HOST:PORT"
        ) from None
    print(f"  metrics: http://{settings.metrics.listen}/metrics (no key)", flush=True)
    return server
