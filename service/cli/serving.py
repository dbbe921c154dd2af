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
from collections.abc import Callable

from service.cli.client import connect
from service.cli.output import print_table
from service.core.errors import UserError
from service.core.settings import Settings


def cmd_keys_create(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call(
            "keys.create",
            name=args.name,
            scope=args.scope,
            rpm=args.rpm,
            tpm=args.tpm,
            log_traffic=args.log_traffic,
        )
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
        c.call("keys.revoke", name=args.name)
    print(f"key {args.name} revoked")


def _arms(items: list[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    arms = {}
    for item in items:
        name, _, weight = item.partition("=")
        try:
            arms[name] = float(weight or 1)
        except ValueError:
            raise UserError(f"--system-prompt {item!r}: write NAME or NAME=WEIGHT with a number") from None
    return arms


def _print_routes(r: dict) -> None:
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
        _print_routes(
            c.call(
                "deploy",
                model_id=model_id,
                canary=args.canary,
                replicas=args.replicas,
                endpoint=args.endpoint,
                endpoint_key=args.endpoint_key,
                system_prompts=_arms(args.system_prompt),
                force=args.force,
            )
        )


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        _print_routes(c.call("rollback"))


def cmd_routes(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        _print_routes(c.call("routes"))


def cmd_prompts_from_traffic(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("prompts.from_traffic", since=args.since, min_count=args.min_count)
    print(
        f"{r['added']} prompts from served traffic added to the pool ({r['chosen']} of {r['logged_prompts']} "
        f"logged prompts asked at least {args.min_count} times; {r['already_stored']} already stored)"
    )


def add_prompt_parsers(prompts, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "from-traffic",
        cmd_prompts_from_traffic,
        "move prompts clients asked (logged traffic) into the pool, "
        "deduplicated, so the next sampling round covers them",
        prompts,
    )
    p.add_argument("--since", default=None, metavar="DATE", help="only traffic since then (ISO date or time)")
    p.add_argument("--min-count", type=int, default=1, help="only prompts asked at least N times (default 1)")


def add_parsers(sub, add: Callable[..., argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="API keys for the OpenAI-compatible gateway").add_subparsers(
        dest="action", required=True
    )
    p = add("create", cmd_keys_create, "make a key; it is printed once, only its hash is stored", keys)
    p.add_argument("name", help="who the key is for")
    p.add_argument(
        "--scope", default="client", choices=["client", "admin"], help="client: /v1; admin: also /admin"
    )
    p.add_argument("--rpm", type=int, default=None, help="requests per minute (default: no limit)")
    p.add_argument("--tpm", type=int, default=None, help="tokens per minute (default: no limit)")
    p.add_argument("--log-traffic", action="store_true", help="store this key's requests and responses")
    add("list", cmd_keys_list, "keys with their usage (never the keys themselves)", keys)
    p = add("revoke", cmd_keys_revoke, "revoke a key at once", keys)
    p.add_argument("name")

    p = add(
        "deploy",
        cmd_deploy,
        "serve a registered model as the route `current` (blue/green: the old one "
        "serves until the new one generates), or `deploy promote` a canary",
    )
    p.add_argument(
        "model", metavar="MODEL_ID|promote", help="a model id, or 'promote' to give the canary all traffic"
    )
    p.add_argument(
        "--canary", type=float, default=None, metavar="PCT", help="send only PCT%% of traffic to it"
    )
    p.add_argument("--replicas", type=int, default=1, help="vLLM servers for the model (default 1)")
    p.add_argument(
        "--endpoint", default=None, metavar="URL", help="a vLLM server elsewhere that serves the model"
    )
    p.add_argument("--endpoint-key", default=None, metavar="KEY", help="that server's API key")
    p.add_argument(
        "--system-prompt",
        action="append",
        metavar="NAME[=WEIGHT]",
        help="split traffic across stored system prompts (repeat)",
    )
    p.add_argument("--force", action="store_true", help="deploy a model that is not approved")
    add("rollback", cmd_rollback, "drop the canary, else serve the model deployed before the current one")
    add("routes", cmd_routes, "what the gateway serves, replica by replica")
