"""What a gateway routes to: the deployed pool (`current`), its canary and weight, the fallback, the
system-prompt experiment, and a health check of every replica each second.

The service's `Deployer` (service/gateway/deploy.py) is a `Routes` that also starts, switches and
restarts servers. A stateless gateway replica (service/gateway/mirror.py) never starts its Deployer: it
copies the service's routes (`adopt`) and only checks health (it restarts no server it did not start).
"""

from __future__ import annotations

import threading
import zlib

import httpx

from service.gateway.upstreams import Pool, Upstream


def bucket(sticky: str) -> float:
    """A stable position in [0, 100) for sticky canary and arm assignment."""
    return zlib.crc32(sticky.encode()) % 10_000 / 100


class Routes:
    def __init__(self) -> None:
        self.primary: Pool | None = None
        self.canary: Pool | None = None
        self.fallback: Pool | None = None  # serves `current` when every replica of the chosen pool fails
        self.canary_pct = 0.0
        self.arms: dict[str, float] | None = None
        self.error: str | None = None  # why the recorded deployment is not serving
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None

    def pools(self) -> list[Pool]:
        return [p for p in (self.primary, self.canary, self.fallback) if p is not None]

    # -- serving ------------------------------------------------------------------

    def choose(self, route: str, sticky: str) -> Pool | None:
        """The pool for a request: `current` splits between primary and canary by weight, sticky per
        user or key; a model's own name reaches that model if it is deployed."""
        primary, canary, pct = self.primary, self.canary, self.canary_pct
        if route == "current":
            if canary is not None and bucket(sticky) < pct:
                return canary
            return primary
        for pool in (primary, canary):
            if pool is not None and route == pool.name:
                return pool
        return None

    def fallback_for(self, pool: Pool) -> Pool | None:
        """Where a request goes when no replica of `pool` answers (None: nowhere)."""
        fallback = self.fallback
        return fallback if fallback is not None and fallback is not pool and not fallback.retired else None

    def arm(self, sticky: str) -> str | None:
        """The system prompt a route's experiment gives this user (None: no experiment)."""
        arms = self.arms
        if not arms:
            return None
        point, total = bucket(sticky + "/arm") / 100 * sum(arms.values()), 0.0
        for name, weight in arms.items():
            total += weight
            if point < total:
                return name
        return next(iter(arms))

    def state(self) -> dict:
        return {
            "current": self.primary.state() if self.primary else None,
            "canary": {**self.canary.state(), "percent": self.canary_pct} if self.canary else None,
            "fallback": self.fallback.state() if self.fallback else None,
            "system_prompts": self.arms,
            "error": self.error,
        }

    def spec(self) -> dict:
        """The routes as a gateway replica needs them: each pool's replicas with their keys (a secret:
        only for the admin-authenticated sync, never for `state()`)."""

        def pool(p: Pool | None) -> dict | None:
            if p is None:
                return None
            ups = [{"url": u.url, "key": u.key, "served_name": u.served_name} for u in p.upstreams]
            return {"model_id": p.model_id, "name": p.name, "upstreams": ups}

        return {
            "primary": pool(self.primary),
            "canary": pool(self.canary),
            "fallback": pool(self.fallback),
            "canary_pct": self.canary_pct,
            "arms": self.arms,
            "error": self.error,
        }

    def adopt(self, spec: dict) -> None:
        """Serve what `spec()` of another process said. A pool whose model and replicas are unchanged is
        kept (with its requests in flight and health); any other is built anew."""
        current = self.pools()

        def pool(want: dict | None) -> Pool | None:
            if want is None:
                return None
            ups = [(u["url"], u["key"], u["served_name"]) for u in want["upstreams"]]
            for p in current:
                if (
                    p.model_id == want["model_id"]
                    and [(u.url, u.key, u.served_name) for u in p.upstreams] == ups
                ):
                    return p
            return Pool(want["model_id"], want["name"], None, [Upstream(*u) for u in ups])

        self.primary, self.canary, self.fallback = (pool(spec[r]) for r in ("primary", "canary", "fallback"))
        self.canary_pct, self.arms, self.error = spec["canary_pct"], spec["arms"], spec["error"]

    # -- health -------------------------------------------------------------------

    def supervise(self) -> None:
        self._supervisor = threading.Thread(target=self._supervise, daemon=True, name="route-supervisor")
        self._supervisor.start()

    def stop_supervising(self) -> None:
        self._stop.set()

    def _supervise(self) -> None:
        """Every second: a replica whose process died or whose /health fails leaves the rotation (and
        `_restart` may start it again); one that answers again comes back."""
        with httpx.Client(timeout=2.0) as http:
            while not self._stop.wait(1.0):
                for pool in self.pools():
                    if pool.retired:
                        continue
                    try:
                        for u in list(pool.upstreams):
                            try:
                                ok = u.alive() and http.get(f"{u.url}/health").status_code == 200
                            except httpx.HTTPError:
                                ok = False
                            u.healthy = ok
                            if ok:
                                u.failures = 0
                            else:
                                self._restart(pool, u)
                    except Exception as e:  # noqa: BLE001 - the supervisor must outlive any one failure
                        self.error = f"supervising {pool.name}: {e}"

    def _restart(self, pool: Pool, u: Upstream) -> None:
        """What to do about a replica that is down (here: nothing; it is out of rotation until it answers)."""
