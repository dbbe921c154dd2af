"""`rankloop serve`: the one long-running process that owns the data directory.

It opens the database, starts the FastAPI app (annotator at /annotate, JSON API,
/admin) with uvicorn, and records its address in `<data>/service.json` so that
`rankloop` commands run meanwhile can reach it instead of the locked database. The
admin key comes from settings (`admin_key`, `RANKLOOP_ADMIN_KEY`) or is generated
once into `<data>/admin.key` (mode 0600).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import sys
from pathlib import Path

import httpx

from service.config import Settings
from service.store import Store, StoreError

SERVICE_FILE = "service.json"


def admin_key(settings: Settings) -> str:
    if settings.admin_key:
        return settings.admin_key
    path = settings.data_dir / "admin.key"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24).encode())
    return path.read_text().strip()


def write_private(path: Path, content: bytes) -> None:
    """Create a file readable by its owner only, from the first byte."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content)


def running_service(settings: Settings) -> str | None:
    """The base URL of a live `rankloop serve` on this data directory, if there is one."""
    path = settings.data_dir / SERVICE_FILE
    if not path.exists():
        return None
    try:
        url = json.loads(path.read_text())["url"]
        if httpx.get(f"{url}/healthz", timeout=3).status_code == 200:
            return url
    except (OSError, ValueError, KeyError, httpx.HTTPError):
        pass
    return None


def serve(settings: Settings) -> None:
    """Run until interrupted; the database is held for exactly that long."""
    import uvicorn

    from service.app import create_app

    store = Store.open(settings.db_path)
    settings = settings.model_copy(update={"admin_key": admin_key(settings)})
    info = settings.data_dir / SERVICE_FILE
    # Bind first, so the address (port 0 = any free one) is known before uvicorn starts.
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((settings.host, settings.port))
    except OSError as e:
        store.close()
        raise StoreError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror}; "
                         "pick another --port (0 = any free port)") from None
    url = f"http://{settings.host}:{sock.getsockname()[1]}"
    try:
        app = create_app(settings, store)
        info.write_text(json.dumps({"url": url, "pid": os.getpid()}))
        print(f"rankloop serving {settings.data_dir} at {url}\n  annotator: {url}/annotate\n"
              f"  admin API: {url}/admin (key in {settings.data_dir / 'admin.key'} unless configured)", flush=True)
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it; as SystemExit it lets `finally` clean up.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        # Open browser tabs keep event streams open: give them 5 s, then close them.
        uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)).run(sockets=[sock])
    finally:
        from service.jobs import stop_running

        stop_running(store, "the service stopped")  # a trainer must not outlive the service that runs its job
        info.unlink(missing_ok=True)
        sock.close()
        store.close()
