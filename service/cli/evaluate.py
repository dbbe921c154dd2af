"""`rankloop evaluate policy ID [--against ID] [--human N]` and `rankloop models show ID`: how a
policy compares with a baseline, whether it passed the gate, and where it came from.

    rankloop evaluate policy 7                         # against the active policy, else its parent
    rankloop evaluate policy 7 --against 3 --judge hidden --human 20
    rankloop models show 7                             # lineage, data, reward model, evaluations
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from reward.configfile import read_yaml
from service.cli.client import Client, connect, follow
from service.cli.flags import Opt, add_model_flags, flag_values
from service.cli.output import print_table
from service.cli.tree import CommandTree, op_params
from service.cli.vllm_flags import add_vllm_flags, job_vllm
from service.core.enums import JobStatus
from service.core.errors import CommandFailed
from service.core.settings import LaunchOptions, Settings
from service.jobs.runner import KINDS

EVALUATE = KINDS["evaluate"].config  # the evaluate job's config: its flags follow it


def _range(ci: list[float]) -> str:
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


# A reward model the policy was trained against: its figures are the proxy's own, not a verdict.
SELF_JUDGED = {
    "judge": "reward (trained against it: proxy only)",
    "win_rate": "-",
    "95% CI": "not a fair judge",
    "LC win rate": "-",
    "LC 95% CI": "-",
    "similar length": "-",
}


def _similar(figure: dict | None) -> str:
    """The win rate on pairs of similar length: rate, interval, how many, within what."""
    if not figure:
        return "-"
    if not figure["n"]:
        return f"no pairs within {figure['tolerance']:.0%}"
    return f"{figure['win_rate']:.3f} ({_range(figure['ci'])}, n={figure['n']}, within {figure['tolerance']:.0%})"


def print_evaluation(ev: dict) -> None:
    print(
        f"  job {ev['job_id']}: against #{ev['baseline']} {ev['baseline_name']} on {ev['comparisons']} comparisons "
        f"({ev['prompts']} held-out prompts x {', '.join(ev['system_prompts'])}); gate judge: {ev['judge']}"
    )
    left = {
        "in the SFT data behind the models": ev.get("prompts_left_out_as_trained_on"),
        "of the prompt file in a training pool": ev.get("prompts_left_out_of_file"),
    }
    if any(left.values()):
        print("  left out as not held out: " + ", ".join(f"{n} {why}" for why, n in left.items() if n))
    print_table(
        [
            {
                "judge": name,
                "win_rate": f"{j['win_rate']:.3f}",
                "95% CI": _range(j["ci"]),
                "LC win rate": f"{j['lc_win_rate']:.3f}",
                "LC 95% CI": _range(j["lc_ci"]),
                "similar length": _similar(j.get("similar_length")),
                "mean score": f"{j['mean_candidate']:.3f} vs {j['mean_baseline']:.3f}",
                **(SELF_JUDGED if j.get("trained_against") else {}),  # last: it replaces the figures
            }
            for name, j in ev["judges"].items()
        ],
        ["judge", "win_rate", "95% CI", "LC win rate", "LC 95% CI", "similar length", "mean score"],
    )
    kl = ev.get("kl") or {}
    if "estimate" not in kl:
        kl_text = f"KL not estimated: {kl.get('skipped', 'no reference')}"
    elif kl.get("note") or "ci" not in kl:  # an interval reaching 0 (or an evaluation from before intervals)
        kl_text = f"KL to the reference: {kl.get('note', 'recorded without an interval')} (estimate {kl['estimate']:.2f})"
    else:
        kl_text = (
            f"KL to the reference {kl['estimate']:.2f} nats (95% CI {_range(kl['ci'])}; "
            f"{kl['per_token']:.3f} per token, on the {kl.get('token_ids', 'sampled')} token ids)"
        )
    print(
        f"  length {ev['length']['candidate_words']:.1f} vs {ev['length']['baseline_words']:.1f} words; {kl_text}"
    )


def _snapshot_line(s: dict) -> str:
    if s.get("missing"):
        return f"snapshot {s['id']} (no longer in the registry)"
    names = s.get("annotator_names")
    return (
        f"snapshot {s['id']}: {s['rankings']} rankings ({s['train_rankings']} train / {s['eval_rankings']} eval) "
        f"of {s['prompts']} prompts by {s['annotators']} annotators"
        + (f" ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''})" if names else "")
        + (f"; system prompts {', '.join(s['system_prompts'])}" if s.get("system_prompts") else "")
    )


def cmd_models_show(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        model = c.call("models.show", **op_params(args, "models.show"))
    print(f"model #{model['id']} {model['name']} ({model['kind']}, {model['status']}): {model['path']}")
    if model.get("status_reason"):
        print(f"  {model['status_reason']}")
    print("lineage (the model, then what it was trained from):")
    print_table(model["lineage"], ["depth", "id", "kind", "name", "status", "snapshot_id", "path"])
    for s in model.get("snapshots", []):
        print(f"data: {_snapshot_line(s)}")
    rm = model.get("reward_model")
    if rm:
        print(
            f"reward model ({rm['role']}): #{rm['id']} {rm['name']} ({rm['status']})"
            + (f", trained on {_snapshot_line(rm['snapshot'])}" if rm.get("snapshot") else "")
        )
    if model.get("evaluations"):
        print("evaluations:")
        for ev in model["evaluations"]:
            print_evaluation(ev)


def evaluate(c: Client, config: dict[str, Any], launch: dict[str, Any] | None = None) -> None:
    """Start an evaluate job, follow it, print its figures and the gate's decision."""
    job_id = c.call("jobs.start", kind="evaluate", config=config, launch=launch or {})["job_id"]
    cfg = c.call("jobs.show", job_id=job_id)["config"]
    print(
        f"job {job_id}: model #{cfg['candidate']} against #{cfg['baseline']} on held-out prompts"
        + (" (in the service)" if c.remote else "")
    )
    job = follow(c, job_id, "evaluating")
    if job["status"] != JobStatus.SUCCEEDED:
        raise CommandFailed(f"job {job['id']} {job['status']}: {job['error']}", 1)
    model = c.call("models.show", model_id=cfg["candidate"])
    ev = next(e for e in reversed(model["evaluations"]) if e["job_id"] == job_id)
    print(f"job {job_id} succeeded: model #{model['id']} {model['name']} is {model['status']}")
    print_evaluation(ev)
    print(f"  gate {job['result']['gate']}: {job['result']['reason']}")
    if job["result"]["prompts_left_out_of_file"]:
        print(
            f"  {job['result']['prompts_left_out_of_file']} prompts of the file were left out: they are stored "
            "for training, so they are not held out"
        )
    if job["result"]["human_tasks"]:
        print(
            f"  {job['result']['human_tasks']} blind pairwise tasks are in the annotation queue; "
            "`rankloop leaderboard --by model` ranks the model versions from them"
        )


def cmd_evaluate_policy(args: argparse.Namespace, settings: Settings) -> None:
    config = read_yaml(args.job_config) if args.job_config else {}
    config.update({**flag_values(args, EVALUATE), **job_vllm(args, settings)})
    with connect(settings) as c:
        evaluate(c, config, flag_values(args, LaunchOptions))


def _resolved(path: Path) -> str:
    return str(path.resolve())  # the job may run in the service, in another working directory


def add_parsers(tree: CommandTree) -> None:
    tree.command(
        "show",
        cmd_models_show,
        "a model: its lineage, data, reward model and evaluations",
        "models",
        op="models.show",
        opts={"model_id": Opt(positional=True, metavar="id")},
    )
    tree.group("evaluate", "evaluate a model", dest="kind")
    p = tree.command(
        "policy",
        cmd_evaluate_policy,
        "a policy against a baseline on held-out prompts, then the gate (a job)",
        "evaluate",
        settings_flag=False,
    )
    add_model_flags(
        p,
        EVALUATE,
        only=(
            "candidate",
            "baseline",
            "human",
            "judge",
            "prompt_file",
            "samples",
            "max_prompts",
            "min_prompts",
            "reward_model",
            "gate",
        ),
        opts={
            "candidate": Opt(positional=True, metavar="id"),
            "baseline": Opt(flag="--against", metavar="ID"),
            "human": Opt(metavar="N"),
            "prompt_file": Opt(flag="--prompts", metavar="FILE", convert=_resolved),
            "reward_model": Opt(metavar="ID"),
        },
        overrides=True,
    )
    p.add_argument("--config", dest="job_config", metavar="FILE", help="YAML with the evaluate job's fields")
    add_vllm_flags(p)
    add_model_flags(p.add_argument_group("where its vLLM servers and scoring run"), LaunchOptions, record=p)
