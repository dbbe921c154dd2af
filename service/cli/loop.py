"""`rankloop demo`, `rankloop loop`, `rankloop rounds` and `rankloop report`: the loop as commands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from service.cli.client import connect
from service.cli.output import print_table
from service.cli.round_steps import RoundPlan, run_round
from service.cli.vllm_flags import add_vllm_flags, job_vllm
from service.core.errors import UserError
from service.core.settings import Settings


def _tiny_model_defaults(args: argparse.Namespace, settings: Settings) -> Settings:
    """The built-in model is small and float32; vLLM's bf16 default breaks it on CPU (DESIGN.md)."""
    if args.model or args.dtype is not None:
        return settings
    vllm = settings.vllm.model_copy(update={"dtype": "float32", "max_model_len": args.max_model_len or 512})
    return settings.model_copy(update={"vllm": vllm})


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    from service.cli.demo import run_demo

    run_demo(
        _tiny_model_defaults(args, settings),
        model=Path(args.model) if args.model else None,
        method=args.method,
        small=args.small,
        serve=args.serve,
        port=args.port,
        config=getattr(args, "config", None),
    )


def _start_model(c) -> int:
    """What the first round samples when nothing is deployed: the active policy, else the newest SFT model."""
    active = [m for m in c.call("models.list", kind="policy") if m["status"] == "active"]
    sft = [m for m in c.call("models.list", kind="sft") if m["status"] != "failed"]
    if active or sft:
        return (active or sft)[-1]["id"]  # the newest
    raise UserError(
        "the loop needs a chat model to start from: `rankloop demo`, or `rankloop train policy "
        "--method sft` on your checkpoint"
    )


def cmd_loop(args: argparse.Namespace, settings: Settings) -> None:
    # Checked before a round is opened: a bad flag leaves nothing behind.
    if args.rounds < 1:
        raise UserError(f"--rounds {args.rounds}: give 1 or more")
    if not 1 <= args.k <= 16:
        raise UserError(f"--k {args.k}: samples per prompt and system prompt are 1..16")
    if args.human_tasks < 0 or args.target_rankings < 0:
        raise UserError("--human-tasks and --target-rankings are 0 or more")
    if args.annotators == "people" and args.target_rankings < 1:
        raise UserError("--annotators people needs --target-rankings M (rankings to wait for each round)")
    if args.annotators == "people" and args.method != "dpo":
        # With people, the reward model is the judge, and an RL policy was trained against that very model.
        raise UserError(
            f"--annotators people with --method {args.method}: the policy would be judged by the reward "
            "model it was trained against, which the gate refuses; use --method dpo"
        )
    plan = RoundPlan(
        k=args.k,
        annotators=args.annotators,
        target_rankings=args.target_rankings,
        method=args.method,
        human_tasks=args.human_tasks,
        seed=args.seed,
        vllm=job_vllm(args, settings).get("vllm"),
    )
    with connect(settings) as c:
        if args.annotators == "people" and not c.remote:
            raise UserError(
                "people rank in the annotator app of a running service: start `rankloop serve` first"
            )
        start = _start_model(c)
        for i in range(args.rounds):
            row = run_round(c, settings, plan, "loop", start)
            print(f"\nround {row['id']} done ({i + 1}/{args.rounds}): {row['note']}")
        print(f"report: {c.call('report')['path']}")


def cmd_rounds(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        rows = c.call("rounds.list")
    print_table(
        [{**r, "seconds": round(sum(r["stages"].values()))} for r in rows],
        [
            "id",
            "kind",
            "status",
            "step",
            "sampled_model_id",
            "policy_model_id",
            "deployed_model_id",
            "seconds",
            "note",
        ],
    )


def cmd_quality(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        q = c.call("quality", batch=args.batch)
    flagged = set(q["unreliable"])
    print_table(
        [{**r, "unreliable": "yes" if r["annotator"] in flagged else ""} for r in q["annotators"]],
        [
            "annotator",
            "role",
            "rankings",
            "agreement_with_consensus",
            "kendall_tau",
            "gold_agreement",
            "per_hour",
            "unreliable",
        ],
    )
    print()
    print_table(q["batches"], ["batch", "tasks", "rankings", "overlap_tasks", "alpha_ordinal"])
    if flagged:
        print(
            "\nleave them out of training: rankloop snapshot "
            + " ".join(f"--exclude-annotator {n}" for n in sorted(flagged))
        )


def cmd_report(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        print(f"report written to {c.call('report')['path']}")


def add_parsers(sub, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "demo",
        cmd_demo,
        "the whole loop on a tiny model built here (no download): pretrain, SFT, sample, "
        "simulated ranking, reward model, policy, evaluation, deploy, one completion through the API, report",
    )
    p.add_argument(
        "--model", default=None, help="start from this Hugging Face model directory instead of the tiny one"
    )
    p.add_argument(
        "--method", default="dpo", choices=["dpo", "grpo", "rloo"], help="how the policy is trained"
    )
    p.add_argument("--small", action="store_true", help="a smaller, faster run (the test suite's)")
    p.add_argument(
        "--serve",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="keep the annotator app and the API running until Ctrl-C (default on)",
    )
    p.add_argument(
        "--port", type=int, default=None, help="the service's port (default 8000; 0 = any free port)"
    )
    add_vllm_flags(p)

    p = add(
        "loop",
        cmd_loop,
        "run rounds of the loop: sample with the deployed policy, rank, retrain reward and "
        "policy, evaluate, deploy only a winner; resumes an unfinished round",
    )
    p.add_argument("--rounds", type=int, default=1, help="rounds to run (default 1)")
    p.add_argument(
        "--annotators",
        default="simulated",
        choices=["simulated", "people"],
        help="who ranks: simulated annotators, or people in the app of a running service",
    )
    p.add_argument("--target-rankings", type=int, default=0, metavar="M", help="people: rankings to wait for")
    p.add_argument(
        "--method", default="dpo", choices=["dpo", "grpo", "rloo"], help="how the policy is trained"
    )
    p.add_argument("--k", type=int, default=8, help="samples per prompt and system prompt (default 8)")
    p.add_argument(
        "--human-tasks", type=int, default=8, help="blind policy-vs-baseline tasks left for people"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of sampling order and simulated rankings")
    add_vllm_flags(p)

    p = add(
        "quality",
        cmd_quality,
        "annotator agreement (with consensus, Kendall tau, gold), the unreliable "
        "ones flagged, and Krippendorff's alpha per batch",
    )
    p.add_argument("--batch", default=None, help="annotators' figures over this batch only")
    add("rounds", cmd_rounds, "list the rounds of the loop with their steps")
    add("report", cmd_report, "rebuild report.html in the data directory from the database")
