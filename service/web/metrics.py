"""`GET /metrics`: the service's Prometheus metrics, and each vLLM replica's own, in one scrape.

Behind the admin key unless `metrics.public` is set; `metrics.listen` serves the same registry on a
separate address with no key (for a scraper on a private network). Besides the process's counters
and histograms (service/core/metrics.py), a scrape reads:

* the queue: regular tasks open, leased and completed (the queue's book, no query);
* jobs by kind and state (one query);
* each replica of the deployed models: up, requests in flight, and its `vllm:*` metrics with
  `model` and `replica` labels added (fetched from every replica at once at scrape time; each gets 2 s
  to connect and 2 s between reads).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
from fastapi import APIRouter, Header
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from annotator.queue_book import book_for
from service.core import metrics
from service.core.store import Store
from service.gateway.router import Gateway
from service.gateway.upstreams import Pool

REPLICA_TIMEOUT_S = 2.0


class ServiceState(Collector):
    """What the database and the queue hold now: tasks by state, jobs by kind and state."""

    def __init__(self, store: Store):
        self.store = store

    def collect(self) -> Iterator[Metric]:
        tasks = GaugeMetricFamily(
            "rankloop_tasks", "Regular annotation tasks by state: open, leased, completed", labels=["state"]
        )
        for state, n in book_for(self.store).task_counts(datetime.now(UTC)).items():
            tasks.add_metric([state], n)
        yield tasks
        jobs = GaugeMetricFamily("rankloop_jobs", "Jobs by kind and state", labels=["kind", "state"])
        for row in self.store.query("SELECT kind, status, count(*) AS n FROM jobs GROUP BY ALL ORDER BY ALL"):
            jobs.add_metric([row["kind"], row["status"]], row["n"])
        yield jobs


class Replicas(Collector):
    """The deployed models' replicas: health and load from the gateway, and their own vLLM metrics."""

    def __init__(self, gateway: Gateway, scrape: bool = True):
        self.gateway = gateway
        self.scrape = scrape  # a gateway replica leaves the model servers' own metrics to the service

    def pools(self) -> list[Pool]:
        return self.gateway.deployer.pools()

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "rankloop_gateway_replica_up", "1 when the replica is in rotation", labels=["model", "replica"]
        )
        busy = GaugeMetricFamily(
            "rankloop_gateway_replica_in_flight", "Requests in flight", labels=["model", "replica"]
        )
        merged: dict[str, Metric] = {}
        asked = []  # (labels, url, key) of every healthy replica, scraped at once: one slow one costs 2 s, not N
        for pool in self.pools():
            for i, u in enumerate(list(pool.upstreams)):
                up.add_metric([pool.name, str(i)], float(u.healthy))
                busy.add_metric([pool.name, str(i)], u.in_flight)
                if u.healthy and self.scrape:
                    asked.append(({"model": pool.name, "replica": str(i)}, u.url, u.key))
        if asked:
            with (
                httpx.Client(timeout=REPLICA_TIMEOUT_S) as http,
                ThreadPoolExecutor(min(len(asked), 16)) as pool_,
            ):
                scraped = list(pool_.map(lambda a: _scrape(http, a[1], a[2]), asked))
            for (labels, _, _), families in zip(asked, scraped, strict=True):
                _merge(merged, families, labels)
        yield up
        yield busy
        yield from merged.values()


def _scrape(http: httpx.Client, url: str, key: str) -> list[Metric]:
    """A replica's own metrics; nothing when it does not answer in time (it shows as up=0 soon) or
    answers something that is not Prometheus text (an endpoint elsewhere may): one bad replica must not
    cost the scrape everything else."""
    try:
        r = http.get(f"{url}/metrics", headers={"Authorization": f"Bearer {key}"})
        return list(text_string_to_metric_families(r.text)) if r.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return []


def _merge(into: dict[str, Metric], families: Iterable[Metric], labels: dict[str, str]) -> None:
    """One family per name across replicas (a scrape may not repeat a family), each sample labelled."""
    for fam in families:
        out = into.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type, fam.unit))
        for s in fam.samples:
            out.add_sample(s.name, {**s.labels, **labels}, s.value, s.timestamp)


def registry_for(store: Store, gateway: Gateway) -> CollectorRegistry:
    """The app's registry: the process's metrics and what this app's state says at scrape time."""
    registry = CollectorRegistry(auto_describe=False)
    for metric in metrics.ALL:
        registry.register(metric)
    registry.register(ServiceState(store))
    registry.register(Replicas(gateway))
    return registry


def build_router(registry: CollectorRegistry, public: bool, require_admin) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    async def scrape(authorization: str | None = Header(None)) -> Response:
        if not public:
            require_admin(authorization)
        # The classic text format (0.0.4), which every Prometheus reads.
        body = await run_in_threadpool(generate_latest, registry)  # reads the database and the replicas
        return Response(body, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return router
