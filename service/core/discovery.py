"""How a `rankloop` command finds a running service on its data directory, and the admin key.

`rankloop serve` writes `service.json` (its URL and PID) when it listens and removes it when
it stops. A command reads it and checks `/healthz`: a live service gets the command over
its admin API; a stale file (the service was killed) is reported, not trusted.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass

import httpx

from service.core.paths import read_secret, write_atomic, write_private
from service.core.procs import pid_alive
from service.core.settings import Settings


@dataclass(frozen=True)
class ServiceInfo:
    url: str | None  # the live service's base URL, or None
    stale: str | None = None  # why service.json was not trusted, when it exists


def admin_key(settings: Settings) -> str:
    """The configured admin key, or the one generated once into the data directory."""
    if settings.admin_key:
        return settings.admin_key
    path = settings.paths.admin_key
    if not path.exists():
        write_private(path, secrets.token_urlsafe(32).encode())
    return read_secret(path, "the admin key")


def find_service(settings: Settings, timeout_s: float = 3.0) -> ServiceInfo:
    path = settings.paths.service_file
    if not path.exists():
        return ServiceInfo(None)
    try:
        info = json.loads(path.read_text())
        url, pid = info["url"], info.get("pid")
    except (OSError, ValueError, KeyError, TypeError) as e:
        return ServiceInfo(None, f"{path} is unreadable ({e})")
    if pid and not pid_alive(pid):
        return ServiceInfo(None, f"{path} names a service at {url} whose process {pid} is gone")
    try:
        if httpx.get(f"{url}/healthz", timeout=timeout_s).status_code == 200:
            return ServiceInfo(url)
        return ServiceInfo(None, f"the service in {path} ({url}) answers /healthz with an error")
    except httpx.HTTPError as e:
        return ServiceInfo(None, f"the service in {path} ({url}) does not answer: {type(e).__name__}")


def running_service(settings: Settings) -> str | None:
    """The base URL of a live `rankloop serve` on this data directory, if there is one."""
    return find_service(settings).url


def write_service_file(settings: Settings, url: str) -> None:
    # Whole or not at all: a command (or a test) reading it meanwhile never sees it half written.
    write_atomic(settings.paths.service_file, json.dumps({"url": url, "pid": os.getpid()}).encode())
