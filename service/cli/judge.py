"""`rankloop judge` and `rankloop judge-templates`: model judges rank through the annotation queue.

A reward-model judge scores in this process; a generative judge asks a vLLM server (one this
command starts for `--model DIR`, or one already running at `--endpoint URL`). The judge's
rankings go through the queue and submit path of the service when one runs, else of the
database here.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from annotator import simulate_run
from service.cli.client import connect, show_table
from service.control.judges import GenerativeJudge, RewardJudge, run_judge
from service.core.discovery import admin_key
from service.core.errors import UserError
from service.core.settings import Settings
from service.engine.server import start_server


def cmd_judge(args: argparse.Namespace, settings: Settings) -> None:
    given = [a for a in ("reward_model", "model", "endpoint") if getattr(args, a) is not None]
    if len(given) != 1:
        raise UserError("name one judge: --reward-model ID, --model DIR or --endpoint URL")
    server = None
    with connect(settings) as c:
        try:
            if args.reward_model is not None:
                model = c.call("models.show", model_id=args.reward_model)
                if model["kind"] != "reward":
                    raise UserError(
                        f"model {args.reward_model} is a {model['kind']} model; --reward-model wants "
                        "a reward model (`rankloop models list --kind reward`)"
                    )
                name = args.name or f"judge-reward-{args.reward_model}"
                judge = RewardJudge(model["path"])
                profile = {"kind": "reward", "model_id": args.reward_model, "path": model["path"]}
            else:
                tpl = c.call("judge_templates.get", name=args.template)
                if args.model:
                    server = start_server(Path(args.model), settings.vllm, settings.paths.logs)
                    base_url, served = server.base_url, server.served_name
                else:
                    base_url, served = args.endpoint, args.served_name
                name = args.name or f"judge-{served}"
                judge = GenerativeJudge(
                    base_url,
                    served,
                    tpl,
                    api_key=args.api_key,
                    retries=args.retries,
                    seed=args.seed,
                    name=name,
                )
                judge.check()  # a judge that does not answer is refused before anything is stored
                profile = {
                    "kind": "generative",
                    "model": args.model or args.endpoint,
                    "served_name": served,
                    "template": f"{tpl['name']} v{tpl['version']}",
                    "retries": args.retries,
                }
            c.call("judges.ensure", name=name, profile=profile)
            queue = (
                simulate_run.HttpQueue(c.url, admin_key(settings))
                if c.remote
                else simulate_run.LocalQueue(c.ctx.store, settings.annotation)
            )
            report = run_judge(queue, name, judge, args.max_tasks)
        finally:
            if server is not None:
                server.stop()
    print(f"judge {name!r}: ranked {report.ranked} tasks, skipped {report.skipped}")
    if report.ranked and report.chance_top_first:
        print(
            f"  its best pick was the candidate shown first in {report.top_shown_first} of {report.ranked} "
            f"rankings ({report.top_shown_first / report.ranked:.0%}; {report.chance_top_first:.0%} without "
            "position bias)"
        )
    for reason in report.skip_reasons[:5]:
        print(f"  skipped: {reason[:300]}")


def cmd_templates_add(args: argparse.Namespace, settings: Settings) -> None:
    show_table(settings, "judge_templates.add", ["name", "version", "change"], file=args.file)


def cmd_templates_list(args: argparse.Namespace, settings: Settings) -> None:
    show_table(settings, "judge_templates.list", ["name", "version", "text", "created_at"])


def add_parsers(sub, add: Callable[..., argparse.ArgumentParser]) -> None:
    p = add(
        "judge", cmd_judge, "a model ranks the open tasks through the queue, as an annotator of role judge"
    )
    p.add_argument(
        "--reward-model", type=int, default=None, metavar="ID", help="rank by this reward model's scores"
    )
    p.add_argument(
        "--model", default=None, metavar="DIR", help="serve this chat model with vLLM and ask it to rank"
    )
    p.add_argument(
        "--endpoint", default=None, metavar="URL", help="an OpenAI-compatible server to ask (…/v1)"
    )
    p.add_argument("--served-name", default="judge", help="the model name at --endpoint")
    p.add_argument("--api-key", default="rankloop", help="key for --endpoint")
    p.add_argument("--template", default="rank", help="judge template name (default: the built-in 'rank')")
    p.add_argument(
        "--retries", type=int, default=2, help="asks again when an answer does not parse (default 2)"
    )
    p.add_argument("--name", default=None, help="the judge's account name (default from the model)")
    p.add_argument("--max-tasks", type=int, default=None, help="stop after N tasks")
    p.add_argument("--seed", type=int, default=0, help="seed of the candidate shuffles")
    templates = sub.add_parser("judge-templates", help="versioned judge templates").add_subparsers(
        dest="action", required=True
    )
    p = add(
        "add",
        cmd_templates_add,
        "add templates from a YAML mapping name: text with {conversation} and "
        "{candidates} (and optionally {k}); new text under a name is a new version",
        templates,
    )
    p.add_argument("file", type=Path)
    add("list", cmd_templates_list, "list every judge template version", templates)
