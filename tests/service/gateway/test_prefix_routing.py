"""Replica choice by prompt prefix: requests that share a system prompt and conversation go to one
replica (its vLLM prefix cache), different conversations spread, and load still wins past a bound."""

from __future__ import annotations

from service.gateway.proxy import prefix_of
from service.gateway.upstreams import PREFIX_SLACK, Pool, Upstream


def pool(n: int) -> Pool:
    return Pool(1, "m", None, [Upstream(f"http://127.0.0.1:{9000 + i}", "k", "m") for i in range(n)])


def test_what_a_prefix_is() -> None:
    system = {"role": "system", "content": "Be brief."}
    q1, q2 = {"role": "user", "content": "Why?"}, {"role": "user", "content": "How?"}
    a = {"role": "assistant", "content": "Because."}
    assert prefix_of({"messages": [system, q1]}) != prefix_of({"messages": [system, q2]})  # one turn: all
    assert prefix_of({"messages": [system, q1, a, q2]}) == prefix_of({"messages": [system, q1, a, q1]})
    assert prefix_of({"prompt": "x" * 600}) == "x" * 512 and prefix_of({}) is None


def test_a_shared_prefix_stays_on_one_replica_unless_it_is_too_busy() -> None:
    p = pool(2)
    homes = set()
    for _ in range(PREFIX_SLACK + 1):
        u = p.acquire(prefix="conversation-1")
        assert u is not None
        homes.add(u.url)
    assert len(homes) == 1  # busier by PREFIX_SLACK than the other, and still chosen
    other = p.acquire(prefix="conversation-1")  # one more would pass the bound: the other replica
    assert other is not None and other.url not in homes
    idle, spread = pool(2), set()
    for i in range(2, 40):  # each released at once: only the hash decides
        u = idle.acquire(prefix=f"conversation-{i}")
        assert u is not None and idle.acquire(prefix=f"conversation-{i}") is u  # the same one again
        spread.add(u.url)
        idle.release(u)
        idle.release(u)
    assert len(spread) == 2  # different conversations use both replicas
    home = next(u for u in p.upstreams if u.url in homes)
    home.healthy = False
    moved = p.acquire(prefix="conversation-1")
    assert moved is not None and moved.url != home.url  # a replica that is down is never chosen
