"""`rankloop` commands of the serving stage: keys, deploy, rollback, routes.

rankloop keys create NAME [--scope client|admin] [--rpm N] [--tpm N] [--log-traffic]
rankloop keys list | revoke NAME
rankloop deploy MODEL_ID [--canary PCT] [--replicas N] [--endpoint URL --endpoint-key KEY]
                [--system-prompt NAME=WEIGHT ...] [--force]
rankloop deploy promote          # the canary takes all traffic
rankloop rollback                # drop the canary, else serve the model deployed before
rankloop routes                  # what serves, replica by replica
rankloop prompts from-traffic [--since DATE] [--min-count N]
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from service.cli.client import connect
from service.cli.flags import POSITIONAL, Opt
from service.cli.output import print_table
from service.cli.tree import CommandTree, op_params
from service.core.errors import UserError
from service.core.settings import Settings


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("keys.create", **op_params(args, "keys.create"))
    print(f"key {r['name']} ({r['scope']}): {r['key']}\n  shown once: only its hash is stored")


def cmd_keys_list(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        print_table(
            c.call("keys.list"),
            [
                "name",
                "prefix",
                "scope",
                "rpm",
                "tpm",
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "last_used_at",
                "revoked",
            ],
        )


def cmd_keys_revoke(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        c.call("keys.revoke", **op_params(args, "keys.revoke"))
    print(f"key {args.name} revoked")


def _arms(items: list[str]) -> dict[str, float]:
    arms = {}
    for item in items:
        name, _, weight = item.partition("=")
        try:
            arms[name] = float(weight or 1)
        except ValueError:
            raise UserError(f"--system-prompt {item!r}: write NAME or NAME=WEIGHT with a number") from None
    return arms


def _print_routes(r: dict[str, Any]) -> None:
    print(json.dumps(r, indent=2, default=str))


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> None:
    if args.model == "promote":
        with connect(settings) as c:
            _print_routes(c.call("deploy.promote"))
        return
    try:
        model_id = int(args.model)
    except ValueError:
        raise UserError(
            f"deploy takes a registered model's id (`rankloop models list`) or 'promote', not {args.model!r}"
        ) from None
    with connect(settings) as c:
        _print_routes(c.call("deploy", model_id=model_id, **op_params(args, "deploy")))


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        _print_routes(c.call("rollback"))


def cmd_routes(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        _print_routes(c.call("routes"))


def cmd_prompts_from_traffic(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("prompts.from_traffic", **op_params(args, "prompts.from_traffic"))
    print(
        f"{r['added']} prompts from served traffic added to the pool ({r['chosen']} of {r['logged_prompts']} "
        f"logged prompts asked at least {args.min_count} times; {r['already_stored']} already stored)"
    )
    removed = r.get("personal_data_removed") or {}
    if removed:
        print(
            "personal data removed first: " + ", ".join(f"{n} {kind}" for kind, n in sorted(removed.items()))
        )


def add_prompt_parsers(tree: CommandTree) -> None:
    tree.command(
        "from-traffic",
        cmd_prompts_from_traffic,
        "move prompts clients asked (logged traffic) into the pool, "
        "deduplicated, so the next sampling round covers them",
        "prompts",
        op="prompts.from_traffic",
        opts={"since": Opt(metavar="DATE")},
    )


def add_parsers(tree: CommandTree) -> None:
    tree.group("keys", "API keys for the OpenAI-compatible gateway")
    tree.command(
        "create",
        cmd_keys_create,
        "make a key; it is printed once, only its hash is stored",
        "keys",
        op="keys.create",
        opts={"name": POSITIONAL},
    )
    tree.command(
        "list", cmd_keys_list, "keys with their usage (never the keys themselves)", "keys", op="keys.list"
    )
    tree.command(
        "revoke", cmd_keys_revoke, "revoke a key at once", "keys", op="keys.revoke", opts={"name": POSITIONAL}
    )

    p = tree.command(
        "deploy",
        cmd_deploy,
        "serve a registered model as the route `current` (blue/green: the old one "
        "serves until the new one generates), or `deploy promote` a canary",
        op="deploy",
        opts={
            "canary": Opt(metavar="PCT"),
            "endpoint": Opt(metavar="URL"),
            "endpoint_key": Opt(metavar="KEY"),
            "system_prompts": Opt(
                flag="--system-prompt", metavar="NAME[=WEIGHT]", type=str, repeat=True, convert=_arms
            ),
        },
        skip={"model_id": "the positional MODEL_ID|promote, which also takes `promote`"},
    )
    # Hand-written: it also takes the word `promote` (`rankloop deploy promote`).
    p.add_argument(
        "model", metavar="MODEL_ID|promote", help="a model id, or 'promote' to give the canary all traffic"
    )
    tree.command(
        "rollback",
        cmd_rollback,
        "drop the canary, else serve the model deployed before the current one",
        op="rollback",
    )
    tree.command("routes", cmd_routes, "what the gateway serves, replica by replica", op="routes")
