"""Simulated annotators through `rankloop annotate-sim`, locally and through a running service,
with the quality report and the leaderboard checked against their known preference; and the
account commands."""

import io
import sys
from collections import defaultdict
from pathlib import Path
from statistics import mean

import httpx
import pytest
from seeding import seed_tasks
from servicectl import admin_headers, running_service

from annotator.quality import annotator_report, batch_alpha, leaderboard_rows
from annotator.simulated import Profile, utility
from service.cli import main
from service.store import Store


def test_annotate_sim_local_recovers_the_hidden_preference(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=12, k=4, styles=("brief", "detailed", "friendly"), required=4)  # 36 tasks
    argv = ["--data", str(data), "annotate-sim", "--annotators", "3", "--unreliable", "1", "--noise", "0.3"]
    assert main(argv) == 0
    assert "stored 144 rankings" in capsys.readouterr().out
    assert main(argv) == 0  # the queue is empty now: nothing more
    assert "stored 0 rankings" in capsys.readouterr().out
    with Store.open(data / "rankloop.duckdb") as store:
        per_task = store.query("SELECT task_id, count(*) AS n FROM rankings GROUP BY task_id")
        assert len(per_task) == 36 and {r["n"] for r in per_task} == {4}
        report = {r["annotator"]: r for r in annotator_report(store)}
        reliable = [report[f"sim-{i}"]["agreement_with_consensus"] for i in (1, 2, 3)]
        assert report["sim-u1"]["agreement_with_consensus"] < min(reliable)
        assert report["sim-u1"]["kendall_tau"] < min(report[f"sim-{i}"]["kendall_tau"] for i in (1, 2, 3))
        (alpha,) = batch_alpha(store)
        assert 0.2 < alpha["alpha_ordinal"] < 1
        # Ground truth: the system prompt whose samples have the highest mean hidden utility wins.
        truth = Profile().preference
        by_arm = defaultdict(list)
        for r in store.query("""SELECT s.text, sp.name, sp.text AS sp_text FROM samples s
                                JOIN system_prompts sp ON sp.id = s.system_prompt_id"""):
            by_arm[f"{r['name']} v1"].append(utility(truth, r["text"], r["sp_text"]))
        expected = sorted(by_arm, key=lambda a: -mean(by_arm[a]))
        board = leaderboard_rows(store, "system_prompt", n_boot=50)
        assert board[0]["arm"] == expected[0]
        assert board[0]["ci_low"] > board[-1]["ci_high"]  # best and worst are told apart with confidence


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
        assert main(["--data", str(data), "annotators", "add", "boss", "--role", "admin", "--password-stdin"]) == 0
        assert main(["--data", str(data), "annotate-sim", "--annotators", "2"]) == 0
        assert "stored 16 rankings" in capsys.readouterr().out
        assert main(["--data", str(data), "annotators", "disable", "alice"]) == 0
        assert main(["--data", str(data), "annotators", "list"]) == 0
        listing = capsys.readouterr().out
        assert "boss" in listing and "sim-2" in listing
        assert httpx.post(f"{url}/api/annotate/login", json={"name": "alice", "password": "alice-password"}
                          ).status_code == 401  # disabled
        assert httpx.get(f"{url}/admin/status", headers=admin_headers(data)).json()["rankings"] == 16
        assert main(["--data", str(data), "export", "--format", "trl", "--out", str(tmp_path / "x.jsonl")]) == 2
        err = capsys.readouterr().err
        assert "held by another process" in err and f"rankloop serve is running at {url}" in err


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
