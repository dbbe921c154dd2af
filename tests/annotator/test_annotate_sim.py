"""Simulated annotators through `rankloop annotate-sim`, locally and through a running service,
with the quality report and the leaderboard checked against their known preference; and the
account commands."""

import io
import shutil
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

import httpx
import pytest

from annotator.quality import annotator_report, batch_alpha, leaderboard_rows
from annotator.simulated import Profile, utility
from service.cli.main import main
from service.core.store import Store
from tests.support.seeding import seed_tasks
from tests.support.servicectl import admin_headers, running_service


def test_annotate_sim_local_recovers_the_hidden_preference(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=30, k=4, styles=("brief", "detailed", "friendly"), required=4)  # 90 tasks
    argv = ["--data", str(data), "annotate-sim", "--annotators", "3", "--unreliable", "1", "--noise", "0.3"]
    assert main(argv) == 0
    assert "stored 360 rankings" in capsys.readouterr().out
    assert main(argv) == 0  # the queue is empty now: nothing more
    assert "stored 0 rankings" in capsys.readouterr().out
    with Store.open(data / "rankloop.duckdb") as store:
        per_task = store.query("SELECT task_id, count(*) AS n FROM rankings GROUP BY task_id")
        assert len(per_task) == 90 and {r["n"] for r in per_task} == {4}
        report = {r["annotator"]: r for r in annotator_report(store)}
        reliable = [report[f"sim-{i}"]["agreement_with_consensus"] for i in (1, 2, 3)]
        got = report["sim-u1"]["agreement_with_consensus"]
        assert got < min(reliable) - 0.1, f"unreliable annotator's agreement {got}, reliable ones {reliable}"
        taus = [report[f"sim-{i}"]["kendall_tau"] for i in (1, 2, 3)]
        got = report["sim-u1"]["kendall_tau"]
        assert got < min(taus) - 0.1, f"unreliable annotator's Kendall tau {got}, reliable ones {taus}"
        (alpha,) = batch_alpha(store)
        assert 0.2 < alpha["alpha_ordinal"] < 1, (
            f"Krippendorff's alpha {alpha['alpha_ordinal']}, needed 0.2..1"
        )
        # Ground truth: mean hidden utility of each system prompt's samples. Wherever two arms differ
        # clearly in truth (0.15 utility), the leaderboard must order them the same way.
        truth = Profile().preference
        by_arm = defaultdict(list)
        for r in store.query("""SELECT s.text, sp.name, sp.text AS sp_text FROM samples s
                                JOIN system_prompts sp ON sp.id = s.system_prompt_id"""):
            by_arm[f"{r['name']} v1"].append(utility(truth, r["text"], r["sp_text"]))
        true_mean = {arm: mean(u) for arm, u in by_arm.items()}
        board = {row["arm"]: row for row in leaderboard_rows(store, "system_prompt", n_boot=50)}
        clear = [(a, b) for a in true_mean for b in true_mean if true_mean[a] > true_mean[b] + 0.15]
        assert clear, f"the test data should hold arms that differ clearly; true means {true_mean}"
        for better, worse in clear:
            assert board[better]["score"] > board[worse]["score"], (
                f"{better} (true mean utility {true_mean[better]:.2f}) should outscore {worse} "
                f"({true_mean[worse]:.2f}); leaderboard {board}"
            )
        best, worst = max(true_mean, key=lambda a: true_mean[a]), min(true_mean, key=lambda a: true_mean[a])
        assert board[best]["ci_low"] > board[worst]["ci_high"], (
            f"best and worst arms should be told apart with confidence: {board[best]} vs {board[worst]}"
        )


def _rankings(db: Path) -> dict[tuple[str, int], list[int]]:
    with Store.open(db) as store:
        rows = store.query("""SELECT a.name, r.task_id, r.ranks FROM rankings r
                              JOIN annotators a ON a.id = r.annotator_id""")
    return {(r["name"], r["task_id"]): r["ranks"] for r in rows}


@pytest.mark.slow
def test_annotate_sim_gives_the_same_rankings_whatever_the_thread_order(tmp_path: Path, capsys) -> None:
    """Each ranking's randomness depends on (seed, annotator, task) only: two local runs on copies of
    one database, and a run through a running service, store the same rankings."""
    origin = tmp_path / "origin"
    with Store.open(origin / "rankloop.duckdb") as store:
        seed_tasks(
            store, n_prompts=8, k=4, styles=("brief", "detailed"), required=4
        )  # 16 tasks, all 4 rank each
    copies = {}
    for name in ("a", "b", "served"):
        copies[name] = tmp_path / name
        copies[name].mkdir()
        shutil.copy(origin / "rankloop.duckdb", copies[name] / "rankloop.duckdb")
    argv = ["annotate-sim", "--annotators", "3", "--unreliable", "1", "--seed", "7"]
    for name in ("a", "b"):
        assert main(["--data", str(copies[name]), *argv]) == 0
    with running_service(copies["served"]):
        assert main(["--data", str(copies["served"]), *argv]) == 0
    assert capsys.readouterr().out.count("stored 64 rankings") == 3
    first = _rankings(copies["a"] / "rankloop.duckdb")
    assert len(first) == 64
    for name in ("b", "served"):
        other = _rankings(copies[name] / "rankloop.duckdb")
        differ = [key for key in first if other.get(key) != first[key]]
        assert not differ, (
            f"{len(differ)} of 64 rankings differ between run 'a' and run {name!r}: {differ[:5]}"
        )


@pytest.mark.slow
def test_annotators_and_annotate_sim_through_a_running_service(tmp_path: Path, capsys, monkeypatch) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=4, k=2, required=2)  # 8 tasks x R=2
    monkeypatch.setattr(sys, "stdin", io.StringIO("alice-password\n"))
    assert main(["--data", str(data), "annotators", "add", "alice", "--password-stdin"]) == 0
    with running_service(data, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0"}) as url:
        # The database is held by the service, so these can only work through its admin API.
        monkeypatch.setattr(sys, "stdin", io.StringIO("boss-password\n"))
        assert (
            main(["--data", str(data), "annotators", "add", "boss", "--role", "admin", "--password-stdin"])
            == 0
        )
        assert main(["--data", str(data), "annotate-sim", "--annotators", "2"]) == 0
        assert "stored 16 rankings" in capsys.readouterr().out
        assert main(["--data", str(data), "annotators", "disable", "alice"]) == 0
        assert main(["--data", str(data), "annotators", "list"]) == 0
        listing = capsys.readouterr().out
        assert "boss" in listing and "sim-2" in listing
        assert (
            httpx.post(
                f"{url}/api/annotate/login", json={"name": "alice", "password": "alice-password"}
            ).status_code
            == 401
        )  # disabled
        assert httpx.get(f"{url}/admin/status", headers=admin_headers(data)).json()["rankings"] == 16
        # Export too: the service writes the file and streams it to the caller's path.
        assert (
            main(["--data", str(data), "export", "--format", "trl", "--out", str(tmp_path / "x.jsonl")]) == 0
        )
        assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 16


def test_account_command_errors_change_nothing(tmp_path: Path, capsys, monkeypatch) -> None:
    data = tmp_path / "data"
    for argv, stdin, message in [
        (["annotators", "add", "bob", "--password-stdin"], "short\n", "at least 8 characters"),
        (["annotators", "add", "bad name", "--password-stdin"], "long-enough\n", "is not valid"),
        (["annotators", "disable", "nobody"], "", "no annotator named 'nobody'"),
        (["annotate-sim", "--annotators", "0"], "", "at least one annotator"),
        (["tasks", "gold", "1", "--ranks", "1,x"], "", "comma-separated integers"),
        (["tasks", "gold", "7", "--ranks", "1,2"], "", "there is no task 7"),
    ]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        assert main(["--data", str(data), *argv]) == 2, argv
        assert message in capsys.readouterr().err
    with Store.open(data / "rankloop.duckdb") as store:
        assert store.counts()["annotators"] == 0
