"""Reaching a running `rankloop serve` from a `rankloop` command.

While the service holds the data directory, the database cannot be opened by anyone
else; commands that an admin may run meanwhile send their work to its admin API
instead, with the data directory's admin key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import httpx

from service.config import Settings
from service.serve import admin_key, running_service
from service.store import Store, StoreError

T = TypeVar("T")


def admin_client(settings: Settings) -> httpx.Client | None:
    """An HTTP client for the running service's admin API, or None when no service runs."""
    url = running_service(settings)
    if url is None:
        return None
    return httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {admin_key(settings)}"})


def call(client: httpx.Client, method: str, path: str, **kw) -> dict | list:
    resp = client.request(method, path, **kw)
    if resp.status_code >= 400:
        try:
            msg = resp.json().get("error", resp.text)
        except ValueError:
            msg = resp.text
        raise StoreError(f"the service answered {resp.status_code}: {msg}")
    return resp.json()


def service_or_store(settings: Settings, remote: Callable[[httpx.Client], T], local: Callable[[Store], T]) -> T:
    """Ask the running service when one holds the data directory; else use the database directly."""
    client = admin_client(settings)
    if client is not None:
        with client:
            return remote(client)
    with Store.open(settings.db_path) as store:
        return local(store)
