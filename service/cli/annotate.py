"""`rankloop` commands of the annotation stage: serve, annotators, annotate-sim, gold, leaderboard,
export, import.

Each goes through `service.cli.client`: the running service's admin API when `rankloop
serve` holds the data directory, else the database in this process.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Callable
from pathlib import Path

from annotator import simulate_run
from annotator.simulated import Profile
from service.cli.client import connect
from service.cli.output import print_table
from service.core.discovery import admin_key
from service.core.errors import UserError
from service.core.settings import Settings


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    from service.web.serve import serve  # the web layer only loads to serve

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    serve(settings.model_copy(update=overrides))


def _password(args: argparse.Namespace) -> str | None:
    if args.role not in ("annotator", "admin"):
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
        c.call("annotators.add", name=args.name, role=args.role, password=password)
    print(f"added {args.role} {args.name!r}")


def cmd_annotators_list(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        print_table(c.call("annotators.list"), ["id", "name", "role", "disabled", "rankings", "created_at"])


def cmd_annotators_disable(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        c.call("annotators.disable", name=args.name)
    print(f"disabled {args.name!r}: it can no longer log in or submit")


def cmd_annotators_logout(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        c.call("annotators.logout", name=args.name)
    print(f"logged {args.name!r} out everywhere: its API tokens and app sessions no longer count")


def cmd_annotate_sim(args: argparse.Namespace, settings: Settings) -> None:
    if args.annotators < 0 or args.unreliable < 0 or args.annotators + args.unreliable == 0:
        raise UserError("--annotators and --unreliable must be >= 0, and at least one annotator is needed")
    wanted = simulate_run.default_profiles(args.annotators, args.noise, args.unreliable, args.position_bias)
    with connect(settings) as c:
        profiles = c.call("simulated.ensure", profiles=wanted)
        profiles = {name: Profile.model_validate(p) for name, p in profiles.items()}
        # They rank through the annotation path itself: the service's JSON API, or the queue here.
        queue = (
            simulate_run.HttpQueue(c.url, admin_key(settings))
            if c.remote
            else simulate_run.LocalQueue(c.ctx.store, settings.annotation)
        )
        report = simulate_run.run(queue, profiles, seed=args.seed, max_per_annotator=args.max_per_annotator)
    for name, n in report.rankings.items():
        print(f"  {name}: {n} rankings")
    print(f"simulated annotators stored {report.total} rankings")


def cmd_tasks_gold(args: argparse.Namespace, settings: Settings) -> None:
    try:
        ranks = [int(x) for x in args.ranks.split(",")]
    except ValueError:
        raise UserError(
            f"--ranks {args.ranks!r}: expected comma-separated integers such as 1,2,2,3"
        ) from None
    with connect(settings) as c:
        c.call("tasks.gold", task_id=args.task_id, ranks=ranks)
    print(f"task {args.task_id} is a gold task with ranks {ranks}")


def cmd_leaderboard(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        print_table(
            c.call("leaderboard", by=args.by),
            ["arm", "score", "ci_low", "ci_high", "comparisons", "win_rate"],
        )


def cmd_export(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        n = c.call("export", format=args.format, out=args.out)["rows"]
    print(f"wrote {n} rows to {args.out} ({args.format})")


def cmd_import_hh(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("import.hh", file=args.file, source_ref=str(args.file))
    print(
        f"imported {r['added']} preference pairs from {args.file}"
        + (f" ({r['skipped']} already imported)" if r["skipped"] else "")
    )


def add_parsers(sub, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "serve", cmd_serve, "run the service: annotator app at /annotate, JSON API, /admin (holds the data)"
    )
    p.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000; 0 = any free port)")

    ann = sub.add_parser("annotators", help="annotator accounts").add_subparsers(dest="action", required=True)
    p = add("add", cmd_annotators_add, "add an account (password prompted, or one line on stdin)", ann)
    p.add_argument("name", help="login name")
    p.add_argument("--role", default="annotator", choices=["annotator", "admin"], help="default annotator")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add("list", cmd_annotators_list, "list accounts", ann)
    p = add("disable", cmd_annotators_disable, "disable an account (it keeps its rankings)", ann)
    p.add_argument("name")
    p = add(
        "logout", cmd_annotators_logout, "end every login of an account (API tokens and app sessions)", ann
    )
    p.add_argument("name")

    p = add(
        "annotate-sim", cmd_annotate_sim, "simulated annotators with a known preference rank the open queue"
    )
    p.add_argument("--annotators", type=int, default=3, help="reliable simulated annotators (default 3)")
    p.add_argument("--noise", type=float, default=0.3, help="Bradley-Terry temperature (default 0.3)")
    p.add_argument("--unreliable", type=int, default=0, help="extra annotators that rank at random")
    p.add_argument("--position-bias", type=float, default=0.0, help="preference for candidates shown first")
    p.add_argument("--max-per-annotator", type=int, default=None, help="stop each annotator after N tasks")
    p.add_argument("--seed", type=int, default=0)

    tasks = sub.add_parser("tasks", help="ranking tasks").add_subparsers(dest="action", required=True)
    p = add("gold", cmd_tasks_gold, "mark a task as gold with its correct ranking", tasks)
    p.add_argument("task_id", type=int)
    p.add_argument("--ranks", required=True, help="ranks in display order, e.g. 1,2,2,3")

    p = add("leaderboard", cmd_leaderboard, "Bradley-Terry leaderboard of system prompts or models")
    p.add_argument("--by", default="system_prompt", choices=["system_prompt", "model"])

    p = add(
        "export",
        cmd_export,
        "write preference data: trl (prompt/chosen/rejected pairs), hh, or jsonl rankings",
    )
    p.add_argument("--format", required=True, choices=["trl", "hh", "jsonl"])
    p.add_argument("--out", required=True, type=Path)

    imp = sub.add_parser("import", help="import preference data").add_subparsers(dest="kind", required=True)
    p = add("hh", cmd_import_hh, "import HH-RLHF-format JSONL (chosen/rejected transcripts)", imp)
    p.add_argument("file", type=Path)
