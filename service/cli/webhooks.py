"""`rankloop webhooks`: endpoints told when something happens (service/control/webhooks.py).

rankloop webhooks add URL [--event job.finished --event model.promoted ...]   # prints the secret once
rankloop webhooks list | remove ID
rankloop webhooks deliveries [--webhook-id ID] [--status pending|delivered|failed] [--limit N]
"""

from __future__ import annotations

import argparse

from service.cli.client import connect
from service.cli.flags import POSITIONAL, Opt
from service.cli.output import print_table
from service.cli.tree import CommandTree, op_params
from service.core.settings import Settings
from service.data.events import EVENTS


def cmd_add(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("webhooks.add", **op_params(args, "webhooks.add"))
    print(
        f"webhook {r['id']} sends {', '.join(r['events'])} to {r['url']}\n"
        f"  signing secret: {r['secret']}\n  shown once: check each delivery's webhook-signature with it "
        "(Standard Webhooks; e.g. the `standardwebhooks` package)"
    )


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        rows = c.call("webhooks.list")
    print_table(rows, ["id", "url", "events", "active", "delivered", "pending", "failed", "created_at"])


def cmd_remove(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        c.call("webhooks.remove", **op_params(args, "webhooks.remove"))
    print(f"webhook {args.webhook_id} removed (its delivery log stays)")


def cmd_deliveries(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        rows = c.call("webhooks.deliveries", **op_params(args, "webhooks.deliveries"))
    print_table(
        rows, ["id", "webhook_id", "event", "status", "attempts", "last_status", "last_error", "created_at"]
    )


def add_parsers(tree: CommandTree) -> None:
    tree.group(
        "webhooks",
        "endpoints told (signed, retried) when rankings, tasks, jobs, models or deployments change",
    )
    tree.command(
        "add",
        cmd_add,
        "send events to a URL",
        "webhooks",
        op="webhooks.add",
        opts={
            "url": POSITIONAL,
            "events": Opt(flag="--event", metavar="EVENT", choices=list(EVENTS), repeat=True),
        },
    )
    tree.command("list", cmd_list, "webhooks and their deliveries by status", "webhooks", op="webhooks.list")
    tree.command(
        "remove",
        cmd_remove,
        "stop sending to a webhook",
        "webhooks",
        op="webhooks.remove",
        opts={"webhook_id": POSITIONAL},
    )
    tree.command(
        "deliveries", cmd_deliveries, "the delivery log, newest first", "webhooks", op="webhooks.deliveries"
    )
