"""The evaluate job's checks, before any job exists: each bad input gets one message and leaves no
job behind; held-out prompts from a file are stored apart and never sampled for training; the gate
and an evaluation go through the registry. (The whole evaluation, with vLLM, is in test_policy_loop.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from reward.data import read_snapshot
from service.cli.main import main
from service.core.registry import get_model, record_evaluation, register_model
from service.core.settings import Settings
from service.core.store import Store
from service.data.prompts import add_prompts, add_system_prompts
from service.data.snapshots import SnapshotFilters, create_snapshot
from service.jobs.evaluate_config import EvalJobConfig
from service.jobs.held_out import held_out
from service.jobs.sample_job import SampleJobConfig, prepare
from tests.support.seeding import seed_rankings


@pytest.fixture
def data(tmp_path: Path, tiny_model: Path) -> dict:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_rankings(store, n_prompts=12, annotators=2)
        snap = create_snapshot(store, data, SnapshotFilters(eval_fraction=0.3))
        base = register_model(store, "pretrained", tiny_model, name="base")
        shutil.copytree(tiny_model, tmp_path / "dpo")
        policy = register_model(
            store,
            "policy",
            tmp_path / "dpo",
            name="dpo",
            parent_id=base,
            snapshot_id=snap.id,
            status="candidate",
        )
        orphan = register_model(store, "policy", tmp_path / "dpo", name="orphan", status="candidate")
        reward = register_model(store, "reward", tiny_model, name="rm")
    return {"dir": data, "base": base, "policy": policy, "orphan": orphan, "reward": reward}


BAD = [
    (["999"], "no model with id 999"),
    (["{reward}"], "is a reward model; evaluate a policy"),
    (["{policy}", "--against", "{policy}"], "cannot be evaluated against itself"),
    (["{orphan}"], "has no parent and no active model to compare with; name one with --against ID"),
    (["{policy}"], "judge 'reward' needs a reward model"),
    (["{policy}", "--reward-model", "{base}"], "is not a reward model"),
    (["{policy}", "--judge", "hidden", "--reward-model", "{reward}", "--samples", "0"], "samples"),
    (["{policy}", "--reward-model", "{reward}", "--prompts", "{missing}"], "no such file"),
]


@pytest.mark.parametrize(("args", "message"), BAD)
def test_bad_evaluations_are_refused_before_any_job(
    args: list[str], message: str, data: dict, capsys
) -> None:
    values = {k: v for k, v in data.items() if k != "dir"} | {"missing": str(data["dir"] / "nope.txt")}
    argv = ["--data", str(data["dir"]), "evaluate", "policy", *[a.format(**values) for a in args]]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    with Store.open(data["dir"] / "rankloop.duckdb") as store:
        assert store.scalar("SELECT count(*) FROM jobs") == 0
        assert store.scalar("SELECT count(*) FROM prompts WHERE source = 'eval'") == 0


def test_hidden_judge_needs_simulated_rankings(tmp_path: Path, tiny_model: Path, capsys) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        base = register_model(store, "pretrained", tiny_model)
        policy = register_model(store, "sft", tiny_model, parent_id=base, status="candidate")
    assert main(["--data", str(data), "evaluate", "policy", str(policy), "--judge", "hidden"]) == 2
    assert "needs a snapshot ranked by rule-based simulated annotators" in capsys.readouterr().err


def test_held_out_prompts_are_never_sampled_for_training(tmp_path: Path, tiny_model: Path) -> None:
    data = tmp_path / "data"
    prompts = tmp_path / "held.txt"
    prompts.write_text("A question kept for evaluation?\nAnother one?\n")
    with Store.open(data / "rankloop.duckdb") as store:
        add_system_prompts(store, {"brief": "Answer in one short sentence."})
        model = register_model(store, "pretrained", tiny_model)
        held = held_out(store, EvalJobConfig(candidate=model, prompt_file=prompts))
        assert [p["text"] for p in held.prompts] == ["A question kept for evaluation?", "Another one?"]
        assert [s["name"] for s in held.system_prompts] == ["brief"] and held.profiles == []
        assert held.left_out_of_file == held.left_out_as_trained_on == 0
        assert store.scalar("SELECT count(*) FROM prompts WHERE source = 'eval'") == 2
        with pytest.raises(Exception, match="no prompts stored"):  # eval prompts are not a training pool
            prepare(
                store, Settings(data_dir=data, allowed_roots=[tmp_path]), SampleJobConfig(models=[tmp_path])
            )


def test_the_gate_records_figures_and_decides_only_against_the_model_it_would_replace(data: dict) -> None:
    policy, base, orphan = data["policy"], data["base"], data["orphan"]
    with Store.open(data["dir"] / "rankloop.duckdb") as store:
        with store.write() as cur:
            assert record_evaluation(cur, policy, {"job_id": 1}, False, "win rate 0.5", base) == (
                "candidate",
                "refused",
            )
        m = get_model(store, policy)
        assert m["status_reason"] == "gate refused: win rate 0.5" and m["metrics"]["evaluations"] == [
            {"job_id": 1}
        ]
        with store.write() as cur:  # no active policy: the parent is the bar; another baseline does not count
            assert record_evaluation(cur, policy, {"job_id": 2}, True, "w", orphan)[1].startswith(
                "not applied"
            )
            assert record_evaluation(cur, policy, {"job_id": 3}, True, "win rate 0.8", base) == (
                "active",
                "passed",
            )
            # Now the bar is the active policy: beating anything else changes nothing.
            assert record_evaluation(cur, orphan, {"job_id": 4}, True, "w", base)[1].startswith(
                "not applied (the baseline"
            )
            assert record_evaluation(cur, orphan, {"job_id": 5}, True, "win rate 0.9", policy) == (
                "active",
                "passed",
            )
            assert record_evaluation(cur, orphan, {"job_id": 6}, False, "lost", policy)[1].startswith(
                "not applied"
            )
            assert record_evaluation(cur, orphan, {"job_id": 7}, None, "figures only", policy) == (
                "active",
                "not applied",
            )
        assert get_model(store, policy)["status"] == "retired"  # replaced by the next winner
        assert [e["job_id"] for e in get_model(store, orphan)["metrics"]["evaluations"]] == [4, 5, 6, 7]


def test_a_planted_near_duplicate_of_training_or_sft_data_is_not_held_out(
    tmp_path: Path, tiny_model: Path
) -> None:
    """Held out means held out: a prompt the training pool holds, or whose opening the SFT data behind the
    candidate holds, is left out of the evaluation even written another way, and counted."""
    data, sft_data, prompts = tmp_path / "data", tmp_path / "sft.jsonl", tmp_path / "held.txt"
    sft_data.write_text(
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "How do tides work?"},
                    {"role": "assistant", "content": "The moon."},
                ]
            }
        )
        + "\n"
    )
    prompts.write_text("what is a cat #2\nHOW do tides work??\nWhy is the sea salty?\n")
    with Store.open(data / "rankloop.duckdb") as store:
        add_prompts(store, ["What is a cat?"])  # the training pool
        add_system_prompts(store, {"brief": "Answer in one short sentence."})
        base = register_model(store, "pretrained", tiny_model)
        sft = register_model(store, "sft", tiny_model, parent_id=base, config={"data": str(sft_data)})
        policy = register_model(store, "policy", tiny_model, parent_id=sft)
        held = held_out(store, EvalJobConfig(candidate=policy, baseline=sft, prompt_file=prompts))
    assert [p["text"] for p in held.prompts] == ["Why is the sea salty?"]
    assert (held.left_out_of_file, held.left_out_as_trained_on) == (1, 1)


def test_prompts_stored_for_evaluation_stay_out_of_training_splits(data: dict) -> None:
    with Store.open(data["dir"] / "rankloop.duckdb") as store:
        held = store.query("SELECT id FROM prompts ORDER BY id LIMIT 3")
        with store.write() as cur:
            cur.execute(
                "UPDATE prompts SET source = 'eval' WHERE list_contains(?, id)", [[r["id"] for r in held]]
            )
        snap = create_snapshot(store, data["dir"], SnapshotFilters(eval_fraction=0.0))
    rows = read_snapshot(snap.path)
    assert {r["prompt_id"] for r in rows if r["split"] == "eval"} == {r["id"] for r in held}
    assert len(rows) > 3 * 3


def test_the_reward_model_a_policy_was_trained_against_is_no_verdict(tmp_path: Path, capsys) -> None:
    """An online-RL policy against its own reward model: the gate does not decide by it, and the figures
    print as the proxy's, with no win rate to quote; another reward model judges normally."""
    from service.cli.evaluate import print_evaluation
    from service.jobs.gate import gate_verdict, trained_against

    rm, other = tmp_path / "rm", tmp_path / "other-rm"
    candidate = {"id": 5, "config": {"reward_model": str(rm)}}
    proxy, fresh = {"id": 2, "path": str(rm)}, {"id": 3, "path": str(other)}
    assert trained_against(candidate, proxy) and not trained_against(candidate, fresh)
    assert not trained_against({"id": 6, "config": {}}, proxy)  # DPO: trained on rankings, not a model
    figures = {"win_rate": 0.9, "ci": [0.85, 0.95], "n": 400, "lc_win_rate": 0.8, "lc_ci": [0.7, 0.9]}
    report = {"judges": {"reward": figures}}
    cfg = EvalJobConfig(candidate=5, baseline=1, judge="reward", min_prompts=1)
    wins, reason = gate_verdict(cfg, report, {"id": 1, "name": "sft"}, candidate, proxy, 50)
    assert wins is None and "not gated: it was trained against this reward model (#2)" in reason
    assert gate_verdict(cfg, report, {"id": 1, "name": "sft"}, candidate, fresh, 50)[0] is True
    ev = {
        "job_id": 9,
        "baseline": 1,
        "baseline_name": "sft",
        "comparisons": 400,
        "prompts": 50,
        "system_prompts": ["brief v1"],
        "judge": "hidden",
        "judges": {
            "hidden": {**figures, "win_rate": 0.7, "mean_candidate": 1.0, "mean_baseline": 0.5},
            "reward": {
                **figures,
                "win_rate": 0.987,
                "mean_candidate": 2.0,
                "mean_baseline": 1.0,
                "trained_against": True,
            },
        },
        "length": {"candidate_words": 10.0, "baseline_words": 12.0},
        "kl": {"estimate": 1.2, "ci": [0.9, 1.5], "per_token": 0.1, "token_ids": "sampled"},
    }
    print_evaluation(ev)
    out = capsys.readouterr().out
    assert "reward (trained against it: proxy only)" in out and "not a fair judge" in out
    assert "0.987" not in out and "0.700" in out  # the proxy's win rate is nowhere; the hidden judge's is
    assert "KL to the reference 1.20 nats (95% CI 0.900-1.500" in out


def test_the_gate_decides_on_a_t_interval_over_prompts_and_counts_re_evaluations() -> None:
    """At the boundary: a lower bound just above 0.5 passes, one at 0.5 does not; a second evaluation of
    the same candidate widens the interval (Bonferroni), so the same figures no longer pass."""
    from policy.stats import t_bounds
    from service.jobs.gate import gate_verdict

    cfg = EvalJobConfig(candidate=5, baseline=1, judge="hidden", min_prompts=20)
    baseline, candidate = {"id": 1, "name": "sft"}, {"id": 5, "config": {}}

    def report(mean: float, se: float) -> dict:
        spread = {"mean": mean, "se": se, "df": 20, "ci": t_bounds(mean, se, 20, 0.95), "groups": 21}
        return {"judges": {"hidden": {"win_rate": mean, "ci": [0.0, 1.0], "n": 500, "t_interval": spread}}}

    se = 0.02
    half = t_bounds(0.0, se, 20, 0.95)[1]  # t(0.975, 20) x se
    passing, at_boundary = report(0.5 + half + 1e-4, se), report(0.5 + half, se)
    wins, reason = gate_verdict(cfg, passing, baseline, candidate, None, 21)
    assert wins is True and "95.0% CI 0.500-" in reason and "widened" not in reason
    assert gate_verdict(cfg, at_boundary, baseline, candidate, None, 21)[0] is False
    again, reason = gate_verdict(cfg, passing, baseline, candidate, None, 21, earlier=1)
    assert again is False and "97.5% CI" in reason and "widened for 2 evaluations of this model" in reason
    assert "the interval must lie above 0.5" in reason
    # The bootstrap interval it once decided on would have passed: [0.0, 1.0] is ignored for the t-interval.
    assert gate_verdict(cfg, passing, baseline, candidate, None, 19)[0] is None  # too few prompts: no verdict
    # By default the gate needs 50 held-out prompts: at 49 it gives figures only, at 50 a verdict.
    default = EvalJobConfig(candidate=5, baseline=1, judge="hidden")
    few, reason = gate_verdict(default, passing, baseline, candidate, None, 49)
    assert few is None and "the gate needs at least 50 held-out prompts" in reason
    assert gate_verdict(default, passing, baseline, candidate, None, 50)[0] is True


def _gold_world(data: dict, gold_models: list[str]) -> int:
    """The fixture's annotators turned gold (one gold model each, in turn), a snapshot of their rankings,
    and a policy trained on it (its id)."""
    from annotator.simulated import Profile

    with Store.open(data["dir"] / "rankloop.duckdb") as store:
        names = [r["name"] for r in store.query("SELECT name FROM annotators ORDER BY id")]
        for i, name in enumerate(names):
            profile = Profile(gold_model=gold_models[i % len(gold_models)]).model_dump_json()
            with store.write() as cur:
                cur.execute("UPDATE annotators SET profile = ? WHERE name = ?", [profile, name])
        snap = create_snapshot(store, data["dir"], SnapshotFilters(eval_fraction=0.3))
        path = data["dir"].parent / "dpo"
        return register_model(
            store, "policy", path, parent_id=data["base"], snapshot_id=snap.id, status="candidate"
        )


@pytest.mark.parametrize(
    ("gold_models", "judge", "message"),
    [
        (
            [],
            "gold",
            "judge 'gold' needs a snapshot ranked by gold simulated annotators of one gold model; none",
        ),
        (["/m/gold"], "hidden", "its annotators rank by a gold reward model: --judge gold"),
        (["/m/gold", "/m/other"], "gold", "it has 2: /m/gold, /m/other"),
    ],
)
def test_the_gold_judge_needs_the_gold_annotators_of_one_gold_model(
    gold_models: list[str], judge: str, message: str, data: dict, capsys
) -> None:
    policy = _gold_world(data, gold_models) if gold_models else data["policy"]
    argv = ["--data", str(data["dir"]), "evaluate", "policy", str(policy), "--judge", judge]
    assert main([*argv, "--reward-model", str(data["reward"])]) == 2
    assert message in capsys.readouterr().err
    with Store.open(data["dir"] / "rankloop.duckdb") as store:
        assert store.scalar("SELECT count(*) FROM jobs") == 0
