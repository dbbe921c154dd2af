"""Snapshots: deterministic ids, a prompt-disjoint split, filters, and bad input."""

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from annotator import queue
from annotator.accounts import add_annotator
from annotator.ranking import Flag, Submission
from reward.data import read_snapshot
from service.cli.main import main
from service.core.errors import UserError
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.data.snapshots import SnapshotFilters, create_snapshot, split_of
from tests.support.seeding import seed_rankings, seed_tasks


@pytest.fixture
def ranked(tmp_path: Path):
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_rankings(store, n_prompts=30, annotators=2, required=2)
        yield store, data


def test_same_data_same_id_and_prompt_disjoint_split(ranked) -> None:
    store, data = ranked
    first = create_snapshot(store, data, SnapshotFilters())
    again = create_snapshot(store, data, SnapshotFilters())
    assert first.created and not again.created and first.id == again.id
    rows = read_snapshot(first.path)
    assert len(rows) == store.scalar("SELECT count(*) FROM rankings") == first.manifest["counts"]["rankings"]
    train = {r["prompt"] for r in rows if r["split"] == "train"}
    held = {r["prompt"] for r in rows if r["split"] == "eval"}
    assert train and held and not train & held
    assert all(r["split"] == split_of(r["prompt"], 0.2) for r in rows)
    # Candidates in display order, with everything a trainer or evaluator needs.
    row = rows[0]
    task = store.query("SELECT sample_ids FROM tasks WHERE id = ?", [row["task_id"]])[0]
    assert row["sample_ids"] == task["sample_ids"] and len(row["texts"]) == len(row["ranks"]) == 4
    assert row["system_prompts"][0].endswith(" v1") and row["annotator_role"] == "simulated"
    # Ground truth from the simulated annotator's profile, for held-out rows only.
    assert all(len(r["hidden_utility"]) == 4 for r in rows if r["split"] == "eval")
    assert all(r["hidden_utility"] is None for r in rows if r["split"] == "train")
    assert all(0 <= r["task_agreement"] <= 1 for r in rows)  # every task here was ranked twice
    manifest = json.loads((first.path.parent / "manifest.json").read_text())
    assert manifest["id"] == first.id and manifest["filters"]["eval_fraction"] == 0.2
    # New data, new id; the old snapshot is untouched.
    before = pq.read_table(first.path).num_rows
    seed_rankings(store, n_prompts=3, annotators=2, required=2, seed=1)
    assert create_snapshot(store, data, SnapshotFilters()).id != first.id
    assert pq.read_table(first.path).num_rows == before


def test_filters(ranked) -> None:
    store, data = ranked
    who = add_annotator(store, "flagger", "simulated")
    seed_tasks(store, n_prompts=1, k=2, styles=("brief",), seed=7)
    t = queue.next_task(store, who, AnnotationOptions(gold_rate=0))
    assert t is not None
    queue.submit(
        store,
        who,
        Submission(
            task_id=t["task_id"], submission_id="f", ranks=[1, 2], flags=[Flag(position=1, reason="unsafe")]
        ),
    )
    everything = create_snapshot(store, data, SnapshotFilters()).manifest["counts"]
    no_flags = create_snapshot(store, data, SnapshotFilters(exclude_flagged=True)).manifest["counts"]
    assert no_flags["rankings"] == everything["rankings"] - 1 and no_flags["dropped"]["flagged"] == 1
    no_sim0 = create_snapshot(store, data, SnapshotFilters(exclude_annotators=["sim-0"])).manifest["counts"]
    assert no_sim0["rankings"] == everything["rankings"] - store.scalar(
        "SELECT count(*) FROM rankings r JOIN annotators a ON a.id = r.annotator_id WHERE a.name = 'sim-0'"
    )
    with store.write() as cur:  # sim-1 did badly on gold
        cur.execute(
            "UPDATE rankings SET gold_agreement = 0.2 WHERE id = (SELECT min(r.id) FROM rankings r "
            "JOIN annotators a ON a.id = r.annotator_id WHERE a.name = 'sim-1')"
        )
    gold = create_snapshot(store, data, SnapshotFilters(min_gold_agreement=0.5)).manifest["counts"]
    assert gold["dropped"]["gold_agreement"] == store.scalar(
        "SELECT count(*) FROM rankings r JOIN annotators a ON a.id = r.annotator_id WHERE a.name = 'sim-1'"
    )
    with pytest.raises(UserError, match="no annotator named 'nobody'"):
        create_snapshot(store, data, SnapshotFilters(exclude_annotators=["nobody"]))


def test_snapshot_command_and_bad_input(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    assert main(["--data", str(data), "snapshot"]) == 2
    assert "no rankings pass the filters" in capsys.readouterr().err
    with Store.open(data / "rankloop.duckdb") as store:
        seed_rankings(store, n_prompts=10, annotators=1)
    assert main(["--data", str(data), "snapshot", "--exclude-flagged"]) == 0
    out = capsys.readouterr().out
    assert (
        "written" in out and "30 rankings" in out
    )  # 10 prompts x 3 styles x 4 samples = 30 tasks, 1 ranking each
    assert main(["--data", str(data), "snapshot", "--exclude-flagged"]) == 0
    assert "unchanged (same data as before)" in capsys.readouterr().out
    assert main(["--data", str(data), "snapshot", "--eval-fraction", "1.5"]) == 2
    assert "eval_fraction" in capsys.readouterr().err
    with Store.open(data / "rankloop.duckdb") as store:
        assert store.scalar("SELECT count(*) FROM snapshots") == 1


def test_hidden_utilities_only_for_held_out_rows_of_annotators_who_follow_one(tmp_path: Path) -> None:
    """A snapshot carries the simulated ground truth only where it is used to measure (eval rows) and only
    for annotators whose rankings follow it: never for one who ranks at random."""
    from annotator import simulate_run
    from annotator.simulated import Profile

    with Store.open(tmp_path / "data" / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=40, k=3, styles=("brief",), required=2)
        profiles = simulate_run.ensure_accounts(
            store, {"steady": Profile(noise=0.3), "coin": Profile(unreliable=True)}
        )
        simulate_run.run(
            simulate_run.LocalQueue(store, AnnotationOptions(gold_rate=0)), profiles, seed=0, parallel=False
        )
        rows = read_snapshot(
            create_snapshot(store, tmp_path / "data", SnapshotFilters(eval_fraction=0.5)).path
        )
    held = [r for r in rows if r["split"] == "eval"]
    assert {r["annotator"] for r in held} == {"steady", "coin"}
    assert all(len(r["hidden_utility"]) == 3 for r in held if r["annotator"] == "steady")
    assert all(r["hidden_utility"] is None for r in rows if r["annotator"] == "coin" or r["split"] == "train")
