"""The engine supervisor: the vLLM servers a process keeps for sampling, one per checkpoint.

A sampling job asks for a model's server; a live one is reused, otherwise it is started
(and idle servers of other models are stopped first, so one checkpoint's weights and KV
cache are in memory at a time). The service keeps its servers until it stops; a command
run without a service stops them when it ends.

    engines = EngineSupervisor(settings)
    with engines.use(Path("models/tiny")) as server:
        ...  # server.base_url
    engines.stop_all()
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.core.settings import Settings, VLLMOptions
from service.engine.server import VLLMServer, start_server


class EngineSupervisor:
    def __init__(self, settings: Settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._servers: dict[tuple[Path, str], VLLMServer] = {}
        self._users: dict[tuple[Path, str], int] = {}

    @contextmanager
    def use(self, model_dir: Path, opts: VLLMOptions | None = None) -> Iterator[VLLMServer]:
        """The model's server for the duration of the block (started, or reused when it runs with
        the same options)."""
        opts = opts or self.settings.vllm
        key = (Path(model_dir).resolve(), opts.model_dump_json())
        with self._lock:
            server = self._servers.get(key)
            if server is None or not server.alive():
                for other in [k for k in self._servers if k != key and not self._users.get(k)]:
                    self._servers.pop(other).stop()
                # Started under the lock: two jobs for one model must not start two servers.
                server = self._servers[key] = start_server(key[0], opts, self.settings.paths.logs)
            self._users[key] = self._users.get(key, 0) + 1
        try:
            yield server
        finally:
            with self._lock:
                self._users[key] -= 1

    def stop_idle(self) -> None:
        """Stop the servers no job is using: what data-parallel replicas do before they start, since an
        idle server still holds its GPU memory (and on a CPU, its cores' share of the KV cache)."""
        with self._lock:
            idle = [k for k in self._servers if not self._users.get(k)]
            servers = [self._servers.pop(k) for k in idle]
        for s in servers:
            s.stop()

    def is_live(self, model_dir: Path, opts: VLLMOptions | None = None) -> bool:
        """Whether `use` would find this model's server already running (no start)."""
        key = (Path(model_dir).resolve(), (opts or self.settings.vllm).model_dump_json())
        with self._lock:
            server = self._servers.get(key)
            return server is not None and server.alive()

    def running(self) -> list[dict]:
        with self._lock:
            return [
                {"model": str(k[0]), "url": s.base_url, "alive": s.alive()} for k, s in self._servers.items()
            ]

    def stop_all(self) -> None:
        with self._lock:
            servers, self._servers = list(self._servers.values()), {}
        for s in servers:
            s.stop()
