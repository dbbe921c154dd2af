"""Deployments: which model serves the route `current`, blue/green switches, canaries, rollback,
and the supervisor that keeps the servers up.

A deploy starts the new model's replicas (or checks an endpoint elsewhere), waits for /health
and one real generation each, then switches the route in one step; requests already sent to
the old servers finish (the old pool is drained) before those servers stop. If the new model
fails to start, the old one keeps serving and the error is returned. Every change is a row in
`deployments` (the newest active one is what serves), so a restarted service serves it again.

Run without a service (`rankloop deploy` on a stopped data directory), a deploy is checked
and recorded; `rankloop serve` starts it.
"""

from __future__ import annotations

import threading
import time

from service.core.errors import UserError
from service.core.registry import get_model
from service.core.settings import Settings
from service.core.store import Store
from service.engine.server import EngineStartError, VLLMServer
from service.gateway.deploy_records import current_deployment
from service.gateway.routes import Routes
from service.gateway.upstreams import Pool, Upstream, endpoint_upstream, start_replica

BACKOFF_S = (1, 2, 4, 8, 16, 30)


class Deployer(Routes):
    """The service's routes and the servers behind them."""

    def __init__(self, store: Store, settings: Settings):
        super().__init__()
        self.store, self.settings = store, settings
        self._change = threading.Lock()  # one deploy, promote or rollback at a time
        self._draining: dict[int, Pool] = {}  # replaced pools finishing their requests, by id()
        self._spawned: list[VLLMServer] = []  # every server started, from its first moment: none outlives us

    # -- starting and stopping ----------------------------------------------

    def start(self) -> None:
        """Serve the recorded deployment (in the background: the service answers meanwhile) and
        supervise the servers."""
        threading.Thread(target=self._restore, daemon=True, name="deploy-restore").start()
        self.supervise()

    def _restore(self) -> None:
        row = current_deployment(self.store)
        if row is None:
            return
        with self._change:
            try:
                self.primary = self._pool(
                    row["model_id"], row["replicas"], row["endpoint"], row["endpoint_key"]
                )
                if row["canary_model_id"] is not None:
                    self.canary = self._pool(row["canary_model_id"], row["canary_replicas"] or 1, None, None)
                    self.canary_pct = row["canary_pct"]
                if row.get("fallback_model_id") is not None:
                    self.fallback = self._pool(row["fallback_model_id"], 1, None, None)
                self.arms = row["system_prompts"]
            except (EngineStartError, UserError) as e:
                self.error = f"the recorded deployment {row['id']} did not start: {e}"

    def stop_all(self) -> None:
        self._stop.set()
        with self._change:  # a deploy in progress finishes first, so nothing starts after this
            pools = [
                p
                for p in (self.primary, self.canary, self.fallback, *self._draining.values())
                if p is not None
            ]
        for pool in pools:
            pool.stop()
        for server in list(self._spawned):  # e.g. one the supervisor is still starting
            if server.alive():
                server.stop(grace_s=5)

    @property
    def _host(self) -> str:
        return self.settings.gateway.replica_host

    def _pool(self, model_id: int, replicas: int, endpoint: str | None, endpoint_key: str | None) -> Pool:
        model = get_model(self.store, model_id)
        name = model["name"]
        if endpoint:
            return Pool(model_id, name, None, [endpoint_upstream(endpoint, endpoint_key, name)])
        opts = self.settings.vllm
        started = []
        try:
            for _ in range(replicas):
                started.append(
                    start_replica(
                        model["path"], name, opts, self.settings.paths.logs, self._spawned.append, self._host
                    )
                )
        except BaseException:
            for u in started:
                if u.server is not None:
                    u.server.stop(grace_s=5)
            raise
        return Pool(model_id, name, model["path"], started, opts)

    def _retire(self, pool: Pool | None) -> None:
        """Let requests already sent to `pool` finish, then stop its servers (in the background)."""
        if pool is None:
            return
        with pool.lock:
            pool.retired = True
        self._draining[id(pool)] = pool

        def run() -> None:
            pool.drain(self.settings.gateway.drain_timeout_s)
            pool.stop()
            self._draining.pop(id(pool), None)

        threading.Thread(target=run, daemon=True, name=f"drain-{pool.name}").start()

    # -- changes ----------------------------------------------------------------

    def deploy(
        self,
        model_id: int,
        canary_pct: float | None,
        replicas: int,
        endpoint: str | None,
        endpoint_key: str | None,
        arms: dict[str, float] | None,
        fallback: int | None = None,
    ) -> dict:
        """Switch to `model_id` (or add it as a canary). `fallback`: a model id that serves when every
        replica of the deployed model fails (the one serving now keeps its servers; another starts one)."""
        with self._change:
            new = self._pool(model_id, replicas, endpoint, endpoint_key)  # the old pool serves meanwhile
            old_primary, old_canary, old_fallback = self.primary, self.canary, self.fallback
            if canary_pct is not None:
                if self.primary is None:
                    new.stop()
                    raise UserError(
                        "nothing is deployed yet to split traffic with; deploy without --canary first"
                    )
                self.canary, self.canary_pct = new, canary_pct
                retired = [old_canary]
            else:
                try:
                    backup = self._fallback_pool(fallback)
                except BaseException:
                    new.stop()
                    raise
                self.primary, self.canary, self.canary_pct, self.fallback = new, None, 0.0, backup
                retired = [p for p in (old_primary, old_canary, old_fallback) if p is not backup]
            self.arms, self.error = arms, None
            for pool in retired:
                self._retire(pool)
        return self.state()

    def _fallback_pool(self, model_id: int | None) -> Pool | None:
        """The pool a deploy falls back to: one already serving that model, else a new one-replica pool."""
        if model_id is None:
            return None
        for pool in (self.primary, self.fallback, self.canary):
            if pool is not None and pool.model_id == model_id and pool.path is not None:
                return pool
        return self._pool(model_id, 1, None, None)

    def promote(self) -> dict:
        with self._change:
            if self.canary is None:
                raise UserError(
                    "there is no canary to promote; `rankloop deploy MODEL --canary PCT` starts one"
                )
            old, self.primary, self.canary, self.canary_pct = self.primary, self.canary, None, 0.0
            self._retire(old)
        return self.state()

    def drop_canary(self) -> None:
        with self._change:
            old, self.canary, self.canary_pct = self.canary, None, 0.0
            self._retire(old)

    def _restart(self, pool: Pool, u: Upstream) -> None:
        """A replica the service started whose process died: started again, with backoff."""
        if u.server is None or u.alive() or time.monotonic() < u.next_restart or self._stop.is_set():
            return
        if pool.path is None or pool.opts is None:  # an endpoint the service did not start
            return
        u.next_restart = time.monotonic() + BACKOFF_S[min(u.failures, len(BACKOFF_S) - 1)]
        u.failures += 1
        u.server.stop(grace_s=5)  # what is left of it (the engine's processes) goes first
        try:
            fresh = start_replica(
                pool.path, pool.name, pool.opts, self.settings.paths.logs, self._spawned.append, self._host
            )
        except EngineStartError as e:
            self.error = f"restarting a replica of {pool.name} failed ({u.failures} in a row): {e}"
            return
        with pool.lock:
            if not pool.retired and not self._stop.is_set():
                u.url, u.key, u.server, u.healthy, u.failures = fresh.url, fresh.key, fresh.server, True, 0
                return
        if fresh.server is not None:
            fresh.server.stop()  # the pool was replaced while this replica started
