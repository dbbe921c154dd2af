"""`rankloop demo`, `rankloop loop`, `rankloop rounds` and `rankloop report`: the loop as commands."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from pydantic import BaseModel, Field

from annotator.dashboard import CSV_COLUMNS, WEEK_COLUMNS
from service.cli.client import Client, connect
from service.cli.demo import DemoRun, run_demo
from service.cli.flags import Opt, add_model_flags, flag_values
from service.cli.output import print_table
from service.cli.round_steps import RoundPlan, run_round
from service.cli.tree import CommandTree, op_params
from service.cli.vllm_flags import add_vllm_flags, job_vllm
from service.control.gold import check_gold_model
from service.core.enums import ModelKind, ModelStatus
from service.core.errors import UserError
from service.core.paths import atomic_file
from service.core.settings import Settings


class LoopRun(BaseModel):
    """`rankloop loop`: how many rounds (each round's size is its `RoundPlan`)."""

    rounds: int = Field(1, description="rounds to run")


def _tiny_model_defaults(args: argparse.Namespace, settings: Settings) -> Settings:
    """The built-in model is small and float32; vLLM's bf16 default breaks it on CPU (DESIGN.md)."""
    if args.model or args.dtype is not None:
        return settings
    # --real: SmolLM2 in float32 as its trainers and the KL estimate read it, with room for HH openings.
    length = args.max_model_len or (1024 if getattr(args, "real", False) else 512)
    vllm = settings.vllm.model_copy(update={"dtype": "float32", "max_model_len": length})
    return settings.model_copy(update={"vllm": vllm})


def cmd_demo(args: argparse.Namespace, settings: Settings) -> None:
    run_demo(
        _tiny_model_defaults(args, settings),
        DemoRun(**flag_values(args, DemoRun)),
        config=getattr(args, "config", None),
    )


def _start_model(c: Client) -> int:
    """What the first round samples when nothing is deployed: the active policy, else the newest SFT model."""
    active = [m for m in c.call("models.list", kind=ModelKind.POLICY) if m["status"] == ModelStatus.ACTIVE]
    sft = [m for m in c.call("models.list", kind=ModelKind.SFT) if m["status"] != ModelStatus.FAILED]
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
    if args.gold_model is not None:
        check_gold_model(args.gold_model)
        args.gold_model = str(Path(args.gold_model).resolve())  # the accounts' profiles name it
    plan = RoundPlan(**flag_values(args, RoundPlan), vllm=job_vllm(args, settings).get("vllm"))
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


def cmd_dashboard(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        d = c.call("quality.dashboard")
    if args.csv:
        with atomic_file(Path(args.csv)) as f:
            text = io.TextIOWrapper(f, encoding="utf-8", newline="")
            writer = csv.DictWriter(text, CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(d["weeks"])
            text.flush()
            text.detach()
        print(f"{len(d['weeks'])} annotator-weeks written to {args.csv}")
    else:
        print_table(d["weeks"], WEEK_COLUMNS)
    for who in d["needs_attention"]:
        print(f"\nneeds attention: {who['annotator']}: " + "; ".join(who["reasons"]))


def cmd_quality(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        q = c.call("quality", **op_params(args, "quality"))
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


def add_parsers(tree: CommandTree) -> None:
    p = tree.command(
        "demo",
        cmd_demo,
        "the whole loop on a tiny model built here (no download): pretrain, SFT, sample, "
        "simulated ranking, reward model, policy, evaluation, deploy, one completion through the API, report",
    )
    add_model_flags(p, DemoRun)
    add_vllm_flags(p)

    p = tree.command(
        "loop",
        cmd_loop,
        "run rounds of the loop: sample with the deployed policy, rank, retrain reward and "
        "policy, evaluate, deploy only a winner; resumes an unfinished round",
    )
    add_model_flags(p, LoopRun)
    add_model_flags(
        p,
        RoundPlan,
        only=(
            "annotators",
            "target_rankings",
            "method",
            "k",
            "eval_samples",
            "gate_min_prompts",
            "human_tasks",
            "seed",
            "gold_model",
        ),
        opts={"target_rankings": Opt(metavar="M")},
    )
    add_vllm_flags(p)

    tree.command(
        "quality",
        cmd_quality,
        "annotator agreement (with consensus, Kendall tau, gold), the unreliable "
        "ones flagged, and Krippendorff's alpha per batch",
        op="quality",
    )
    p = tree.command(
        "dashboard",
        cmd_dashboard,
        "per annotator and week: pace, time on task, ties, position bias, agreement; who needs attention",
        op="quality.dashboard",
    )
    p.add_argument("--csv", metavar="FILE", help="write the weekly rows to FILE as CSV instead of a table")
    tree.command("rounds", cmd_rounds, "list the rounds of the loop with their steps", op="rounds.list")
    tree.command(
        "report", cmd_report, "rebuild report.html in the data directory from the database", op="report"
    )
