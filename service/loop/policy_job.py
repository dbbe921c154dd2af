"""Job kinds `sft`, `dpo`, `grpo`, `rloo`: train a policy in a child process (`python -m policy.*`),
then register it with its parent, snapshot and reward model.

Unset fields come from the data directory: the newest snapshot, the newest fine-tuned or
pretrained checkpoint as the starting point (the newest pretrained one for SFT), the active reward
model for online RL, and a fresh output directory under models/. Everything is validated before the
job exists. A trained policy is registered as a `candidate`; `rankloop models promote` approves it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from policy.dpo import DPOTrainConfig
from policy.rl import RLTrainConfig
from policy.sft import SFTTrainConfig
from policy.trainer import PolicyTrainConfig
from reward.configfile import validate
from service.core.errors import StoreError
from service.core.registry import active_model, register_trained
from service.core.settings import Settings
from service.core.store import Store
from service.loop.jobrun import JobRun
from service.loop.reward_job import check_output_dir
from service.loop.snapshots import latest_snapshot

METHODS: dict[str, tuple[type[PolicyTrainConfig], str]] = {
    "sft": (SFTTrainConfig, "policy.sft"), "dpo": (DPOTrainConfig, "policy.dpo"),
    "grpo": (RLTrainConfig, "policy.rl"), "rloo": (RLTrainConfig, "policy.rl"),
}


def prepare(method: str, store: Store, settings: Settings, values: dict[str, Any], source: str) -> PolicyTrainConfig:
    config_class, _ = METHODS[method]
    values = dict(values)
    if method in ("grpo", "rloo"):
        values.setdefault("algorithm", method)
        if values["algorithm"] != method:
            raise StoreError(f"algorithm {values['algorithm']!r} in a {method} job; leave it unset or say {method}")
        if "reward_model" not in values:
            active = active_model(store, "reward")
            if active is None:
                raise StoreError("online RL needs a reward model: train one (`rankloop train reward`) or set "
                                 "reward_model: in the config")
            values["reward_model"] = active["path"]
    if "snapshot" not in values and "data" not in values:
        values["snapshot"] = latest_snapshot(store)
        if values["snapshot"] is None:
            raise StoreError("no snapshot to train on: take one with `rankloop snapshot` (or set snapshot: / data:)")
    if "base_model" not in values:
        kinds = "('pretrained')" if method == "sft" else "('sft', 'pretrained')"
        values["base_model"] = store.scalar(f"SELECT path FROM models WHERE kind IN {kinds} ORDER BY id DESC LIMIT 1")
        if values["base_model"] is None:
            raise StoreError("no starting checkpoint: set base_model: in the config, or sample from a model first")
    values.setdefault("output_dir", str(settings.paths.model_dir(f"{method}-next")))
    cfg = validate(config_class, values, source)
    if cfg.output_dir.name != f"{method}-next":
        check_output_dir(store, cfg.output_dir)
    if not (Path(cfg.base_model) / "config.json").is_file():
        raise StoreError(f"base_model {cfg.base_model} is not a Hugging Face model directory (no config.json)")
    return cfg


def run(method: str, job: JobRun) -> dict:
    cfg: PolicyTrainConfig = job.config
    if cfg.output_dir.name == f"{method}-next":  # the default: one directory per job
        cfg = cfg.model_copy(update={"output_dir": job.settings.paths.model_dir(f"{method}-{job.job_id}")})
        check_output_dir(job.store, cfg.output_dir)
    metrics = job.run_trainer(METHODS[method][1], cfg)
    with job.store.write() as cur:  # the model and the finished job, together
        model_id = register_trained(
            cur, "sft" if method == "sft" else "policy", cfg.output_dir, cfg.base_model, name=f"{method}-{job.job_id}",
            snapshot_id=metrics["train"].get("snapshot"), config=cfg.model_dump(mode="json"), metrics=metrics,
            approved=False, reason="trained; approve it with `rankloop models promote ID` once it wins", gate=False)
        cur.execute("UPDATE jobs SET status = 'succeeded', finished_at = now(), progress = 1, result_model_id = ?, "
                    "output_dir = ?, error = NULL WHERE id = ?", [model_id, str(cfg.output_dir), job.job_id])
    return {"model_id": model_id}
