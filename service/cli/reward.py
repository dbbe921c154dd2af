"""`rankloop` commands of the reward stage: snapshot, train reward, models promote, prioritize.

Each goes through `service.cli.client` (the running service, or this process); training is
a job that this command follows.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from reward.configfile import read_yaml
from service.cli.client import connect, follow
from service.core.errors import CommandFailed
from service.core.settings import Settings


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> None:
    filters = {
        "exclude_flagged": args.exclude_flagged,
        "min_gold_agreement": args.min_gold_agreement,
        "exclude_annotators": args.exclude_annotator or [],
        "eval_fraction": args.eval_fraction,
        "include_judges": args.include_judges,
        "include_traffic": not args.exclude_traffic,
    }
    with connect(settings) as c:
        snap = c.call("snapshot", **filters)
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
    if job["status"] != "succeeded" or model is None:
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
        **({"mode": args.mode} if args.mode else {}),
    }
    with connect(settings) as c:
        job_id = c.call(
            "jobs.start", kind="reward", config=config, options={"min_accuracy": args.min_accuracy}
        )["job_id"]
        job = c.call("jobs.show", job_id=job_id)
        cfg = job["config"]
        print(
            f"job {job_id}: {cfg['mode']} reward model on {cfg['base_model']}, snapshot {cfg['snapshot']}"
            + (" (in the service)" if c.remote else "")
        )
        job = follow(c, job_id, "training")
        model = c.call("models.show", model_id=job["result_model_id"]) if job["result_model_id"] else None
    _report(job, model)


def cmd_models_promote(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        c.call("models.promote", model_id=args.id, reason=args.reason)
    print(f"model {args.id} is active ({args.reason})")


def cmd_prioritize(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        result = c.call("prioritize")
    print(
        f"set the priority of {result['tasks']} open tasks from reward model #{result['model_id']}'s uncertainty"
    )


def add_parsers(sub, add: Callable[..., argparse.ArgumentParser], models_sub):
    """Adds the reward stage's commands; returns the `train` group (policy training joins it)."""
    p = add(
        "snapshot", cmd_snapshot, "freeze the rankings into a Parquet snapshot with a prompt-disjoint split"
    )
    p.add_argument("--exclude-flagged", action="store_true", help="drop rankings that flag a candidate")
    p.add_argument(
        "--min-gold-agreement",
        type=float,
        default=None,
        help="drop annotators whose agreement with gold tasks is below this (0..1)",
    )
    p.add_argument(
        "--exclude-annotator", action="append", metavar="NAME", help="drop this annotator (repeat)"
    )
    p.add_argument("--eval-fraction", type=float, default=0.2, help="share of prompts held out (default 0.2)")
    p.add_argument(
        "--include-judges", action="store_true", help="keep model judges' rankings (default: people only)"
    )
    p.add_argument(
        "--exclude-traffic", action="store_true", help="drop rankings from served traffic (clients' votes)"
    )

    train = sub.add_parser("train", help="training jobs").add_subparsers(dest="kind", required=True)
    p = add(
        "reward",
        cmd_train_reward,
        "train a reward model from the newest snapshot as a job",
        train,
        settings_flag=False,
    )
    p.add_argument(
        "--config",
        dest="job_config",
        metavar="FILE",
        help="YAML with reward.train fields (snapshot, base_model, epochs, lora, ...)",
    )
    p.add_argument("--mode", choices=["listwise", "pairwise"], default=None, help="loss (default listwise)")
    p.add_argument(
        "--min-accuracy",
        type=float,
        default=0.55,
        help="held-out accuracy the first reward model needs to become active (default 0.55)",
    )

    p = add("promote", cmd_models_promote, "make a model active by hand, recording why", models_sub)
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True, help="why (recorded in the registry)")

    add("prioritize", cmd_prioritize, "order the queue by the active reward model's uncertainty")
    return train
