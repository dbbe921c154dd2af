"""`rankloop judge` and `rankloop judge-templates`: model judges rank through the annotation queue.

A reward-model judge scores in this process; a generative judge asks a vLLM server (one this
command starts for `--model DIR`, or one already running at `--endpoint URL`). The judge's
rankings go through the queue and submit path of the service when one runs, else of the
database here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from service.cli.client import annotation_queue, connect, show_table
from service.cli.flags import POSITIONAL, Opt, add_model_flags
from service.cli.tree import CommandTree
from service.control.judges import GenerativeJudge, RewardJudge, run_judge
from service.core.enums import ModelKind
from service.core.errors import UserError
from service.core.settings import Settings
from service.engine.server import VLLMServer, start_server


class JudgeRun(BaseModel):
    """`rankloop judge`: which model judges (one of the first three), and how."""

    reward_model: int | None = Field(None, description="rank by this reward model's scores")
    model: str | None = Field(None, description="serve this chat model with vLLM and ask it to rank")
    endpoint: str | None = Field(None, description="an OpenAI-compatible server to ask (…/v1)")
    served_name: str = Field("judge", description="the model name at --endpoint")
    api_key: str = Field("rankloop", description="key for --endpoint")
    template: str = Field("rank", description="judge template name (default: the built-in 'rank')")
    retries: int = Field(2, description="asks again when an answer does not parse")
    name: str | None = Field(None, description="the judge's account name (default from the model)")
    max_tasks: int | None = Field(None, description="stop after N tasks")
    seed: int = Field(0, description="seed of the candidate shuffles")


def cmd_judge(args: argparse.Namespace, settings: Settings) -> None:
    given = [a for a in ("reward_model", "model", "endpoint") if getattr(args, a) is not None]
    if len(given) != 1:
        raise UserError("name one judge: --reward-model ID, --model DIR or --endpoint URL")
    server: VLLMServer | None = None
    judge: RewardJudge | GenerativeJudge
    profile: dict[str, Any]
    with connect(settings) as c:
        try:
            if args.reward_model is not None:
                model = c.call("models.show", model_id=args.reward_model)
                if model["kind"] != ModelKind.REWARD:
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
            report = run_judge(annotation_queue(c, settings), name, judge, args.max_tasks)
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


def add_parsers(tree: CommandTree) -> None:
    p = tree.command(
        "judge", cmd_judge, "a model ranks the open tasks through the queue, as an annotator of role judge"
    )
    add_model_flags(
        p,
        JudgeRun,
        opts={
            "reward_model": Opt(metavar="ID"),
            "model": Opt(metavar="DIR"),
            "endpoint": Opt(metavar="URL"),
        },
    )
    tree.group("judge-templates", "versioned judge templates")
    tree.command(
        "add",
        cmd_templates_add,
        "add templates from a YAML mapping name: text with {conversation} and "
        "{candidates} (and optionally {k}); new text under a name is a new version",
        "judge-templates",
        op="judge_templates.add",
        opts={"file": POSITIONAL},
        skip={"source_ref": "not recorded for judge templates"},
    )
    tree.command(
        "list",
        cmd_templates_list,
        "list every judge template version",
        "judge-templates",
        op="judge_templates.list",
    )
