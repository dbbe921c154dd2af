"""Sample K responses per prompt x system prompt from a vLLM server and store every one.

Requests go out concurrently, one chat completion with n = K per prompt and system
prompt, so that vLLM batches them and renders and prefills each prompt once; each finished sample is stored with its prompt, system prompt version, model,
sampling parameters, text, token counts, finish reason and latency. Results are
committed in small batches as they arrive, so a server that dies mid-run loses only
what was in flight, and a rerun fills in only the missing samples (the identity of a
sample is prompt, system prompt, model, parameters and its index 0..K-1).
Ranking tasks are then built from the new samples: see `service.data.tasks`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import pyarrow as pa
from opentelemetry.propagate import inject
from opentelemetry.trace import SpanKind
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from reward.conversation import from_row
from service.core.store import Store
from service.core.tracing import TRACER

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletionMessageParam

FLUSH_EVERY = 32


class SamplingParams(BaseModel):
    """What the sampler asks vLLM for; stored with every sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_tokens: int = Field(64, ge=1, le=8192, description="most tokens per response")
    temperature: float = Field(1.0, ge=0, le=5, description="sampling temperature (0 = greedy)")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling mass")
    min_tokens: int = Field(
        0, ge=0, description="fewest tokens before the end-of-text token may end a response"
    )

    def key(self) -> str:
        """A short stable hash: part of a sample's identity."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Endpoint:
    """A served model: where to reach it and which registry row it is."""

    model_id: int
    served_name: str
    base_url: str
    api_key: str = "rankloop"  # a server on another machine requires its own key; a local one takes any


class SamplingError(RuntimeError):
    """Sampling stopped part-way; what was stored stays valid and a rerun completes it."""


class SamplingCancelled(SamplingError):
    """Sampling was asked to stop; what was stored stays valid and a rerun completes it."""


@dataclass
class SampleReport:
    requested: int = 0
    already_stored: int = 0
    generated: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    sample_ids: list[int] = field(default_factory=list)
    requests_per_server: list[int] = field(default_factory=list)  # one count per replica, in order

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class _Job:
    """One request: the missing sample indices of one prompt under one system prompt."""

    prompt_id: int
    prompt: tuple[tuple[str, str], ...]  # the conversation's (role, content) turns
    system_prompt_id: int
    system_text: str
    indices: tuple[int, ...]


def _missing_jobs(
    store: Store, prompts: list[dict], system_prompts: list[dict], model_id: int, k: int, params_key: str
) -> tuple[list[_Job], int]:
    """A request per (prompt, system prompt) still missing samples, and how many samples are stored."""
    have = {
        (r["prompt_id"], r["system_prompt_id"], r["sample_index"])
        for r in store.query(
            "SELECT prompt_id, system_prompt_id, sample_index FROM samples WHERE model_id = ? AND params_hash = ?",
            [model_id, params_key],
        )
    }
    jobs, existing = [], 0
    for p in prompts:
        for sp in system_prompts:
            missing = tuple(i for i in range(k) if (p["id"], sp["id"], i) not in have)
            existing += k - len(missing)
            if missing:
                turns = tuple((m["role"], m["content"]) for m in from_row(p["text"], p.get("messages")))
                jobs.append(_Job(p["id"], turns, sp["id"], sp["text"], missing))
    return jobs, existing


def missing_samples(
    store: Store,
    prompts: list[dict],
    system_prompts: list[dict],
    model_id: int,
    k: int,
    params: SamplingParams,
) -> int:
    """How many of the k samples per prompt x system prompt this model still lacks (0: no server needed)."""
    jobs, _ = _missing_jobs(store, prompts, system_prompts, model_id, k, params.key())
    return sum(len(j.indices) for j in jobs)


def messages(system_text: str, prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    """The chat a sample answers: the system prompt first (none for the empty 'none' arm), then the
    whole conversation (a string is a one-message one)."""
    conversation = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return ([{"role": "system", "content": system_text}] if system_text else []) + conversation


def _store_batch(store: Store, rows: list[dict], model_id: int, params: SamplingParams) -> list[int]:
    if not rows:
        return []
    table = pa.Table.from_pylist(rows)
    n = table.num_rows
    table = table.append_column("model_id", pa.array([model_id] * n, pa.int64()))
    table = table.append_column("params", pa.array([params.model_dump_json()] * n))
    table = table.append_column("params_hash", pa.array([params.key()] * n))
    with store.write() as cur:  # two runs filling the same samples at once (two evaluations) keep the first
        return store.insert_arrow(cur, "samples", table, skip_existing=True)


async def _ask(client, endpoint: Endpoint, job: _Job, params: SamplingParams, headers: dict[str, str]):
    """One request with n = the missing samples: vLLM renders and prefills the prompt once."""
    return await client.chat.completions.create(
        model=endpoint.served_name,
        messages=cast(  # OpenAI's per-role TypedDicts; these dicts carry exactly role and content
            "list[ChatCompletionMessageParam]",
            messages(job.system_text, [{"role": r, "content": c} for r, c in job.prompt]),
        ),
        n=len(job.indices),
        max_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        extra_body={"min_tokens": params.min_tokens, "return_token_ids": True},
        extra_headers=headers,
    )


async def _run(
    jobs: list[_Job],
    endpoints: list[Endpoint],
    params: SamplingParams,
    concurrency: int,
    store: Store,
    report: SampleReport,
    progress: bool,
    request_timeout_s: float,
    on_progress: Callable[[int, int], None] | None,
    should_stop: Callable[[], bool] | None,
) -> None:
    from openai import AsyncOpenAI

    endpoint = endpoints[0]  # replicas serve one model under one name; they differ in where they are
    clients = [
        AsyncOpenAI(base_url=e.base_url, api_key=e.api_key, max_retries=0, timeout=request_timeout_s)
        for e in endpoints
    ]
    sem = asyncio.Semaphore(concurrency)
    buffer: list[dict] = []
    total = sum(len(j.indices) for j in jobs)
    bar = tqdm(total=total, desc=f"sampling {endpoint.served_name}", unit="sample", disable=not progress)

    def flush() -> None:
        report.sample_ids += _store_batch(store, buffer, endpoint.model_id, params)
        buffer.clear()

    report.requests_per_server = [0] * len(clients)

    async def one(job: _Job, server: int) -> None:
        client = clients[server]
        async with sem:
            t0 = time.perf_counter()
            with TRACER.start_as_current_span(
                f"chat {endpoint.served_name}",
                kind=SpanKind.CLIENT,
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": endpoint.served_name,
                    "gen_ai.request.choice.count": len(job.indices),
                },
            ):
                headers: dict[str, str] = {}
                inject(headers)  # vLLM receives the traceparent (nothing when tracing is off)
                resp = await _ask(client, endpoint, job, params, headers)
            latency_ms = (time.perf_counter() - t0) * 1000
        report.requests_per_server[server] += 1
        prompt_tokens = resp.usage.prompt_tokens if resp.usage else None
        for index, choice in zip(job.indices, sorted(resp.choices, key=lambda c: c.index), strict=True):
            token_ids = getattr(choice, "token_ids", None)  # vLLM's per-choice ids, its stop token included
            n_tokens = len(token_ids or [])
            buffer.append(
                {
                    "prompt_id": job.prompt_id,
                    "system_prompt_id": job.system_prompt_id,
                    "sample_index": index,
                    "text": choice.message.content or "",
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": n_tokens,
                    "finish_reason": choice.finish_reason,
                    "latency_ms": latency_ms,
                    "token_ids": list(token_ids) if token_ids else None,
                }
            )
            report.generated += 1
            report.completion_tokens += n_tokens
        bar.update(len(job.indices))
        if on_progress:
            on_progress(report.generated, total)
        if len(buffer) >= FLUSH_EVERY:
            flush()

    async def watch() -> None:
        # Cancellation is polled, so a stop request ends even a run whose requests are all in flight.
        while not (should_stop and should_stop()):
            await asyncio.sleep(0.2)
        raise SamplingCancelled("cancelled")

    # Requests dealt in turn among the replicas: one request is one prompt under one system prompt, so
    # each costs about the same.
    tasks = [asyncio.create_task(one(j, i % len(clients))) for i, j in enumerate(jobs)]
    watcher = asyncio.create_task(watch()) if should_stop and tasks else None
    try:
        for fut in asyncio.as_completed(tasks + ([watcher] if watcher else [])):
            await fut  # the first failure (or a stop request) stops the run
            if all(t.done() for t in tasks):
                break
    except Exception as e:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        flush()
        if isinstance(e, SamplingCancelled):
            raise SamplingCancelled(
                f"sampling from {endpoint.served_name} was cancelled after {report.generated} of {total} samples; "
                "they are stored, and running the same sampling again generates only the missing ones."
            ) from None
        where = ", ".join(e.base_url for e in endpoints)
        raise SamplingError(
            f"sampling from {endpoint.served_name} at {where} failed after {report.generated} of "
            f"{sum(len(j.indices) for j in jobs)} samples ({type(e).__name__}: {e}). The {report.generated} finished samples are stored; "
            "run the same command again to generate only the missing ones."
        ) from e
    finally:
        if watcher:
            watcher.cancel()
        bar.close()
        for client in clients:
            await client.close()
    flush()


def sample(
    store: Store,
    endpoint: Endpoint | list[Endpoint],
    prompts: list[dict],
    system_prompts: list[dict],
    k: int,
    params: SamplingParams,
    *,
    concurrency: int = 256,
    progress: bool = True,
    request_timeout_s: float = 600.0,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SampleReport:
    """Fill in the k samples of every prompt x system prompt for one served model (on one server, or
    dealt among the data-parallel replicas of a list)."""
    if not 1 <= k <= 16:
        raise ValueError(f"k must be between 1 and 16, got {k}")
    endpoints = endpoint if isinstance(endpoint, list) else [endpoint]
    endpoint = endpoints[0]
    jobs, existing = _missing_jobs(store, prompts, system_prompts, endpoint.model_id, k, params.key())
    report = SampleReport(requested=sum(len(j.indices) for j in jobs) + existing, already_stored=existing)
    t0 = time.perf_counter()
    span = TRACER.start_as_current_span(
        "sample",
        attributes={"gen_ai.request.model": endpoint.served_name, "rankloop.samples": report.requested},
    )
    with span:  # the requests' spans are its children (asyncio.run copies the current context)
        asyncio.run(
            _run(
                jobs,
                endpoints,
                params,
                concurrency,
                store,
                report,
                progress,
                request_timeout_s,
                on_progress,
                should_stop,
            )
        )
    report.seconds = time.perf_counter() - t0
    return report
