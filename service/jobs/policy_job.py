"""Job kinds `sft`, `dpo`, `grpo`, `rloo`: train a policy in a child process (`python -m policy.*`),
then register it with its parent, snapshot and reward model.

Unset fields come from the data directory: the newest snapshot, the newest fine-tuned or
pretrained checkpoint as the starting point (the newest pretrained one for SFT), the active reward
model for online RL, and a fresh output directory under models/. Everything is validated before the
job exists. A trained policy is registered as a `candidate`; `rankloop models promote` approves it.
"""

from __future__ import annotations

from typing import Any

from policy import dpo, rl, sft
from policy.trainer import PolicyTrainConfig, load_tokenizer
from reward.configfile import validate
from service.core.errors import UserError
from service.core.registry import active_model, register_trained
from service.core.settings import Settings
from service.core.store import Store
from service.jobs.running import RunningJob, check_training_config, training_defaults

# method -> its trainer module (config class, `dataset(cfg)` that checks the data, `python -m` name)
METHODS = {"sft": sft, "dpo": dpo, "grpo": rl, "rloo": rl}
CONFIGS: dict[str, type[PolicyTrainConfig]] = {
    "sft": sft.SFTTrainConfig,
    "dpo": dpo.DPOTrainConfig,
    "grpo": rl.RLTrainConfig,
    "rloo": rl.RLTrainConfig,
}


def prepare(
    method: str, store: Store, settings: Settings, values: dict[str, Any], source: str
) -> PolicyTrainConfig:
    config_class = CONFIGS[method]
    values = dict(values)
    if method in ("grpo", "rloo"):
        values.setdefault("algorithm", method)
        if values["algorithm"] != method:
            raise UserError(
                f"algorithm {values['algorithm']!r} in a {method} job; leave it unset or say {method}"
            )
        if "reward_model" not in values:
            active = active_model(store, "reward")
            if active is None:
                raise UserError(
                    "online RL needs a reward model: train one (`rankloop train reward`) or set "
                    "reward_model: in the config"
                )
            values["reward_model"] = active["path"]
    values = training_defaults(
        store, settings, values, method, ("pretrained",) if method == "sft" else ("sft", "pretrained")
    )
    cfg = validate(config_class, values, source)
    check_training_config(store, settings, cfg, method)
    try:  # what the trainer would stop on at once: the tokenizer and the data, checked before the job exists
        load_tokenizer(cfg.base_model)
        METHODS[method].dataset(cfg)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    return cfg


def run(method: str, job: RunningJob) -> dict:
    cfg: PolicyTrainConfig = job.fresh_output(job.config, method)
    metrics = job.run_trainer(METHODS[method].__name__, cfg)
    with job.store.write() as cur:  # the model and the finished job, together
        model_id = register_trained(
            cur,
            "sft" if method == "sft" else "policy",
            cfg.output_dir,
            cfg.base_model,
            name=f"{method}-{job.job_id}",
            snapshot_id=metrics["train"].get("snapshot"),
            config=cfg.model_dump(mode="json"),
            metrics=metrics,
            approved=False,
            reason="trained; approve it with `rankloop models promote ID` once it wins",
            gate=False,
        )
        job.finish(cur, model_id, cfg.output_dir)
    return {"model_id": model_id}
