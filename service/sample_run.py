"""One sampling run: serve each model with vLLM, sample, stop it, then build ranking tasks.

Used by `rankloop sample` and `rankloop demo`. Models are served one at a time so
only one checkpoint's weights and KV cache are in memory at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from service.config import Settings
from service.engine import check_model_dir, start_server
from service.prompts import latest_system_prompts
from service.registry import find_or_register
from service.sampler import Endpoint, SampleReport, SamplingParams, sample
from service.store import Store, StoreError
from service.tasks import MAX_CANDIDATES, MIN_CANDIDATES, build_tasks


@dataclass
class RunReport:
    per_model: dict[str, SampleReport] = field(default_factory=dict)
    task_ids: list[int] = field(default_factory=list)


def parse_mix(items: list[str] | None, names: list[str]) -> dict[str, float]:
    """`["brief=2", "detailed=1"]` -> weights per system prompt name (unnamed ones get 1)."""
    weights = dict.fromkeys(names, 1.0)
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep or name not in weights:
            raise StoreError(f"--mix {item!r}: expected NAME=WEIGHT with NAME one of {', '.join(names)}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise StoreError(f"--mix {item!r}: weight {value!r} is not a number") from None
        if weights[name] < 0:
            raise StoreError(f"--mix {item!r}: weights must be >= 0")
    if not any(weights.values()):
        raise StoreError("--mix gives every system prompt weight 0; at least one must be positive")
    return weights


def run_sampling(
    store: Store,
    settings: Settings,
    model_dirs: list[Path],
    k: int,
    params: SamplingParams,
    system_prompt_names: list[str] | None = None,
    *,
    task_size: int | None = None,
    mix: list[str] | None = None,
    required_rankings: int = 1,
    seed: int = 0,
    progress: bool = True,
) -> RunReport:
    """Sample every stored prompt under the chosen system prompts from each model, then build tasks."""
    if not 1 <= k <= 16:
        raise StoreError(f"--k must be between 1 and 16, got {k}")
    if required_rankings < 1:
        raise StoreError(f"--rankings-per-task must be at least 1, got {required_rankings}")
    system_prompts = latest_system_prompts(store, system_prompt_names)
    if not system_prompts:
        raise StoreError("no system prompts stored; add some with `rankloop system-prompts add FILE` "
                         "or pass --system-prompt none")
    prompts = store.query("SELECT id, text FROM prompts ORDER BY id")
    if not prompts:
        raise StoreError("no prompts stored; add some with `rankloop prompts add FILE`")
    size = task_size or min(max(k, MIN_CANDIDATES), MAX_CANDIDATES)
    if not MIN_CANDIDATES <= size <= MAX_CANDIDATES:
        raise StoreError(f"--task-size must be between {MIN_CANDIDATES} and {MAX_CANDIDATES}, got {size}")
    weights_by_name = parse_mix(mix, [s["name"] for s in system_prompts])
    for d in model_dirs:
        check_model_dir(Path(d))  # fail before anything is stored
    report = RunReport()
    model_ids = []
    for model_dir in model_dirs:
        server = start_server(model_dir, settings.vllm, settings.runs_dir)
        try:
            # Registered only once vLLM has loaded it: a directory that does not load leaves no row.
            model_id = find_or_register(store, model_dir)
            model_ids.append(model_id)
            report.per_model[server.served_name] = sample(
                store, Endpoint(model_id, server.served_name, server.base_url), prompts, system_prompts, k,
                params, progress=progress,
            )
        finally:
            server.stop()
    weights = {(s["id"], m): weights_by_name[s["name"]] for s in system_prompts for m in model_ids}
    batch = f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} k={k}"  # tasks of one run form a batch for agreement stats
    report.task_ids = build_tasks(
        store, [p["id"] for p in prompts], weights, params.key(), size, required_rankings, seed, batch
    )
    return report
