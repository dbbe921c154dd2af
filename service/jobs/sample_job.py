"""Job kind `sample`: serve each model with vLLM, sample K responses per prompt and system
prompt, then build ranking tasks. Rerunning fills in only what is missing.

Used by `rankloop sample` (a job in the service when one runs, else in the command's own
process) and `rankloop demo`. Models are served one at a time through the engine
supervisor, so only one checkpoint's weights and KV cache are in memory at once; the
service keeps the last server for the next job. Cancelling stops between responses and
keeps every stored sample.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from service.core.enums import PromptSource
from service.core.errors import UserError
from service.core.registry import find_or_register
from service.core.settings import Settings, VLLMOptions
from service.core.store import Store
from service.data.prompts import latest_system_prompts
from service.data.tasks import MAX_CANDIDATES, MIN_CANDIDATES, build_tasks
from service.engine.sampler import Endpoint, SamplingCancelled, SamplingParams, sample
from service.engine.server import check_model_dir
from service.jobs.running import JobCancelled, RunningJob, check_job_paths


class SampleJobConfig(BaseModel):
    """What `rankloop sample` asks for."""

    model_config = ConfigDict(extra="forbid")

    models: list[Path] = Field(
        min_length=1, description="Hugging Face model directories, served one at a time"
    )
    k: int = Field(4, description="samples per prompt and system prompt, 1..16")
    system_prompts: list[str] | None = Field(
        None, description="system prompt names (default all; 'none': no system prompt)"
    )
    params: SamplingParams = Field(
        default_factory=SamplingParams, description="how responses are sampled (max_tokens, temperature, ...)"
    )
    task_size: int | None = Field(None, description="candidates per ranking task (default K, within 2..8)")
    mix: list[str] | None = Field(
        None, description="weight of a system prompt among a task's candidates, NAME=WEIGHT (default equal)"
    )
    rankings_per_task: int = Field(1, description="rankings each task needs (overlap)")
    seed: int = Field(0, description="seed for task composition and order")
    concurrency: int = Field(256, ge=1, le=4096, description="requests in flight at once")
    vllm: VLLMOptions | None = Field(
        None, description="how to start the vLLM servers (default: the settings')"
    )


def parse_mix(items: list[str] | None, names: list[str]) -> dict[str, float]:
    """`["brief=2", "detailed=1"]` -> weights per system prompt name (unnamed ones get 1)."""
    weights = dict.fromkeys(names, 1.0)
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or name not in weights:
            raise UserError(f"--mix {item!r}: expected NAME=WEIGHT with NAME one of {', '.join(names)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise UserError(f"--mix {item!r}: weight {value!r} is not a number") from None
        if weights[name] < 0:
            raise UserError(f"--mix {item!r}: weights must be >= 0")
    if not any(weights.values()):
        raise UserError("--mix gives every system prompt weight 0; at least one must be positive")
    return weights


def prepare(store: Store, settings: Settings, cfg: SampleJobConfig) -> SampleJobConfig:
    """Every check that can fail before anything is stored."""
    check_job_paths(store, settings, cfg)
    if not 1 <= cfg.k <= 16:
        raise UserError(f"--k must be between 1 and 16, got {cfg.k}")
    if cfg.rankings_per_task < 1:
        raise UserError(f"--rankings-per-task must be at least 1, got {cfg.rankings_per_task}")
    system_prompts = latest_system_prompts(store, cfg.system_prompts)
    if not system_prompts:
        raise UserError(
            "no system prompts stored; add some with `rankloop system-prompts add FILE` "
            "or pass --system-prompt none"
        )
    if not store.scalar("SELECT count(*) FROM prompts WHERE source <> ?", [PromptSource.EVAL]):
        raise UserError("no prompts stored; add some with `rankloop prompts add FILE`")
    size = cfg.task_size or min(max(cfg.k, MIN_CANDIDATES), MAX_CANDIDATES)
    if not MIN_CANDIDATES <= size <= MAX_CANDIDATES:
        raise UserError(f"--task-size must be between {MIN_CANDIDATES} and {MAX_CANDIDATES}, got {size}")
    parse_mix(cfg.mix, [s["name"] for s in system_prompts])
    models = [Path(m).resolve() for m in cfg.models]
    for d in models:
        check_model_dir(d)
    return cfg.model_copy(update={"models": models, "task_size": size})


def _progress(job: RunningJob, model: int, n_models: int, done: int, total: int) -> None:
    """Progress over all models: model `model` of `n_models` has `done` of its `total` responses."""
    job.progress(model * total + done, n_models * total)


def run(job: RunningJob) -> dict:
    cfg = job.config
    assert isinstance(cfg, SampleJobConfig) and cfg.task_size is not None, cfg  # `prepare` set task_size
    store = job.store
    system_prompts = latest_system_prompts(store, cfg.system_prompts)
    # Prompts stored for evaluation stay held out: training data is never sampled from them.
    prompts = store.query(
        "SELECT id, text, messages FROM prompts WHERE source <> ? ORDER BY id", [PromptSource.EVAL]
    )
    weights_by_name = parse_mix(cfg.mix, [s["name"] for s in system_prompts])
    per_model, model_ids = {}, []
    n_models = len(cfg.models)
    for i, model_dir in enumerate(cfg.models):
        with job.vllm_servers(model_dir, cfg.vllm) as servers:
            # Registered only once vLLM has loaded it: a directory that does not load leaves no row.
            model_id = find_or_register(store, model_dir)
            model_ids.append(model_id)
            try:
                report = sample(
                    store,
                    [Endpoint(model_id, s.served_name, s.base_url, s.api_key) for s in servers],
                    prompts,
                    system_prompts,
                    cfg.k,
                    cfg.params,
                    progress=False,
                    concurrency=cfg.concurrency,
                    on_progress=partial(_progress, job, i, n_models),
                    should_stop=job.cancelled,
                )
            except SamplingCancelled as e:
                raise JobCancelled(str(e)) from None
        per_model[servers[0].served_name] = {
            "requests_per_server": report.requests_per_server,
            "requested": report.requested,
            "already_stored": report.already_stored,
            "generated": report.generated,
            "completion_tokens": report.completion_tokens,
            "seconds": round(report.seconds, 3),
            "tokens_per_s": round(report.tokens_per_s, 1),
        }
    weights = {(s["id"], m): weights_by_name[s["name"]] for s in system_prompts for m in model_ids}
    # The tasks of one run form a batch for agreement statistics.
    batch = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} job {job.job_id} k={cfg.k}"
    task_ids = build_tasks(
        store,
        [p["id"] for p in prompts],
        weights,
        cfg.params.key(),
        cfg.task_size,
        cfg.rankings_per_task,
        cfg.seed,
        batch,
    )
    return {"per_model": per_model, "tasks": len(task_ids), "batch": batch}
