"""The evaluate job's checks, before any job exists: each bad input gets one message and leaves no
job behind; held-out prompts from a file are stored apart and never sampled for training; the gate
and an evaluation go through the registry. (The whole evaluation, with vLLM, is in test_policy_loop.)"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reward.data import read_snapshot
from service.cli.main import main
from service.core.registry import get_model, record_evaluation, register_model
from service.core.settings import Settings
from service.core.store import Store
from service.data.snapshots import SnapshotFilters, create_snapshot
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
    assert "needs a snapshot ranked by simulated annotators" in capsys.readouterr().err


def test_held_out_prompts_are_never_sampled_for_training(tmp_path: Path) -> None:
    from service.jobs.evaluate_job import EvalJobConfig, held_out

    data = tmp_path / "data"
    prompts = tmp_path / "held.txt"
    prompts.write_text("A question kept for evaluation?\nAnother one?\n")
    with Store.open(data / "rankloop.duckdb") as store:
        from service.data.prompts import add_system_prompts

        add_system_prompts(store, {"brief": "Answer in one short sentence."})
        got, sps, profiles, overlap = held_out(store, EvalJobConfig(candidate=1, prompt_file=prompts))
        assert [p["text"] for p in got] == ["A question kept for evaluation?", "Another one?"]
        assert [s["name"] for s in sps] == ["brief"] and profiles == [] and overlap == 0
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
