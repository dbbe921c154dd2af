"""What the annotator app needs of the service that mounts it, as types (no Gradio here): the store, a
login check, the queue's settings, and the serving operations behind the admin tab's buttons. The service
(service/web/app.py) builds one; the app (annotator/app.py) only calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from service.core.settings import AnnotationOptions
from service.core.store import Store


class Login(Protocol):
    """A login check: the account, if the name and password are a person's and the failed-login
    throttle lets the attempt through; else None. Slow (scrypt): called on a worker thread."""

    def __call__(self, name: str, password: str, /) -> dict | None: ...


class Serving(Protocol):
    """Runs one of the control plane's serving operations (`deploy`, `deploy.promote`, `rollback`)
    with its parameters; its result names the routes served now (`result["routes"]`)."""

    def __call__(self, name: str, /, **params: object) -> dict: ...


@dataclass(frozen=True)
class AnnotatorServices:
    """What the app needs of the service that mounts it (built by service/web/app.py)."""

    store: Store
    login: Login
    queue_settings: AnnotationOptions
    serving: Serving
