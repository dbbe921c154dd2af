"""`rankloop` commands of the reward stage: snapshot, train reward, models promote, prioritize.

Each goes through `service.cli.client` (the running service, or this process); training is
a job that this command follows.
"""

from __future__ import annotations

import argparse

from reward.configfile import read_yaml
from service.cli.client import connect, follow
from service.cli.flags import Opt, add_model_flags, flag_values
from service.cli.tree import CommandTree, op_params
from service.core.enums import JobStatus
from service.core.errors import CommandFailed
from service.core.settings import LaunchOptions, Settings
from service.jobs.runner import KINDS

# The reward job's config and options, whatever classes the job kind uses: their flags follow them.
REWARD = KINDS["reward"]


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        snap = c.call("snapshot", **op_params(args, "snapshot"))
    counts = snap["counts"]
    print(
        f"snapshot {snap['id']} {'written' if snap['created'] else 'unchanged (same data as before)'}: "
        f"{snap['path']}"
    )
    print(
        f"  {counts['rankings']} rankings ({counts['train_rankings']} train / {counts['eval_rankings']} eval), "
        f"{counts['prompts']} prompts ({counts['train_prompts']} / {counts['eval_prompts']}), "
        f"dropped {counts['dropped']}"
    )


def _report(job: dict, model: dict | None) -> None:
    if job["status"] != JobStatus.SUCCEEDED or model is None:
        raise CommandFailed(f"job {job['id']} {job['status']}: {job['error']}", 1)
    ev = model["metrics"]["eval"]
    print(f"job {job['id']} succeeded: reward model #{model['id']} at {model['path']}")
    print(f"  held-out pairwise accuracy {ev['pairwise_accuracy']} on {ev['pairs']} pairs, ECE {ev['ece']}")
    if "hidden" in ev:
        h = ev["hidden"]
        print(
            f"  agreement with the simulated annotators' hidden preference {h['model_vs_hidden']} "
            f"(the labels themselves: {h['labels_vs_hidden']})"
        )
    side = model["metrics"].get("compared_to_active")
    if side:
        print(
            f"  side by side with the active reward model #{side['model_id']} on the {side['active']['pairs']} "
            f"pairs both snapshots hold out: accuracy {side['candidate']['pairwise_accuracy']} vs "
            f"{side['active']['pairwise_accuracy']}, ECE {side['candidate']['ece']} vs {side['active']['ece']}"
        )
    print(f"  status {model['status']}: {model['status_reason']}")


def cmd_train_reward(args: argparse.Namespace, settings: Settings) -> None:
    config = {
        **(read_yaml(args.job_config) if args.job_config else {}),
        **flag_values(args, REWARD.config),
    }
    options = flag_values(args, REWARD.options)
    launch = flag_values(args, LaunchOptions)
    with connect(settings) as c:
        job_id = c.call("jobs.start", kind="reward", config=config, options=options, launch=launch)["job_id"]
        job = c.call("jobs.show", job_id=job_id)
        cfg = job["config"]
        what = {
            "yes": "a reward head on the frozen",
            "auto": f"a reward model (a head on the frozen backbone without a GPU, every weight, {cfg['mode']}, "
            "with one) on",
        }.get(cfg.get("frozen_backbone"), f"{cfg['mode']} reward model on")
        print(
            f"job {job_id}: {what} {cfg['base_model']}, snapshot {cfg['snapshot']}"
            + (" (in the service)" if c.remote else "")
        )
        job = follow(c, job_id, "training")
        model = c.call("models.show", model_id=job["result_model_id"]) if job["result_model_id"] else None
    _report(job, model)


def cmd_models_promote(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        c.call("models.promote", **op_params(args, "models.promote"))
    print(f"model {args.model_id} is active ({args.reason})")


def cmd_prioritize(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        result = c.call("prioritize")
    print(
        f"set the priority of {result['tasks']} open tasks from reward model #{result['model_id']}'s uncertainty"
    )


def add_parsers(tree: CommandTree) -> None:
    """The reward stage's commands, and the `train` group (policy training joins it)."""
    tree.command(
        "snapshot",
        cmd_snapshot,
        "freeze the rankings into a Parquet snapshot with a prompt-disjoint split",
        op="snapshot",
        opts={
            "exclude_annotators": Opt(flag="--exclude-annotator", metavar="NAME"),
            "include_traffic": Opt(negative="--exclude-traffic"),
        },
    )

    tree.group("train", "training jobs", dest="kind")
    p = tree.command(
        "reward",
        cmd_train_reward,
        "train a reward model from the newest snapshot as a job",
        "train",
        settings_flag=False,
    )
    p.add_argument(
        "--config",
        dest="job_config",
        metavar="FILE",
        help="YAML with reward.train fields (snapshot, base_model, epochs, lora, ...)",
    )
    add_model_flags(p, REWARD.config, only=("mode", "frozen_backbone"), overrides=True)
    add_model_flags(p, REWARD.options)
    add_model_flags(p, LaunchOptions)  # where the trainer runs (over the jobs settings)

    tree.command(
        "promote",
        cmd_models_promote,
        "make a model active by hand, recording why",
        "models",
        op="models.promote",
        opts={"model_id": Opt(positional=True, metavar="id")},
    )

    tree.command(
        "prioritize",
        cmd_prioritize,
        "order the queue by the active reward model's uncertainty",
        op="prioritize",
    )
