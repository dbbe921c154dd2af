"""Job kind `reward`: train a reward model from a snapshot in a child process, then judge it
at the promotion gate and register it.

The config is `reward.config.RewardTrainConfig`, filled from the data directory where a
field is unset (the newest snapshot, the newest fine-tuned or pretrained checkpoint, a fresh
output directory under models/) and validated before the job exists. Only a trainer that
exits cleanly and wrote its metrics registers a model; the gate (`promotion`) decides
whether it becomes active, and the model and the finished job are written in one transaction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reward.config import RewardTrainConfig
from reward.configfile import validate
from reward.snapshot_format import snapshot_file
from service.core.enums import ModelKind
from service.core.errors import UserError
from service.core.registry import register_trained
from service.core.settings import Settings
from service.core.store import Store
from service.jobs.promotion import reward_verdict
from service.jobs.running import RunningJob, check_training_config, training_defaults


def prepare(store: Store, settings: Settings, values: dict[str, Any], source: str) -> RewardTrainConfig:
    """The job's config: given values, then defaults from the data directory; validated."""
    values = training_defaults(store, settings, values, "reward", (ModelKind.SFT, ModelKind.PRETRAINED))
    cfg = validate(RewardTrainConfig, values, source)
    check_training_config(store, settings, cfg, "reward")
    try:
        snapshot_file(cfg.snapshot)
    except FileNotFoundError as e:
        raise UserError(str(e)) from None
    return cfg


def run(job: RunningJob) -> dict:
    assert isinstance(job.config, RewardTrainConfig), type(job.config)
    cfg = job.fresh_output(job.config, "reward")
    metrics = job.run_trainer("reward.train", cfg)
    try:
        return _register(job, cfg, metrics)
    except Exception as e:  # the transaction rolled back: no model, and the job says why
        raise RuntimeError(f"trained, but registering the model failed: {type(e).__name__}: {e}") from e


def _register(job: RunningJob, cfg: RewardTrainConfig, metrics: dict) -> dict:
    """Judge the model at the gate, then register it and finish the job in one transaction."""
    verdict = reward_verdict(
        job.store, Path(cfg.output_dir), metrics, Path(cfg.snapshot), job.options.get("min_accuracy", 0.55)
    )
    if verdict.compared_to_active:
        metrics = {**metrics, "compared_to_active": verdict.compared_to_active}
    with job.store.write() as cur:
        model_id = register_trained(
            cur,
            ModelKind.REWARD,
            cfg.output_dir,
            cfg.base_model,
            name=f"reward-{job.job_id}",
            snapshot_id=metrics.get("snapshot"),
            config=cfg.model_dump(mode="json"),
            metrics=metrics,
            approved=verdict.promote,
            reason=verdict.reason,
        )
        job.finish(cur, model_id, cfg.output_dir)
    return {"model_id": model_id}
