"""`rankloop train policy --method sft|dpo|grpo|rloo [--config FILE] [--evaluate]`: a policy training
job, followed to its end (in the service when one runs), then optionally its evaluation and gate."""

from __future__ import annotations

import argparse

from reward.configfile import read_yaml
from service.cli.client import connect, follow
from service.cli.evaluate import EVALUATE, evaluate
from service.cli.flags import add_model_flags, flag_values
from service.cli.tree import CommandTree
from service.cli.vllm_flags import add_vllm_flags, job_vllm
from service.core.enums import JobStatus
from service.core.errors import CommandFailed, UserError
from service.core.settings import LaunchOptions, Settings
from service.jobs.policy_job import CONFIGS


def cmd_train_policy(args: argparse.Namespace, settings: Settings) -> None:
    if flag_values(args, EVALUATE) and not args.evaluate:  # before a job is started for nothing
        raise UserError("--samples and --min-prompts are for the evaluation after training: add --evaluate")
    config = read_yaml(args.job_config) if args.job_config else {}
    with connect(settings) as c:
        job_id = c.call(
            "jobs.start", kind=args.method, config=config, launch=flag_values(args, LaunchOptions)
        )["job_id"]
        cfg = c.call("jobs.show", job_id=job_id)["config"]
        data = cfg.get("snapshot") or cfg.get("data")
        print(
            f"job {job_id}: {args.method} from {cfg['base_model']} on {data}"
            + (" (in the service)" if c.remote else "")
        )
        job = follow(c, job_id, f"training ({args.method})")
        model = c.call("models.show", model_id=job["result_model_id"]) if job["result_model_id"] else None
    if job["status"] != JobStatus.SUCCEEDED or model is None:
        raise CommandFailed(f"job {job['id']} {job['status']}: {job['error']}", 1)
    train = model["metrics"]["train"]
    losses = [p["loss"] for p in model["metrics"]["loss_curve"]]
    print(f"job {job_id} succeeded: {model['kind']} model #{model['id']} at {model['path']}")
    print(
        f"  {train['steps']} steps in {train['seconds']:.0f} s; loss {losses[0]:.4f} -> {losses[-1]:.4f}"
        if losses
        else f"  {train['steps']} steps"
    )
    print(f"  status {model['status']}: {model['status_reason']}")
    if args.evaluate:  # the same as `rankloop evaluate policy ID` right after
        with connect(settings) as c:
            evaluate(c, {"candidate": model["id"], **flag_values(args, EVALUATE), **job_vllm(args, settings)})


def add_parsers(tree: CommandTree) -> None:
    p = tree.command(
        "policy",
        cmd_train_policy,
        "train a policy (SFT, DPO, GRPO or RLOO) as a job",
        "train",
        settings_flag=False,
    )
    # Which job kind (and so which config class) runs: a choice among configs, not a field of one.
    p.add_argument("--method", required=True, choices=list(CONFIGS), help="how to train")
    p.add_argument(
        "--config",
        dest="job_config",
        metavar="FILE",
        help="YAML with the method's fields (policy/config.py: SFTTrainConfig, DPOTrainConfig, RLTrainConfig); unset ones come from the data",
    )
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="then evaluate it against the active policy (else its parent) and apply the gate",
    )
    add_model_flags(p, EVALUATE, only=["samples", "min_prompts"], overrides=True)
    add_model_flags(p, LaunchOptions)  # where the trainer runs (over the jobs settings)
    add_vllm_flags(p)
