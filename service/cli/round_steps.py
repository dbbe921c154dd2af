"""One round of the loop, step by step, through the control plane (in this process, or in the
running service when there is one): sample with the serving model -> rankings (simulated
annotators, or people until a target) -> snapshot without the unreliable annotators -> reward
model -> policy -> evaluation against the sampled model through the gate -> deploy only a winner.

Shared by `rankloop demo` (one round) and `rankloop loop` (N rounds). Each step's result is
recorded on the round (service/data/rounds.py) before the next starts, so a round stopped by a
crash or Ctrl-C resumes at the step it was in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from annotator import simulate_run
from annotator.simulated import Preference, Profile
from service.cli.client import Client, annotation_queue, follow
from service.cli.output import print_table, report_job
from service.control.gold import GoldScores
from service.core.enums import JobStatus, ModelStatus
from service.core.errors import CommandFailed
from service.core.settings import Settings
from service.data.rounds import STEPS, next_step

PolicyMethod = Literal["dpo", "grpo", "rloo"]  # how a round trains its policy (offline, online RL)
Say = Callable[[str], None]


class RoundPlan(BaseModel):
    """How big each step is; the defaults are the demo's (see `rankloop demo --help`). `rankloop loop`
    takes some of them as flags."""

    k: int = Field(8, description="samples per prompt and system prompt")
    max_tokens: int = Field(48, description="most tokens per sampled response")
    rankings_per_task: int = Field(2, description="rankings per task (overlap, so agreement can be measured)")
    annotators: Literal["simulated", "people"] = Field(
        "simulated",
        description="who ranks: simulated annotators, or people in the app of a running service",
    )
    target_rankings: int = Field(0, description="people: rankings of the round's batch to wait for")
    reliable: int = Field(3, description="simulated annotators that share the hidden preference")
    unreliable: int = Field(1, description="simulated annotators that rank at random")
    noise: float = Field(0.3, description="the simulated annotators' Bradley-Terry temperature")
    gold_model: str | None = Field(
        None,
        description="simulated annotators rank by this gold reward model (a directory), and the evaluation "
        "judges by it, instead of the rule-based preference",
    )
    method: PolicyMethod = Field("dpo", description="how the policy is trained")
    reward: dict[str, Any] = Field(
        default_factory=lambda: {"epochs": 2, "batch_size": 8, "max_length": 256},
        description="reward job config fields",
    )
    policy: dict[str, Any] = Field(
        default_factory=lambda: {"max_steps": 60, "batch_size": 8, "max_length": 256},
        description="DPO job config fields",
    )
    rl: dict[str, Any] = Field(
        default_factory=lambda: {
            "max_steps": 80,
            "batch_size": 8,
            "num_generations": 4,
            "learning_rate": 1e-4,
            "max_length": 256,
        },
        description="GRPO and RLOO job config fields",
    )
    eval_fraction: float = Field(
        0.3,
        gt=0,
        lt=1,
        description="share of prompts the snapshot holds out (the tiny world has 72: 0.3 keeps 21 for evaluation)",
    )
    eval_samples: int = Field(8, description="evaluation: responses per prompt and system prompt")
    eval_prompts: int = Field(64, description="evaluation: at most this many held-out prompts")
    gate_min_prompts: int = Field(50, ge=1, description="held-out prompts the gate needs to decide")
    human_tasks: int = Field(8, description="blind policy-vs-baseline tasks left for people")
    seed: int = Field(0, description="seed of sampling order and simulated rankings")
    vllm: dict[str, Any] | None = Field(
        None, description="vLLM flags given on the command line, for the service's jobs too"
    )


# One step of a round: (client, settings, plan, the round's row, the model sampled when nothing is
# deployed, how to report) -> the values recorded on the round.
Step = Callable[[Client, Settings, RoundPlan, dict[str, Any], int, Say], dict[str, Any]]


def simulated_profiles(plan: RoundPlan) -> dict[str, Profile]:
    """Reliable annotators share one hidden preference (length and liked words, not the system prompt's
    instruction, which a reward model reading the conversation without it cannot see); the
    `sim-u` ones rank at random."""
    if plan.gold_model:  # the gold world: the gold reward model is the truth (annotator/simulated.py)
        return simulate_run.default_profiles(
            plan.reliable, plan.noise, plan.unreliable, gold_model=plan.gold_model
        )
    pref = Preference(instruction_weight=0.0)
    out = {f"sim-{i + 1}": Profile(preference=pref, noise=plan.noise) for i in range(plan.reliable)}
    return out | {
        f"sim-u{i + 1}": Profile(preference=pref, noise=plan.noise, unreliable=True)
        for i in range(plan.unreliable)
    }


def _job(c: Client, row: dict[str, Any], kind: str, config: dict[str, Any], desc: str) -> dict[str, Any]:
    """The step's job: the one a stopped run started, when it still runs or succeeded (a service keeps
    jobs running when the command is gone), else a new one, recorded on the round before it is followed."""
    job = c.call("jobs.show", job_id=row["job_id"]) if row.get("job_id") else None
    if (
        job is not None
        and job["kind"] == kind
        and job["status"] not in (JobStatus.FAILED, JobStatus.CANCELLED)
    ):
        print(f"following job {job['id']}, started before the round stopped")
    else:
        start = (
            (lambda: c.call("sample", **config))
            if kind == "sample"
            else (lambda: c.call("jobs.start", kind=kind, config=config))
        )
        job = {"id": start()["job_id"]}
        c.call("rounds.job", round_id=row["id"], job_id=job["id"])
    job = follow(c, job["id"], desc)
    if job["status"] != JobStatus.SUCCEEDED:
        raise CommandFailed(f"{desc}: job {job['id']} {job['status']}: {job['error']}", 1)
    return job


def serving_model(c: Client, fallback: int) -> int:
    """The deployed model (what the loop samples from), else `fallback`."""
    routes = c.call("routes")["routes"] or {}
    current = routes.get("current") if isinstance(routes.get("current"), dict) else None
    return (current or {}).get("model_id") or routes.get("model_id") or fallback


def run_round(
    c: Client, settings: Settings, plan: RoundPlan, kind: str, base_model: int, say: Say = print
) -> dict[str, Any]:
    """Run (or resume) a round of `kind`; `base_model` is sampled when nothing is deployed. The round's row."""
    row = c.call("rounds.open", kind=kind)
    if row["step"]:
        say(f"resuming round {row['id']} after its '{row['step']}' step")
    steps: dict[str, Step] = {
        "sample": _sample,
        "rank": _rank,
        "snapshot": _snapshot,
        "reward": _reward,
        "policy": _policy,
        "evaluate": _evaluate,
        "deploy": _deploy,
    }
    while (step := next_step(row)) is not None:
        say(f"\n[round {row['id']}, step {STEPS.index(step) + 1}/{len(STEPS)}] {STEP_TITLES[step]}")
        t0 = time.monotonic()
        values = steps[step](c, settings, plan, row, base_model, say)
        row = c.call(
            "rounds.step",
            round_id=row["id"],
            step=step,
            seconds=time.monotonic() - t0,
            values=values,
            finished=step == STEPS[-1],
        )
    return row


STEP_TITLES = {
    "sample": "sampling responses with vLLM under every system prompt",
    "rank": "collecting rankings",
    "snapshot": "snapshotting the rankings (unreliable annotators left out)",
    "reward": "training the reward model",
    "policy": "training the policy",
    "evaluate": "evaluating the policy against the model it started from",
    "deploy": "deploying through the gate",
}


def _sample(
    c: Client, settings: Settings, plan: RoundPlan, row: dict[str, Any], base_model: int, say: Say
) -> dict[str, Any]:
    model = serving_model(c, base_model)
    path = c.call("models.show", model_id=model)["path"]
    job = _job(
        c,
        row,
        "sample",
        {
            "models": [path],
            "k": plan.k,
            "params": {"max_tokens": plan.max_tokens, "temperature": 1.0},
            "rankings_per_task": plan.rankings_per_task,
            "seed": plan.seed + row["id"],
            **({"vllm": plan.vllm} if plan.vllm else {}),
        },
        f"sampling from model {model}",
    )
    report_job(job)
    return {"sampled_model_id": model, "batch": job["result"]["batch"]}


def _rank(
    c: Client, settings: Settings, plan: RoundPlan, row: dict[str, Any], base_model: int, say: Say
) -> dict[str, Any]:
    if plan.annotators == "people":
        batch = c.call("rounds.batch", batch=row["batch"])
        if plan.target_rankings > batch["needed"]:  # it would wait forever
            raise CommandFailed(
                f"--target-rankings {plan.target_rankings} is more than batch {row['batch']!r} can "
                f"get ({batch['tasks']} tasks, {batch['needed']} rankings in all); give at most "
                f"{batch['needed']} and run `rankloop loop` again",
                2,
            )
        say(
            f"waiting for {plan.target_rankings} rankings of batch {row['batch']!r} (annotator app: /annotate)"
        )
        while (n := c.call("rounds.batch", batch=row["batch"])["rankings"]) < plan.target_rankings:
            print(f"\r  {n}/{plan.target_rankings} rankings", end="", flush=True)
            time.sleep(5)
        print()
    else:
        profiles = {
            n: Profile.model_validate(p)
            for n, p in c.call("simulated.ensure", profiles=simulated_profiles(plan)).items()
        }
        gold = GoldScores() if plan.gold_model else None
        # Gold annotators take turns: scoring is serialized, and in threads the random ranker, which
        # scores nothing, would take most of the tasks.
        sim = simulate_run.run(
            annotation_queue(c, settings),
            profiles,
            seed=plan.seed + row["id"],
            parallel=gold is None,
            gold=gold,
        )
        say(
            f"simulated annotators stored {sim.total} rankings ({', '.join(f'{n} {k}' for n, k in sim.rankings.items())})"
        )
    quality = c.call("quality", batch=row["batch"])
    flagged = quality["unreliable"]
    rows = [
        {**r, "flag": "UNRELIABLE: left out" if r["annotator"] in flagged else ""}
        for r in quality["annotators"]
    ]
    print_table(rows, ["annotator", "rankings", "agreement_with_consensus", "kendall_tau", "flag"])
    alpha = next((b["alpha_ordinal"] for b in quality["batches"] if b["batch"] == row["batch"]), None)
    say(f"Krippendorff's alpha (ordinal) of this batch: {alpha}")
    return {"excluded": flagged}


def _snapshot(
    c: Client, settings: Settings, plan: RoundPlan, row: dict[str, Any], base_model: int, say: Say
) -> dict[str, Any]:
    snap = c.call("snapshot", exclude_annotators=row["excluded"] or [], eval_fraction=plan.eval_fraction)
    say(
        f"snapshot {snap['id']}: {snap['counts']['train_rankings']} train / {snap['counts']['eval_rankings']} "
        f"held-out rankings" + (f", without {', '.join(row['excluded'])}" if row["excluded"] else "")
    )
    return {"snapshot_id": snap["id"]}


def _snapshot_dir(settings: Settings, snapshot_id: str) -> str:
    return str(settings.paths.snapshot_dir(snapshot_id))  # the service's data directory is ours


def _reward(
    c: Client, settings: Settings, plan: RoundPlan, row: dict[str, Any], base_model: int, say: Say
) -> dict[str, Any]:
    job = _job(
        c,
        row,
        "reward",
        {"snapshot": _snapshot_dir(settings, row["snapshot_id"]), "mode": "listwise", **plan.reward},
        "training the reward model",
    )
    model = c.call("models.show", model_id=job["result_model_id"])
    ev = model["metrics"]["eval"]
    hidden = ev.get("hidden") or {}
    say(
        f"reward model #{model['id']} ({model['status']}): held-out pairwise accuracy {ev['pairwise_accuracy']}"
        + (
            f"; agreement with the hidden preference {hidden.get('model_vs_hidden')} (the labels' own: "
            f"{hidden.get('labels_vs_hidden')})"
            if hidden
            else ""
        )
    )
    return {"reward_model_id": model["id"]}


def _policy(
    c: Client, settings: Settings, plan: RoundPlan, row: dict[str, Any], base_model: int, say: Say
) -> dict[str, Any]:
    base = c.call("models.show", model_id=row["sampled_model_id"])["path"]
    config: dict[str, Any] = {"base_model": base, "snapshot": _snapshot_dir(settings, row["snapshot_id"])}
    if plan.method in (
        "grpo",
        "rloo",
    ):  # online, against this round's reward model, on the snapshot's prompts
        config |= {"reward_model": c.call("models.show", model_id=row["reward_model_id"])["path"], **plan.rl}
    else:
        config |= plan.policy
    job = _job(c, row, plan.method, config, f"training the policy ({plan.method})")
    metrics = c.call("models.show", model_id=job["result_model_id"])["metrics"]
    losses = [p["loss"] for p in metrics.get("loss_curve", [])]
    say(
        f"policy #{job['result_model_id']} ({plan.method}) from model {row['sampled_model_id']}: "
        f"{metrics['train']['steps']} steps"
        + (f", loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "")
    )
    return {"policy_model_id": job["result_model_id"]}


def _evaluate(
    c: Client, settings: Settings, plan: RoundPlan, row: dict[str, Any], base_model: int, say: Say
) -> dict[str, Any]:
    _job(
        c,
        row,
        "evaluate",
        {
            "candidate": row["policy_model_id"],
            "baseline": row["sampled_model_id"],
            "judge": ("gold" if plan.gold_model else "hidden")
            if plan.annotators == "simulated"
            else "reward",
            "reward_model": row["reward_model_id"],
            "samples": plan.eval_samples,
            "max_prompts": plan.eval_prompts,
            "min_prompts": plan.gate_min_prompts,
            "human": plan.human_tasks,
            "seed": plan.seed + row["id"],
            **({"vllm": plan.vllm} if plan.vllm else {}),
        },
        "evaluating the policy",
    )
    model = c.call("models.show", model_id=row["policy_model_id"])
    ev = model["evaluations"][-1]
    for name, j in ev["judges"].items():
        if j.get("trained_against"):
            say(f"  {name} judge: the policy was trained against it (proxy figures only, not a verdict)")
            continue
        similar = j.get("similar_length") or {}
        say(
            f"  {name} judge: win rate {j['win_rate']:.3f} (95% CI {j['ci'][0]:.3f}-{j['ci'][1]:.3f}), "
            f"length-controlled {j['lc_win_rate']:.3f} over {j['n']} comparisons"
            + (
                f"; {similar['win_rate']:.3f} on the {similar['n']} pairs of similar length"
                if similar.get("n")
                else ""
            )
        )
    say(f"  policy #{model['id']} is {model['status']}: {model['status_reason']}")
    return {}


def _deploy(
    c: Client, settings: Settings, plan: RoundPlan, row: dict[str, Any], base_model: int, say: Say
) -> dict[str, Any]:
    model = c.call("models.show", model_id=row["policy_model_id"])
    if model["status"] == ModelStatus.ACTIVE:  # the gate approved it
        c.call("deploy", model_id=model["id"])
        say(f"deployed policy #{model['id']}")
        return {"deployed_model_id": model["id"], "note": "deployed the new policy"}
    kept = serving_model(c, 0)
    if not kept:  # nothing serves yet: the model the round started from
        c.call("deploy", model_id=row["sampled_model_id"], force=True)
        kept = row["sampled_model_id"]
    say(f"policy #{model['id']} is not approved ({model['status_reason']}); model {kept} keeps serving")
    return {
        "deployed_model_id": kept,
        "note": f"policy {model['id']} not approved ({model['status_reason']}); kept model {kept}"[:1000],
    }
