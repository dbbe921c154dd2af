"""The servers behind a route: vLLM servers the service starts (each on loopback with a random
key of its own) or vLLM endpoints elsewhere (`--endpoint URL` with their key).

A pool holds one model's replicas and balances by fewest requests in flight among the healthy
ones, or by the request's prompt prefix (`acquire`). The supervisor (service/gateway/deploy.py) marks a replica unhealthy when its process
dies or /health stops answering, restarts it with backoff, and puts it back when it answers.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.core.settings import VLLMOptions
from service.engine.server import EngineStartError, VLLMServer, start_server

# Requests in flight a prefix's replica may have beyond the least busy one before a request goes there
# instead: the cache is worth a short wait, not a queue.
PREFIX_SLACK = 4


@dataclass
class Upstream:
    url: str  # http://host:port, without /v1
    key: str
    served_name: str
    server: VLLMServer | None = None  # None: an endpoint the service does not start
    healthy: bool = True
    in_flight: int = 0
    failures: int = 0  # restarts in a row without becoming healthy
    next_restart: float = 0.0

    def alive(self) -> bool:
        return self.server is None or self.server.alive()


@dataclass
class Pool:
    """One model's replicas."""

    model_id: int
    name: str  # the model name clients see
    path: str | None
    upstreams: list[Upstream]
    opts: VLLMOptions | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    retired: bool = False  # replaced: the supervisor no longer restarts its replicas

    def acquire(self, skip: set[int] | None = None, prefix: str | None = None) -> Upstream | None:
        """A healthy replica (not one in `skip`), counted as busy: with a `prefix` (the system prompt and
        conversation so far), the one that prefix hashes to, so requests that share it meet vLLM's
        prefix cache, unless that one is busier than the least busy by more than PREFIX_SLACK; else the
        one with fewest requests in flight."""
        with self.lock:
            ready = [u for u in self.upstreams if u.healthy and id(u) not in (skip or set())]
            if not ready:
                return None
            best = min(ready, key=lambda u: u.in_flight)
            if prefix is not None and len(ready) > 1:
                # Rendezvous hashing: a replica that leaves moves only its own prefixes elsewhere.
                home = max(
                    ready, key=lambda u: hashlib.blake2b(f"{u.url}|{prefix}".encode(), digest_size=8).digest()
                )
                if home.in_flight <= best.in_flight + PREFIX_SLACK:
                    best = home
            best.in_flight += 1
            return best

    def release(self, upstream: Upstream) -> None:
        with self.lock:
            upstream.in_flight -= 1

    def in_flight(self) -> int:
        with self.lock:
            return sum(u.in_flight for u in self.upstreams)

    def drain(self, timeout_s: float) -> bool:
        """Wait until no request is in flight (True) or `timeout_s` passed (False)."""
        deadline = time.monotonic() + timeout_s
        while self.in_flight() and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self.in_flight()

    def stop(self) -> None:
        with self.lock:
            self.retired = True
        for u in self.upstreams:
            if u.server is not None:
                u.server.stop()

    def state(self) -> dict:
        with self.lock:
            return {
                "model_id": self.model_id,
                "model": self.name,
                "replicas": [
                    {
                        "url": u.url,
                        "healthy": u.healthy,
                        "in_flight": u.in_flight,
                        "managed": u.server is not None,
                    }
                    for u in self.upstreams
                ],
            }


def start_replica(
    path: str,
    name: str,
    opts: VLLMOptions,
    log_dir: Path,
    on_start: Callable[[VLLMServer], None] | None = None,
    host: str = "127.0.0.1",
) -> Upstream:
    """A vLLM server for the checkpoint on `host` (loopback unless `gateway.replica_host` says otherwise)
    with its own random key, checked with one real generation (a server can answer /health and still
    fail to generate)."""
    key = secrets.token_urlsafe(24)
    server = start_server(path, opts, log_dir, host=host, served_name=name, api_key=key, on_start=on_start)
    upstream = Upstream(f"http://{host}:{server.port}", key, name, server)
    try:
        check_generates(upstream)
    except BaseException:
        server.stop(grace_s=5)
        raise
    return upstream


def check_generates(upstream: Upstream, timeout_s: float = 120.0) -> None:
    try:
        r = httpx.post(
            f"{upstream.url}/v1/completions",
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {upstream.key}"},
            json={"model": upstream.served_name, "prompt": "Hello", "max_tokens": 1},
        )
    except httpx.HTTPError as e:
        raise EngineStartError(f"{upstream.url} did not answer a test generation: {e}") from None
    if r.status_code != 200:
        raise EngineStartError(f"{upstream.url} failed a test generation ({r.status_code}): {r.text[:300]}")


def endpoint_upstream(url: str, key: str | None, name: str) -> Upstream:
    """A vLLM server elsewhere: its model list must answer with the key and name the model."""
    base = url.rstrip("/").removesuffix("/v1")
    try:
        r = httpx.get(
            f"{base}/v1/models", timeout=10, headers={"Authorization": f"Bearer {key}"} if key else {}
        )
    except httpx.HTTPError as e:
        raise EngineStartError(f"the endpoint {url} does not answer: {e}") from None
    if r.status_code != 200:
        raise EngineStartError(f"the endpoint {url} refused /v1/models ({r.status_code}): {r.text[:200]}")
    served = [m["id"] for m in r.json().get("data", [])]
    if not served:
        raise EngineStartError(f"the endpoint {url} serves no model")
    upstream = Upstream(base, key or "", name if name in served else served[0])
    check_generates(upstream)
    return upstream
