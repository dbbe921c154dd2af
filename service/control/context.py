"""What every control-plane operation runs with (service/control/commands.py): the process's store,
settings, job runner and scorer, and in the service the gateway."""

from __future__ import annotations

from dataclasses import dataclass

from service.control.scoring import ScorerCache
from service.core.settings import Settings
from service.core.store import Store
from service.gateway.router import Gateway
from service.jobs.runner import JobRunner


@dataclass
class Context:
    """One per process: the service's (with its gateway) or a command's own when no service runs."""

    store: Store
    settings: Settings
    jobs: JobRunner
    scorers: ScorerCache
    gateway: Gateway | None = None  # None in a CLI process: a deploy is checked and recorded only
