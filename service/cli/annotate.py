"""`rankloop` commands of the annotation stage: serve, annotators, annotate-sim, gold, leaderboard,
export, import.

Each goes through `service.cli.client`: the running service's admin API when `rankloop
serve` holds the data directory, else the database in this process.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from pydantic import BaseModel, Field

from annotator import simulate_run
from annotator.simulated import Profile
from service.cli.client import annotation_queue, connect
from service.cli.flags import POSITIONAL, Opt, add_model_flags, flag_values
from service.cli.output import print_table
from service.cli.tree import CommandTree, op_params
from service.control.gold import GoldScores, check_gold_model
from service.core.enums import HUMAN_ROLES
from service.core.errors import UserError
from service.core.settings import Settings


class SimulatedRun(BaseModel):
    """`rankloop annotate-sim`: who the simulated annotators are and how long they rank."""

    annotators: int = Field(3, description="reliable simulated annotators")
    noise: float = Field(0.3, description="Bradley-Terry temperature")
    unreliable: int = Field(0, description="extra annotators that rank at random")
    position_bias: float = Field(0.0, description="preference for candidates shown first")
    max_per_annotator: int | None = Field(None, description="stop each annotator after N tasks")
    seed: int = Field(0, description="seed of the simulated rankings")
    gold_model: Path | None = Field(
        None,
        description="rank by this gold reward model's scores (a directory `train reward` wrote, trained on "
        "labels the loop never sees) instead of the rule-based preference; the accounts are gold-1.., "
        "and noise 1 follows the model's own confidence",
    )


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from service.web.serve import serve  # the web layer only loads to serve

    serve(settings.model_copy(update=flag_values(args, Settings)))


def _password(args: argparse.Namespace) -> str | None:
    if args.role not in HUMAN_ROLES:
        return None
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n")
    first = getpass.getpass(f"password for {args.name}: ")
    if first != getpass.getpass("again: "):
        raise UserError("the two passwords differ; nothing was changed")
    return first


def cmd_annotators_add(args: argparse.Namespace, settings: Settings) -> None:
    password = _password(args)
    with connect(settings) as c:
        c.call("annotators.add", **op_params(args, "annotators.add"), password=password)
    print(f"added {args.role} {args.name!r}")


def cmd_annotators_list(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        print_table(c.call("annotators.list"), ["id", "name", "role", "disabled", "rankings", "created_at"])


def cmd_annotators_disable(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        c.call("annotators.disable", **op_params(args, "annotators.disable"))
    print(f"disabled {args.name!r}: it can no longer log in or submit")


def cmd_annotators_logout(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        c.call("annotators.logout", **op_params(args, "annotators.logout"))
    print(f"logged {args.name!r} out everywhere: its API tokens and app sessions no longer count")


def cmd_annotate_sim(args: argparse.Namespace, settings: Settings) -> None:
    if args.annotators < 0 or args.unreliable < 0 or args.annotators + args.unreliable == 0:
        raise UserError("--annotators and --unreliable must be >= 0, and at least one annotator is needed")
    gold_model = str(args.gold_model.resolve()) if args.gold_model else None
    if gold_model:
        check_gold_model(gold_model)  # a wrong directory is refused before any account is made
    gold = GoldScores() if gold_model else None
    wanted = simulate_run.default_profiles(
        args.annotators, args.noise, args.unreliable, args.position_bias, gold_model
    )
    with connect(settings) as c:
        profiles = c.call("simulated.ensure", profiles=wanted)
        profiles = {name: Profile.model_validate(p) for name, p in profiles.items()}
        # They rank through the annotation path itself: the service's JSON API, or the queue here.
        queue = annotation_queue(c, settings)
        report = simulate_run.run(  # gold annotators take turns (round_steps.py says why)
            queue,
            profiles,
            seed=args.seed,
            max_per_annotator=args.max_per_annotator,
            parallel=gold is None,
            gold=gold,
        )
    for name, n in report.rankings.items():
        print(f"  {name}: {n} rankings")
    print(f"simulated annotators stored {report.total} rankings")


def comma_ranks(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--ranks {text!r}: expected comma-separated integers such as 1,2,2,3") from None


def cmd_tasks_gold(args: argparse.Namespace, settings: Settings) -> None:
    params = op_params(args, "tasks.gold")
    with connect(settings) as c:
        c.call("tasks.gold", **params)
    print(f"task {args.task_id} is a gold task with ranks {params['ranks']}")


def cmd_leaderboard(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        rows = c.call("leaderboard", **op_params(args, "leaderboard"))
    columns = ["arm", "score", "ci_low", "ci_high", "comparisons", "win_rate"]
    if args.style_control:
        columns += ["style_score", "style_ci_low", "style_ci_high"]
    print_table(rows, columns)
    if args.style_control and rows:
        print(
            f"style coefficients (log-odds per SD of the normalized difference): {rows[0]['style_coefficients']}"
        )


def cmd_export(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        n = c.call("export", **op_params(args, "export"))["rows"]
    print(f"wrote {n} rows to {args.out} ({args.format})")


def cmd_import_hh(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("import.hh", **op_params(args, "import.hh"), source_ref=str(args.file))
    print(
        f"imported {r['added']} preference pairs from {args.file}"
        + (f" ({r['already']} already imported)" if r["already"] else "")
    )
    if r["repaired"]:
        print(f"{r['repaired']} of them had turns of one speaker in a row joined or empty turns dropped")
    if r["skipped"]:
        print(f"skipped {len(r['skipped'])} lines (--strict rejects the file instead):")
        print("".join(f"  {why}\n" for why in r["skipped"]), end="")


def add_parsers(tree: CommandTree) -> None:
    p = tree.command(
        "serve", cmd_serve, "run the service: annotator app at /annotate, JSON API, /admin (holds the data)"
    )
    add_model_flags(p, Settings, only=("host", "port", "log_format"), overrides=True)

    tree.group("annotators", "annotator accounts")
    p = tree.command(
        "add",
        cmd_annotators_add,
        "add an account (password prompted, or one line on stdin)",
        "annotators",
        op="annotators.add",
        opts={"name": POSITIONAL, "role": Opt(choices=[r.value for r in HUMAN_ROLES])},
        skip={
            "password": "prompted, or --password-stdin",
            "profile": "simulated accounts only (annotate-sim)",
        },
    )
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    tree.command("list", cmd_annotators_list, "list accounts", "annotators", op="annotators.list")
    tree.command(
        "disable",
        cmd_annotators_disable,
        "disable an account (it keeps its rankings)",
        "annotators",
        op="annotators.disable",
        opts={"name": POSITIONAL},
    )
    tree.command(
        "logout",
        cmd_annotators_logout,
        "end every login of an account (API tokens and app sessions)",
        "annotators",
        op="annotators.logout",
        opts={"name": POSITIONAL},
    )

    p = tree.command(
        "annotate-sim", cmd_annotate_sim, "simulated annotators with a known preference rank the open queue"
    )
    add_model_flags(p, SimulatedRun)

    tree.group("tasks", "ranking tasks")
    tree.command(
        "gold",
        cmd_tasks_gold,
        "mark a task as gold with its correct ranking",
        "tasks",
        op="tasks.gold",
        opts={"task_id": POSITIONAL, "ranks": Opt(type=str, repeat=False, convert=comma_ranks)},
    )

    tree.command(
        "leaderboard",
        cmd_leaderboard,
        "Bradley-Terry leaderboard of system prompts or models",
        op="leaderboard",
    )

    tree.command(
        "export",
        cmd_export,
        "write preference data: trl (prompt/chosen/rejected pairs), hh, or jsonl rankings",
        op="export",
    )

    tree.group("import", "import preference data", dest="kind")
    tree.command(
        "hh",
        cmd_import_hh,
        "import HH-RLHF-format JSONL, plain or .gz (chosen/rejected transcripts; unreadable lines skipped)",
        "import",
        op="import.hh",
        opts={"file": POSITIONAL},
        skip={"source_ref": "the file's path"},
    )
