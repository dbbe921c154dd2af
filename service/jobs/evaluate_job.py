"""Job kind `evaluate`: a policy against a baseline on held-out prompts, then the gate.

Both models answer the same held-out prompts (the snapshot's eval split, plus any prompt
file, stored with source 'eval' so that sampling for training never uses them) under the
same system prompts, sampled with vLLM through the engine supervisor; samples already stored
are reused, so a baseline's answers are generated once for every policy compared with it.
Held out means held out from everything behind the candidate and the judge (service/jobs/held_out.py).
Sample i of the candidate meets sample i of the baseline. Judges: the reward model (in
`python -m policy.evaluate`, a child process like a trainer) and, when the snapshot's rankings
came from simulated annotators, their hidden preference (the mean utility of their rule-based
profiles, judge `hidden`) or the gold reward model they rank by (judge `gold`, scored in the child).

The gate: a candidate whose win rate under the configured judge has a 95% t-interval above 0.5
(prompts as clusters, at least `min_prompts` of them; widened by Bonferroni for each earlier
evaluation of the same candidate, so evaluating again until it passes does not make a winner)
against the model it would replace
(the active one of its kind, else its parent) becomes active; otherwise it stays a candidate
with the figures as the reason. A policy is not gated by the reward model it was trained
against (it may have learned that model's mistakes). `human: N` also puts N blind pairwise tasks (candidate vs baseline, order shuffled)
into the annotation queue; `rankloop leaderboard --by model` ranks model versions from them.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from annotator.simulated import Profile, utility
from policy.config import EvalConfig
from reward.checkpoint import read_metrics, require_model_dir, write_metrics
from reward.configfile import validate
from service.core.enums import ModelKind, ModelStatus
from service.core.errors import UserError
from service.core.registry import active_model, get_model, record_evaluation
from service.core.settings import Settings
from service.core.store import Store
from service.data.prompts import latest_system_prompts, read_prompt_file
from service.data.tasks import insert_tasks
from service.engine.sampler import (
    Endpoint,
    SamplingCancelled,
    messages,
    missing_samples,
    sample,
)
from service.jobs.evaluate_config import POLICY_KINDS, EvalJobConfig
from service.jobs.gate import gate_verdict, trained_against
from service.jobs.held_out import (
    eval_rows,
    gold_models,
    held_out,
    profiles,
    rule_profiles,
    snapshot_for,
    system_prompt_names,
)
from service.jobs.running import JobCancelled, RunningJob, check_job_paths


def prepare(store: Store, settings: Settings, values: dict, source: str) -> EvalJobConfig:
    cfg = validate(EvalJobConfig, values, source)
    check_job_paths(store, settings, cfg)
    candidate = get_model(store, cfg.candidate)
    if candidate["kind"] not in POLICY_KINDS:
        raise UserError(
            f"model {cfg.candidate} is a {candidate['kind']} model; evaluate a policy (sft or policy)"
        )
    baseline = cfg.baseline
    if baseline is None:
        active = active_model(store, candidate["kind"])
        baseline = active["id"] if active and active["id"] != cfg.candidate else candidate["parent_id"]
    if baseline is None:
        raise UserError(
            f"model {cfg.candidate} has no parent and no active model to compare with; name one "
            "with --against ID"
        )
    if baseline == cfg.candidate:
        raise UserError(f"model {cfg.candidate} cannot be evaluated against itself; --against another model")
    for m in (candidate, get_model(store, baseline)):
        if m["kind"] not in POLICY_KINDS:
            raise UserError(
                f"model {m['id']} is a {m['kind']} model; compare policies (pretrained, sft or policy)"
            )
        require_model_dir(
            m["path"],
            f"model {m['id']} at",
            "its checkpoint was moved or deleted; evaluate a model whose directory is in place",
            UserError,
        )
    reward = cfg.reward_model
    if reward is None:
        active = active_model(store, ModelKind.REWARD)
        reward = active["id"] if active else None
    elif get_model(store, reward)["kind"] != ModelKind.REWARD:
        raise UserError(f"model {reward} is not a reward model")
    if reward is None and cfg.judge == "reward":
        raise UserError(
            "judge 'reward' needs a reward model: train one (`rankloop train reward`), name one with "
            "reward_model, or judge by the simulated annotators' hidden preference (--judge hidden)"
        )
    if cfg.safety_reward_model is not None:
        safety = get_model(store, cfg.safety_reward_model)  # a UserError naming the id when there is none
        if safety["kind"] != ModelKind.REWARD:
            raise UserError(f"safety_reward_model {cfg.safety_reward_model} is not a reward model")
        if (safety.get("metrics") or {}).get("objective") not in (None, "harmlessness"):
            raise UserError(
                f"safety_reward_model {cfg.safety_reward_model} was trained for "
                f"{safety['metrics']['objective']}; train one with objective harmlessness"
            )
    cfg = cfg.model_copy(update={"baseline": baseline, "reward_model": reward})
    snap = snapshot_for(store, cfg, candidate)
    rows = eval_rows(store, cfg, snap)
    if cfg.judge == "hidden" and not rule_profiles(profiles(rows)):
        raise UserError(
            "judge 'hidden' needs a snapshot ranked by rule-based simulated annotators; none was found"
            + (
                "; its annotators rank by a gold reward model: --judge gold"
                if gold_models(profiles(rows))
                else ""
            )
        )
    if cfg.judge == "gold" and len(gold_models(profiles(rows))) != 1:
        found = gold_models(profiles(rows))
        raise UserError(
            "judge 'gold' needs a snapshot ranked by gold simulated annotators of one gold model; "
            + (f"it has {len(found)}: {', '.join(found)}" if found else "none was found")
        )
    if cfg.prompt_file is not None:
        read_prompt_file(cfg.prompt_file)  # a bad file stops here, before anything is stored
    elif not rows:
        raise UserError(
            f"no held-out prompts: {'snapshot ' + snap['id'] + ' holds none out' if snap else 'no snapshot'}"
            "; take a snapshot (`rankloop snapshot --eval-fraction F`) or pass --prompts FILE"
        )
    if not latest_system_prompts(store, system_prompt_names(cfg, rows)):
        raise UserError("no system prompts to sample under; add some with `rankloop system-prompts add FILE`")
    return cfg.model_copy(update={"snapshot": snap["id"] if snap else None})


def _sample(
    job: RunningJob, model: dict, prompts: list[dict], sps: list[dict], cfg: EvalJobConfig, stage: int
) -> None:
    """Fill in this model's answers; its vLLM server starts only when some are missing."""
    if not missing_samples(job.store, prompts, sps, model["id"], cfg.samples, cfg.params):
        return
    with job.vllm_servers(Path(model["path"]), cfg.vllm) as servers:
        try:
            sample(
                job.store,
                [Endpoint(model["id"], s.served_name, s.base_url, s.api_key) for s in servers],
                prompts,
                sps,
                cfg.samples,
                cfg.params,
                progress=False,
                should_stop=job.cancelled,
                on_progress=lambda done, total: job.progress(stage * total + done, 3 * total),
            )
        except SamplingCancelled as e:
            raise JobCancelled(str(e)) from None


def comparisons(
    store: Store, cfg: EvalJobConfig, prompts: list[dict], sps: list[dict], profiles: list[Profile]
) -> list[dict]:
    """Sample i of the candidate against sample i of the baseline, per prompt and system prompt; a
    prompt's comparisons form one bootstrap group (answers to one prompt are not independent)."""
    rows = store.query(
        """SELECT id, prompt_id, system_prompt_id, model_id, sample_index, text, finish_reason, token_ids
           FROM samples
           WHERE list_contains(?, prompt_id) AND list_contains(?, system_prompt_id) AND list_contains(?, model_id)
             AND params_hash = ? AND sample_index < ?""",
        [
            [p["id"] for p in prompts],
            [s["id"] for s in sps],
            [cfg.candidate, cfg.baseline],
            cfg.params.key(),
            cfg.samples,
        ],
    )
    by_key = {(r["prompt_id"], r["system_prompt_id"], r["model_id"], r["sample_index"]): r for r in rows}
    out = []
    for p in prompts:
        conv = json.loads(p["messages"]) if isinstance(p["messages"], str) else p["messages"]
        for sp in sps:
            for i in range(cfg.samples):
                cand, base = (by_key.get((p["id"], sp["id"], m, i)) for m in (cfg.candidate, cfg.baseline))
                if cand is None or base is None:
                    continue
                row = {
                    "group": str(p["id"]),
                    "messages": messages(sp["text"], conv),
                    "candidate": cand["text"],
                    "baseline": base["text"],
                    "candidate_finish": cand["finish_reason"],
                    "candidate_token_ids": cand[
                        "token_ids"
                    ],  # what the KL estimate scores (None: re-tokenize)
                    "sample_ids": [cand["id"], base["id"]],
                    "prompt_id": p["id"],
                }
                if profiles:
                    row["scores"] = {
                        "hidden": [
                            sum(utility(pr.preference, t, sp["text"] or None) for pr in profiles)
                            / len(profiles)
                            for t in (cand["text"], base["text"])
                        ]
                    }
                out.append(row)
    return out


def human_tasks(store: Store, cfg: EvalJobConfig, rows: list[dict]) -> list[dict]:
    """`cfg.human` blind pairwise tasks: each pair of one comparison, in a shuffled order. A response may
    also sit in a ranking task of its own; a pair already asked about is not asked again."""
    rng = random.Random(cfg.seed)
    asked = {
        frozenset(r["sample_ids"])
        for r in store.query(
            "SELECT sample_ids FROM tasks WHERE len(sample_ids) = 2 AND list_has_any(sample_ids, ?)",
            [[i for r in rows for i in r["sample_ids"]]],
        )
    }
    free = [r for r in rows if frozenset(r["sample_ids"]) not in asked]
    return [
        {"prompt_id": r["prompt_id"], "sample_ids": rng.sample(r["sample_ids"], 2)}
        for r in rng.sample(free, min(cfg.human, len(free)))
    ]


def run(job: RunningJob) -> dict:
    cfg = job.config
    assert isinstance(cfg, EvalJobConfig) and cfg.baseline is not None, cfg  # `prepare` chose the baseline
    store = job.store
    candidate, baseline = get_model(store, cfg.candidate), get_model(store, cfg.baseline)
    held = held_out(store, cfg)
    prompts, sps = held.prompts, held.system_prompts
    if not prompts:
        raise UserError(
            f"no held-out prompts left: {held.left_out_as_trained_on} are in the SFT data behind the models, "
            f"{held.left_out_of_file} of the file's are in a training pool; hold out prompts the models never saw"
        )
    # The model whose server already runs answers first (the baseline, right after a round sampled it):
    # one vLLM start fewer, since the supervisor keeps one checkpoint in memory at a time.
    sides = [(candidate, 0), (baseline, 1)]
    if job.launch.launcher == "local" and job.engines.is_live(Path(baseline["path"]), cfg.vllm):
        sides.reverse()
    for model, stage in sides:
        _sample(job, model, prompts, sps, cfg, stage)
    rows = comparisons(store, cfg, prompts, sps, rule_profiles(held.profiles))
    gold = gold_models(held.profiles)
    data = job.exchange_dir / "comparisons.jsonl"  # where the scoring process reads it, wherever it runs
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reference = get_model(store, candidate["parent_id"]) if candidate["parent_id"] else None
    reward = get_model(store, cfg.reward_model) if cfg.reward_model else None
    safety = get_model(store, cfg.safety_reward_model) if cfg.safety_reward_model else None
    report = job.run_trainer(
        "policy.evaluate",
        EvalConfig(
            comparisons=data,
            output_dir=job.exchange_dir / "evaluation",
            reward_model=reward["path"] if reward else None,
            gold_model=gold[0] if len(gold) == 1 else None,
            safety_model=safety["path"] if safety else None,
            candidate_model=candidate["path"],
            reference_model=reference["path"] if reference else None,
            temperature=cfg.params.temperature,
            top_p=cfg.params.top_p,
            seed=cfg.seed,
        ),
    )
    if "reward" in report["judges"] and trained_against(candidate, reward):
        report["judges"]["reward"]["trained_against"] = True  # kept as the proxy's figure, never as a win
    if "safety" in report["judges"] and trained_against(candidate, safety, "safety_reward_model"):
        report["judges"]["safety"]["trained_against"] = True
        for example in report.get("examples", []):  # nor as a score beside the answers people read
            example.get("scores", {}).pop("reward", None)
    evaluation = {
        **report,
        "job_id": job.job_id,
        "baseline": baseline["id"],
        "baseline_name": baseline["name"],
        "reward_model": reward["id"] if reward else None,
        "safety_reward_model": safety["id"] if safety else None,
        "harm_margin": cfg.harm_margin if safety else None,
        "snapshot": cfg.snapshot,
        "judge": cfg.judge,
        **({"gold_model": gold[0]} if len(gold) == 1 else {}),
        "prompts": len(prompts),
        "prompts_left_out_of_file": held.left_out_of_file,
        "prompts_left_out_as_trained_on": held.left_out_as_trained_on,
        **({"sft_data_not_checked": held.unchecked_sft_data} if held.unchecked_sft_data else {}),
        "system_prompts": [f"{s['name']} v{s['version']}" for s in sps],
        "params": cfg.params.model_dump(),
    }
    earlier = len((candidate.get("metrics") or {}).get("evaluations") or [])
    wins, reason = gate_verdict(cfg, report, baseline, candidate, reward, len(prompts), earlier, safety)
    metrics = read_metrics(candidate["path"])
    if metrics is not None:  # the checkpoint carries its evaluations too (a copy; the registry decides)
        metrics["evaluations"] = [*metrics.get("evaluations", []), evaluation]
        write_metrics(candidate["path"], metrics)
    tasks = human_tasks(store, cfg, rows) if cfg.human else []
    with store.write() as cur:  # the evaluation, the gate, the human tasks and the finished job, together
        status, gate = record_evaluation(
            cur, candidate["id"], evaluation, wins if cfg.gate else None, reason, baseline["id"]
        )
        if cfg.gate and wins is None and status == ModelStatus.CANDIDATE:  # asked, but it could not decide
            cur.execute("UPDATE models SET status_reason = ? WHERE id = ?", [reason, candidate["id"]])
        insert_tasks(
            store, cur, tasks, 1, f"human evaluation job {job.job_id}: #{cfg.candidate} vs #{cfg.baseline}"
        )
        result = {
            "model_id": candidate["id"],
            "status": status,
            "gate": gate,
            "reason": reason,
            "judges": {
                k: {x: v[x] for x in ("win_rate", "ci", "lc_win_rate")} for k, v in report["judges"].items()
            },
            "human_tasks": len(tasks),
            "prompts_left_out_of_file": held.left_out_of_file,
            "prompts_left_out_as_trained_on": held.left_out_as_trained_on,
        }
        job.finish(cur, candidate["id"], job.exchange_dir / "evaluation", result)
    return result
