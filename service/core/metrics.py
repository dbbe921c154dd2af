"""The service's Prometheus metrics (prometheus_client), one set per process.

The metrics are made with no registry: each app registers them, beside the collectors that read
its own state at scrape time (service/web/metrics.py), in a registry of its own, so two apps in
one process (tests) never clash over a name. Label sets stay bounded: routes, deployed model
names, key names, roles, job kinds and states, HTTP statuses; never a prompt, a raw key or an id
a client chose.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram, disable_created_metrics

# A `_created` series per counter and histogram doubles a scrape for a timestamp nobody graphs.
disable_created_metrics()

# Seconds, from a cached answer to a long generation on a CPU engine.
LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Between two streamed chunks: about a token's time.
TOKEN_GAP = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
JOB = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)

GATEWAY_REQUESTS = Counter(
    "rankloop_gateway_requests",
    "Requests to /v1 by route, model (the deployed model that answered, or 'none') and HTTP status",
    ["route", "model", "status"],
    registry=None,
)
GATEWAY_LATENCY = Histogram(
    "rankloop_gateway_request_duration_seconds",
    "Time a /v1 request took: from its forwarding to the answer's last byte, or to its refusal",
    ["route", "model"],
    buckets=LATENCY,
    registry=None,
)
GATEWAY_TTFT = Histogram(
    "rankloop_gateway_time_to_first_token_seconds",
    "Streamed requests: time from forwarding to the first chunk relayed",
    ["model"],
    buckets=LATENCY,
    registry=None,
)
GATEWAY_TOKEN_GAP = Histogram(
    "rankloop_gateway_inter_token_latency_seconds",
    "Streamed requests: time between two chunks relayed (a chunk is usually one token)",
    ["model"],
    buckets=TOKEN_GAP,
    registry=None,
)
GATEWAY_TOKENS = Counter(
    "rankloop_gateway_tokens",
    "Tokens served, by API key name, model and kind (prompt or completion)",
    ["key", "model", "kind"],
    registry=None,
)
UPSTREAM_ERRORS = Counter(
    "rankloop_gateway_upstream_errors",
    "Failures talking to a model server: refused, closed, timeout, broken, failed, no_replica",
    ["model", "reason"],
    registry=None,
)
UPSTREAM_RETRIES = Counter(
    "rankloop_gateway_upstream_retries",
    "Requests sent again to another replica or connection (nothing had reached the model)",
    ["model"],
    registry=None,
)
FALLBACKS = Counter(
    "rankloop_gateway_fallbacks",
    "Requests the fallback model answered because no replica of the chosen one did",
    ["model", "fallback"],
    registry=None,
)
RATE_LIMITED = Counter(
    "rankloop_gateway_rate_limited",
    "Requests refused with 429, by key name and the limit reached (rpm, tpm)",
    ["key", "limit"],
    registry=None,
)

RANKINGS = Counter(
    "rankloop_rankings",
    "Rankings (and skips) stored through the queue, by annotator role",
    ["role"],
    registry=None,
)
SUBMIT_LATENCY = Histogram(
    "rankloop_submit_duration_seconds",
    "Time to validate a submission and make it durable (its group commit included)",
    buckets=LATENCY,
    registry=None,
)
LEASE_EXPIRIES = Counter(
    "rankloop_lease_expiries",
    "Leases that ran out unanswered (the task went back to the queue), counted when the annotator asks again",
    registry=None,
)
COMMIT_BATCH = Histogram(
    "rankloop_group_commit_batch_size",
    "Submissions stored per group commit",
    buckets=BATCH,
    registry=None,
)
COMMIT_LATENCY = Histogram(
    "rankloop_group_commit_duration_seconds",
    "Time one group commit held the database",
    buckets=LATENCY,
    registry=None,
)

PII_REMOVED = Counter(
    "rankloop_pii_removed",
    "Personal data taken out of served traffic on its way to annotation, by kind and where (prompts, votes)",
    ["kind", "source"],
    registry=None,
)

JOB_DURATION = Histogram(
    "rankloop_job_duration_seconds",
    "Jobs this process ran, from start to end, by kind and final state",
    ["kind", "state"],
    buckets=JOB,
    registry=None,
)

ALL = (
    GATEWAY_REQUESTS,
    GATEWAY_LATENCY,
    GATEWAY_TTFT,
    GATEWAY_TOKEN_GAP,
    GATEWAY_TOKENS,
    UPSTREAM_ERRORS,
    UPSTREAM_RETRIES,
    FALLBACKS,
    RATE_LIMITED,
    RANKINGS,
    SUBMIT_LATENCY,
    LEASE_EXPIRIES,
    COMMIT_BATCH,
    COMMIT_LATENCY,
    PII_REMOVED,
    JOB_DURATION,
)
