"""`rankloop demo --real`: the loop on a real chat model toward real human preferences, judged by a
model of them that the loop never trains on (the gold-judge world, service/cli/demo_world.py).

SmolLM2-135M-Instruct from its PyPI package -> the world: a gold reward model fitted to half of
Anthropic's HH pairs, the other half's openings as prompts -> one round of the loop
(service/cli/round_steps.py): sample with vLLM, gold simulated annotators rank (Bradley-Terry noise 0.2 on the
gold model's logits, taking turns; one of them at random and left out), snapshot, a proxy reward model
(a head on frozen SmolLM2) from those rankings, DPO (LoRA) from SmolLM2, evaluation against SmolLM2
under the gold judge with the gate, deploy -> the same DPO stopped earlier, evaluated too, so the
report can draw gold and proxy reward against KL (not in --small) -> the service, a completion through the gateway,
the report. Every stage prints as it starts; running it again reuses what is done.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.cli.client import Client, follow
from service.cli.demo_world import (
    DEFAULT_HH,
    WHOLE_MODEL_ON_GPU,
    WorldSize,
    build_gold,
    read_world,
    write_prompts,
)
from service.cli.round_steps import RoundPlan, run_round
from service.core.enums import JobStatus
from service.core.errors import CommandFailed
from service.core.settings import Settings

# The sizes fit 2 CPU cores: a DPO step on SmolLM2 takes ~17 s for 8 pairs there, and every response
# the gold and proxy models read is one forward pass of the backbone.
REAL_SIZES: dict[bool, dict[str, Any]] = {
    False: {
        "world": WorldSize(gold_pairs=600, eval_pairs=100, max_length=128, prompts=170),
        "plan": RoundPlan(
            k=4,
            max_tokens=64,
            noise=0.2,  # a gold annotator agrees with the gold model on ~0.88 of pairs (measured)
            reward={**WHOLE_MODEL_ON_GPU, "frozen_backbone": "auto", "max_length": 256, "batch_size": 16},
            policy={"lora": True, "learning_rate": 5e-4, "max_steps": 24, "batch_size": 4, "max_length": 192},
            eval_fraction=0.4,
            eval_samples=2,
            human_tasks=8,
        ),
        "early": {"max_steps": 8},  # the same DPO, stopped sooner
    },
    True: {  # the test suite's: every stage, a few steps each
        "world": WorldSize(gold_pairs=24, eval_pairs=16, max_length=64, prompts=12),
        "plan": RoundPlan(
            k=2,
            max_tokens=24,
            rankings_per_task=1,
            reliable=2,
            unreliable=0,
            noise=0.2,  # a gold annotator agrees with the gold model on ~0.88 of pairs (measured)
            reward={**WHOLE_MODEL_ON_GPU, "frozen_backbone": "auto", "max_length": 128, "batch_size": 16},
            policy={"lora": True, "learning_rate": 5e-4, "max_steps": 2, "batch_size": 2, "max_length": 128},
            eval_fraction=0.4,
            eval_samples=1,
            eval_prompts=8,
            human_tasks=2,
        ),
        "early": None,  # one point is enough to draw; the suite's time is not (full DPO: test_packaged.py)
    },
}


def prepare_world(c: Client, data: Path, hh: Path | None, small: bool) -> tuple[dict, RoundPlan]:
    """SmolLM2 registered, the gold model built, the prompts and system prompt stored: (SmolLM2's row,
    the round's plan with the gold model in it)."""
    size = REAL_SIZES[small]
    model = c.call("models.add", model="smollm2")
    print(f"model #{model['id']} {model['name']} at {model['path']}")
    parts = read_world(hh or DEFAULT_HH)
    print(
        f"HH pairs: {len(parts['gold'])} in the gold part, {len(parts['loop'])} in the loop part (no shared opening)"
    )
    world = data / "world"
    build_gold(parts, Path(model["path"]), world, size["world"])
    prompts, system = write_prompts(parts, world, size["world"].prompts)
    added = c.call("prompts.add", file=prompts)["added"]
    c.call("system_prompts.add", file=system)
    print(f"{added} new prompts (HH openings of the loop part); system prompt 'assistant'")
    plan = size["plan"].model_copy(update={"gold_model": str((world / "gold-reward").resolve())})
    return model, plan


def early_checkpoint(c: Client, settings: Settings, row: dict, plan: RoundPlan, early: dict) -> int | None:
    """The round's DPO with `early`'s fields (fewer steps), evaluated like the round's policy without a
    gate: another point on the KL axis of the overoptimization picture. Reused when done before."""
    done = settings.data_dir / "world" / "early.json"
    if done.exists():
        return json.loads(done.read_text())["model_id"]
    base = c.call("models.show", model_id=row["sampled_model_id"])["path"]
    snapshot = str(settings.paths.snapshot_dir(row["snapshot_id"]))  # the data directory is ours
    config = {"base_model": base, "snapshot": snapshot, **plan.policy, **early}
    steps = config["max_steps"]
    job = follow(
        c, c.call("jobs.start", kind="dpo", config=config)["job_id"], f"DPO stopped at {steps} steps"
    )
    if job["status"] != JobStatus.SUCCEEDED:
        raise CommandFailed(f"the early DPO job {job['id']} {job['status']}: {job['error']}", 1)
    model_id = job["result_model_id"]
    evaluation = {
        "candidate": model_id,
        "baseline": row["sampled_model_id"],
        "judge": "gold",
        "reward_model": row["reward_model_id"],
        "samples": plan.eval_samples,
        "max_prompts": plan.eval_prompts,
        "gate": False,
        "seed": plan.seed + row["id"],
    }
    job = follow(c, c.call("jobs.start", kind="evaluate", config=evaluation)["job_id"], "evaluating it")
    if job["status"] != JobStatus.SUCCEEDED:
        raise CommandFailed(
            f"evaluating the early DPO checkpoint: job {job['id']} {job['status']}: {job['error']}", 1
        )
    gold = job["result"]["judges"]["gold"]
    print(f"policy #{model_id} ({steps} DPO steps): gold win rate {gold['win_rate']:.3f} against SmolLM2")
    done.write_text(json.dumps({"model_id": model_id}))
    return model_id


def real_round(c: Client, settings: Settings, data: Path, hh: Path | None, small: bool, stages: Any) -> dict:
    """Everything up to the service: the world, the round, the early checkpoint. The round's row."""
    model, plan = stages.run(
        "SmolLM2-135M-Instruct and the gold-judge world", prepare_world, c, data, hh, small
    )
    done = [r for r in c.call("rounds.list") if r["kind"] == "demo" and r["status"] == "done"]
    if done:
        row = done[-1]
        print(
            f"\nusing round {row['id']} of an earlier run ({row['note']}); another in the same world: "
            f"`rankloop loop --gold-model {plan.gold_model}`"
        )
    else:
        row = stages.run(
            "one round of the loop (gold simulated annotators)",
            run_round,
            c,
            settings,
            plan,
            "demo",
            model["id"],
        )
        stages.add({f"  round step: {k}": v for k, v in row["stages"].items()})
    if REAL_SIZES[small]["early"] is None:
        return row
    stages.run(
        "the same DPO stopped earlier, for the overoptimization picture",
        early_checkpoint,
        c,
        settings,
        row,
        plan,
        REAL_SIZES[small]["early"],
    )
    return row
