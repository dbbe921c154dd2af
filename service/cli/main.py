"""The `rankloop` command.

    rankloop init
    rankloop prompts add examples/prompts.jsonl
    rankloop system-prompts add examples/system_prompts.yaml
    rankloop sample --model DIR --k 4 [--system-prompt NAME ...]   # a job; Ctrl-C leaves it running
    rankloop jobs list | follow ID | cancel ID
    rankloop models list | show ID
    rankloop status
    rankloop serve                   # annotator app at /annotate, JSON API, /admin, OpenAI API at /v1
    rankloop annotators add NAME --role annotator|admin
    rankloop annotate-sim --annotators 3 --noise 0.3 [--unreliable 1]
    rankloop judge --reward-model ID | --model DIR | --endpoint URL [--template NAME]
    rankloop export --format trl|hh|jsonl --out FILE
    rankloop import hh FILE
    rankloop snapshot [--exclude-flagged] [--min-gold-agreement X] [--exclude-annotator NAME ...]
    rankloop train reward [--config FILE] [--mode listwise|pairwise]
    rankloop models promote ID --reason TEXT
    rankloop train policy --method sft|dpo|grpo|rloo [--config FILE]
    rankloop evaluate policy ID [--against ID] [--human N] [--judge reward|hidden]
    rankloop prioritize
    rankloop keys create NAME [--scope client|admin] [--rpm N] [--tpm N] | list | revoke NAME
    rankloop deploy MODEL_ID [--canary PCT] [--replicas N] | deploy promote | rollback | routes
    rankloop demo

Every command takes `--data DIR` (default ./rankloop-data, env RANKLOOP_DATA) and
`--config FILE` (YAML settings). While `rankloop serve` holds the data directory, every
command goes through its admin API (same output, errors and exit codes); otherwise it
opens the database itself. Errors a user can fix print one message and exit 2; a failed
operation exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.cli.annotate import add_parsers as add_annotation_parsers
from service.cli.client import connect, follow, show_table
from service.cli.evaluate import add_parsers as add_evaluate_parsers
from service.cli.judge import add_parsers as add_judge_parsers
from service.cli.loop import add_parsers as add_loop_parsers
from service.cli.output import print_table, report_job
from service.cli.policy import add_parsers as add_policy_parsers
from service.cli.reward import add_parsers as add_reward_parsers
from service.cli.serving import add_parsers as add_serving_parsers
from service.cli.serving import add_prompt_parsers
from service.cli.vllm_flags import add_vllm_flags, job_vllm, vllm_overrides
from service.core.errors import CommandFailed, describe, exit_code
from service.core.settings import Settings, load_settings
from service.core.store import Store

# -- commands ---------------------------------------------------------------


def cmd_init(args: argparse.Namespace, settings: Settings) -> None:
    existed = settings.paths.db.exists()
    with Store.open(settings.paths.db) as store:
        version = store.schema_version()
    print(f"{'opened' if existed else 'created'} {settings.paths.db} (schema version {version})")


def cmd_prompts_add(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("prompts.add", file=args.file, source=args.source, source_ref=str(args.file))
    print(
        f"added {r['added']} prompts from {args.file}"
        + (f" ({r['skipped']} already stored, skipped)" if r["skipped"] else "")
    )


def cmd_system_prompts_add(args: argparse.Namespace, settings: Settings) -> None:
    show_table(settings, "system_prompts.add", ["name", "version", "change"], file=args.file)


def cmd_system_prompts_list(args: argparse.Namespace, settings: Settings) -> None:
    show_table(settings, "system_prompts.list", ["name", "version", "text", "created_at"])


def cmd_sample(args: argparse.Namespace, settings: Settings) -> None:
    config = {
        "models": args.model,
        "k": args.k,
        "system_prompts": args.system_prompt,
        "params": {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p},
        "task_size": args.task_size,
        "mix": args.mix,
        "rankings_per_task": args.rankings_per_task,
        "seed": args.seed,
        "concurrency": args.concurrency,
    }
    config.update(job_vllm(args, settings))
    with connect(settings) as c:
        job_id = c.call("sample", **config)["job_id"]
        where = "in the service" if c.remote else "here"
        print(f"job {job_id}: sampling {', '.join(map(str, args.model))} ({where})")
        report_job(follow(c, job_id, "sampling"))


MODEL_COLUMNS = ["id", "kind", "name", "status", "parent_id", "snapshot_id", "path", "created_at"]


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        print_table(c.call("models.list", kind=args.kind), MODEL_COLUMNS)


def cmd_status(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        counts = c.call("status")
    version = counts.pop("schema_version")
    counts.pop("data_dir", None)
    routes, note = counts.pop("routes", None), counts.pop("note", None)
    if args.json:
        print(
            json.dumps(
                {"data_dir": str(settings.data_dir), "schema_version": version, **counts, "routes": routes}
            )
        )
        return
    print(f"data directory {settings.data_dir} (schema version {version})")
    for name, n in counts.items():
        print(f"  {name:15} {n}")
    print(
        f"  {'routes':15} {json.dumps(routes) if routes else 'nothing deployed'}"
        + (f" ({note})" if note else "")
    )


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        rows = c.call("jobs.list")
    for r in rows:
        r["error"] = (r["error"] or "").split("\n")[0][:80]
    print_table(rows, ["id", "kind", "status", "progress", "result_model_id", "error", "created_at"])


def cmd_jobs_follow(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        job = c.call("jobs.show", job_id=args.id)
        report_job(follow(c, args.id, job["kind"]))


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        job = c.call("jobs.cancel", job_id=args.id)
    print(f"job {args.id} {job['status']}: {job['error']}")


# -- parser -----------------------------------------------------------------


def _common(with_config: bool = True) -> argparse.ArgumentParser:
    """--data/--config, accepted before or after the subcommand."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "--data",
        default=argparse.SUPPRESS,
        help="data directory (default ./rankloop-data, env RANKLOOP_DATA)",
    )
    if with_config:
        p.add_argument("--config", default=argparse.SUPPRESS, help="YAML settings file (env RANKLOOP_CONFIG)")
    return p


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    data_only = _common(with_config=False)
    ap = argparse.ArgumentParser(
        prog="rankloop",
        description=__doc__,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, fn: Callable, help: str, parent=sub, settings_flag: bool = True
    ) -> argparse.ArgumentParser:
        # settings_flag=False: the command's own --config means something else (a job's config);
        # settings then come from `rankloop --config FILE COMMAND` or RANKLOOP_CONFIG.
        p = parent.add_parser(
            name, parents=[common if settings_flag else data_only], help=help, description=help
        )
        p.set_defaults(fn=fn)
        return p

    add("init", cmd_init, "create the data directory and database (or upgrade an existing one)")

    prompts = sub.add_parser("prompts", help="manage prompts").add_subparsers(dest="action", required=True)
    p = add(
        "add",
        cmd_prompts_add,
        "add prompts from JSONL (`prompt` field), CSV (`prompt` column) "
        "or a text file (one per line); a file with any bad row is rejected whole",
        prompts,
    )
    p.add_argument("file", type=Path, help="the prompt file")
    p.add_argument(
        "--source", default="seed", choices=["seed", "import"], help="recorded origin (default seed)"
    )
    add_prompt_parsers(prompts, add)

    sps = sub.add_parser("system-prompts", help="manage versioned system prompts").add_subparsers(
        dest="action", required=True
    )
    p = add(
        "add",
        cmd_system_prompts_add,
        "add system prompts from a YAML mapping name: text; "
        "new text under an existing name becomes a new version",
        sps,
    )
    p.add_argument("file", type=Path, help="the YAML file")
    add("list", cmd_system_prompts_list, "list every system prompt version", sps)

    p = add(
        "sample",
        cmd_sample,
        "serve each model with vLLM, sample K responses per prompt and system "
        "prompt, store them and build ranking tasks; rerunning fills in only what is missing",
    )
    p.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="DIR",
        help="Hugging Face model directory (repeat for several models)",
    )
    p.add_argument("--k", type=int, default=4, help="samples per prompt and system prompt, 1..16 (default 4)")
    p.add_argument(
        "--system-prompt",
        action="append",
        metavar="NAME",
        help="system prompt name (repeat; default all; 'none' for no system prompt)",
    )
    p.add_argument("--max-tokens", type=int, default=64, help="most tokens per response (default 64)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (default 1.0)")
    p.add_argument(
        "--task-size", type=int, default=None, help="candidates per ranking task, 2..8 (default K)"
    )
    p.add_argument(
        "--mix",
        action="append",
        metavar="NAME=WEIGHT",
        help="weight of a system prompt among a task's candidates (default equal)",
    )
    p.add_argument(
        "--rankings-per-task", type=int, default=1, help="rankings each task needs (overlap; default 1)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for task composition and order")
    p.add_argument("--concurrency", type=int, default=256, help="requests in flight at once (default 256)")
    add_vllm_flags(p)

    models = sub.add_parser("models", help="the model registry").add_subparsers(dest="action", required=True)
    add_policy_parsers(add_reward_parsers(sub, add, models), add)
    p = add("list", cmd_models_list, "list registered models", models)
    p.add_argument(
        "--kind", choices=["pretrained", "sft", "reward", "policy", "external"], help="only this kind"
    )
    add_evaluate_parsers(sub, add, models)

    jobs = sub.add_parser("jobs", help="long work: sampling and training").add_subparsers(
        dest="action", required=True
    )
    add("list", cmd_jobs_list, "list jobs with their status", jobs)
    p = add("follow", cmd_jobs_follow, "show a job's progress until it ends", jobs)
    p.add_argument("id", type=int, help="job id")
    p = add("cancel", cmd_jobs_cancel, "stop a job; what it stored stays", jobs)
    p.add_argument("id", type=int, help="job id")

    p = add("status", cmd_status, "counts of everything in the data directory")
    p.add_argument("--json", action="store_true", help="print JSON")

    add_annotation_parsers(sub, add)
    add_judge_parsers(sub, add)
    add_serving_parsers(sub, add)

    add_loop_parsers(sub, add)
    return ap


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {"data_dir": getattr(args, "data", None)}
    vllm = vllm_overrides(args)
    if vllm:
        overrides["vllm"] = vllm
    return load_settings(getattr(args, "config", None), overrides)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        args.fn(args, settings)
    except KeyboardInterrupt:
        print(f"rankloop {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        code = e.code if isinstance(e, CommandFailed) else exit_code(e)
        if code is None:
            raise  # a bug: the traceback helps
        print(
            f"rankloop {args.command}: {'error' if code == 2 else 'failed'}: {describe(e)}", file=sys.stderr
        )
        return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
