"""Job kinds `sft`, `dpo`, `grpo`, `rloo`: train a policy in a child process (`python -m policy.*`),
then register it with its parent, snapshot and reward model.

Unset fields come from the data directory: the newest snapshot, the newest fine-tuned or
pretrained checkpoint as the starting point (the newest pretrained one for SFT), the active reward
model for online RL, and a fresh output directory under models/. Everything is validated before the
job exists, without torch: the configs are `policy.config`'s, the checks on the data and the starting
checkpoint `policy.data`'s (the trainers run the same ones). A trained policy is registered as a
`candidate`; `rankloop models promote` approves it.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from policy.config import DPOTrainConfig, PolicyTrainConfig, RLTrainConfig, SFTTrainConfig
from policy.data import check_base_model, training_rows
from reward.configfile import validate
from service.core.enums import ModelKind
from service.core.errors import UserError
from service.core.registry import active_model, register_trained
from service.core.settings import Settings
from service.core.store import Store
from service.jobs.running import RunningJob, check_training_config, training_defaults

CONFIGS: dict[str, type[PolicyTrainConfig]] = {
    "sft": SFTTrainConfig,
    "dpo": DPOTrainConfig,
    "grpo": RLTrainConfig,
    "rloo": RLTrainConfig,
}
# method -> the trainer module its job runs (`python -m ...`)
MODULES = {"sft": "policy.sft", "dpo": "policy.dpo", "grpo": "policy.rl", "rloo": "policy.rl"}


def trainer_sees_cuda() -> bool:
    """Whether a trainer this process starts finds CUDA: asked of a child process, since the service
    does not import torch (only for `generation: vllm_server`; it takes a few seconds)."""
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=120).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


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
            active = active_model(store, ModelKind.REWARD)
            if active is None:
                raise UserError(
                    "online RL needs a reward model: train one (`rankloop train reward`) or set "
                    "reward_model: in the config"
                )
            values["reward_model"] = active["path"]
    base_kinds = (ModelKind.PRETRAINED,) if method == "sft" else (ModelKind.SFT, ModelKind.PRETRAINED)
    values = training_defaults(store, settings, values, method, base_kinds)
    cfg = validate(config_class, values, source)
    check_training_config(store, settings, cfg, method)
    try:  # what the trainer would stop on at once: the tokenizer and the data, checked before the job exists
        check_base_model(cfg.base_model)
        training_rows(cfg, trainer_sees_cuda)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    return cfg


def run(method: str, job: RunningJob) -> dict:
    assert isinstance(job.config, PolicyTrainConfig), type(job.config)
    cfg = job.fresh_output(job.config, method)
    metrics = job.run_trainer(MODULES[method], cfg)
    with job.store.write() as cur:  # the model and the finished job, together
        model_id = register_trained(
            cur,
            ModelKind.SFT if method == "sft" else ModelKind.POLICY,
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
