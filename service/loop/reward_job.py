"""Job kind `reward`: train a reward model from a snapshot in a child process, then judge it
at the promotion gate and register it.

The config is `reward.train.RewardTrainConfig`, filled from the data directory where a
field is unset (the newest snapshot, the newest fine-tuned or pretrained checkpoint, a fresh
output directory under models/) and validated before the job exists. Only a trainer that
exits cleanly and wrote its metrics registers a model; the gate (`promotion`) decides
whether it becomes active, and the model and the finished job are written in one transaction.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reward.configfile import validate
from reward.snapshot_format import snapshot_file
from reward.train import RewardTrainConfig
from service.core.errors import StoreError
from service.core.registry import register_trained
from service.core.settings import Settings
from service.core.store import Store
from service.loop.jobrun import JobRun
from service.loop.promotion import reward_verdict
from service.loop.snapshots import latest_snapshot

DEFAULT_OUTPUT = "reward-next"  # replaced by reward-<job id> once the job has its id


def check_output_dir(store: Store, out: Path) -> None:
    """A job writes into a fresh directory: never over a registered model or other files."""
    if store.scalar("SELECT count(*) FROM models WHERE path = ?", [str(out.resolve())]):
        raise StoreError(f"output_dir {out} holds a registered model; a job never overwrites one. Pick another")
    if out.exists() and any(out.iterdir()):
        raise StoreError(f"output_dir {out} exists and is not empty; pick a new directory (or leave it unset)")


def prepare(store: Store, settings: Settings, values: dict[str, Any], source: str) -> RewardTrainConfig:
    """The job's config: given values, then defaults from the data directory; validated."""
    values = dict(values)
    if "snapshot" not in values:
        values["snapshot"] = latest_snapshot(store)
        if values["snapshot"] is None:
            raise StoreError("no snapshot to train on: take one with `rankloop snapshot` (or set snapshot: in the config)")
    if "base_model" not in values:
        values["base_model"] = store.scalar(
            "SELECT path FROM models WHERE kind IN ('sft', 'pretrained') ORDER BY id DESC LIMIT 1")
        if values["base_model"] is None:
            raise StoreError("no base checkpoint: set base_model: in the config, or sample from a model first")
    values.setdefault("output_dir", str(settings.paths.model_dir(DEFAULT_OUTPUT)))
    cfg = validate(RewardTrainConfig, values, source)
    if cfg.output_dir.name != DEFAULT_OUTPUT:
        check_output_dir(store, cfg.output_dir)
    if not (Path(cfg.base_model) / "config.json").is_file():
        raise StoreError(f"base_model {cfg.base_model} is not a Hugging Face model directory (no config.json)")
    try:
        snapshot_file(cfg.snapshot)
    except FileNotFoundError as e:
        raise StoreError(str(e)) from None
    return cfg


def run(job: JobRun) -> dict:
    cfg: RewardTrainConfig = job.config
    if cfg.output_dir.name == DEFAULT_OUTPUT:  # the default: one directory per job
        cfg = cfg.model_copy(update={"output_dir": job.settings.paths.model_dir(f"reward-{job.job_id}")})
        check_output_dir(job.store, cfg.output_dir)
    metrics = job.run_trainer("reward.train", cfg)
    try:
        return _register(job, cfg, metrics)
    except Exception as e:  # the transaction rolled back: no model, and the job says why
        raise RuntimeError(f"trained, but registering the model failed: {type(e).__name__}: {e}") from e


def _register(job: JobRun, cfg: RewardTrainConfig, metrics: dict) -> dict:
    """Judge the model at the gate, then register it and finish the job in one transaction."""
    verdict = reward_verdict(job.store, Path(cfg.output_dir), metrics, Path(cfg.snapshot),
                             job.options.get("min_accuracy", 0.55))
    if verdict.compared_to_active:
        metrics = {**metrics, "compared_to_active": verdict.compared_to_active}
    with job.store.write() as cur:
        model_id = register_trained(cur, "reward", cfg.output_dir, cfg.base_model, name=f"reward-{job.job_id}",
                                    snapshot_id=metrics.get("snapshot"), config=cfg.model_dump(mode="json"),
                                    metrics=metrics, approved=verdict.promote, reason=verdict.reason)
        cur.execute("UPDATE jobs SET status = 'succeeded', finished_at = now(), progress = 1, result_model_id = ?, "
                    "output_dir = ?, error = NULL WHERE id = ?", [model_id, str(cfg.output_dir), job.job_id])
    return {"model_id": model_id}
