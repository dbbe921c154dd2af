"""Job kinds `sft`, `dpo`, `grpo`, `rloo`: train a policy in a child process (`python -m policy.*`),
then register it with its parent, snapshot and reward model.

Unset fields come from the data directory: the newest snapshot, the newest fine-tuned or
pretrained checkpoint as the starting point (the newest pretrained one for SFT), the active reward
model for online RL, and a fresh output directory under models/. Everything is validated before the
job exists. A trained policy is registered as a `candidate`; `rankloop models promote` approves it.
"""

from __future__ import annotations

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
from service.loop.jobrun import JobRun, check_training_config, training_defaults

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
    values = training_defaults(store, settings, values, method,
                               ("pretrained",) if method == "sft" else ("sft", "pretrained"))
    cfg = validate(config_class, values, source)
    check_training_config(store, cfg, method)
    return cfg


def run(method: str, job: JobRun) -> dict:
    cfg: PolicyTrainConfig = job.fresh_output(job.config, method)
    metrics = job.run_trainer(METHODS[method][1], cfg)
    with job.store.write() as cur:  # the model and the finished job, together
        model_id = register_trained(
            cur, "sft" if method == "sft" else "policy", cfg.output_dir, cfg.base_model, name=f"{method}-{job.job_id}",
            snapshot_id=metrics["train"].get("snapshot"), config=cfg.model_dump(mode="json"), metrics=metrics,
            approved=False, reason="trained; approve it with `rankloop models promote ID` once it wins", gate=False)
        job.finish(cur, model_id, cfg.output_dir)
    return {"model_id": model_id}
