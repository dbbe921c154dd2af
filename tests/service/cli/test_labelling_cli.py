"""`rankloop guidelines`, `quiz`, `review`, `leaderboard --style-control` and `snapshot --reviews`, run
in-process on a data directory (no service): the output people read and the errors they get."""

from pathlib import Path

import pytest

from annotator.accounts import add_annotator
from annotator.queue import next_task, submit
from annotator.ranking import Submission
from service.cli.main import main
from service.core.settings import AnnotationOptions
from service.core.store import Store
from tests.support.seeding import seed_tasks


def test_the_labelling_commands(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        task_id, _ = seed_tasks(store, n_prompts=1, k=3, required=2)  # two tasks mixing two system prompts
        split = AnnotationOptions(gold_rate=0, overlap_tau=0.5, overlap_cap=2)
        for name, ranks in (("s1", [1, 2, 3]), ("s2", [3, 2, 1])):
            who = add_annotator(store, name, "simulated")
            while (t := next_task(store, who, split)) is not None:
                sid = f"{name}-{t['task_id']}"
                submit(store, who, Submission(task_id=t["task_id"], submission_id=sid, ranks=ranks), split)
        add_annotator(store, "rita", "reviewer", "correct horse 44")
    guide = tmp_path / "guide.md"
    guide.write_text("Prefer the correct answer.")
    run = ["--data", str(data)]
    assert main([*run, "guidelines", "set", str(guide), "--batch", "b1"]) == 0
    assert "guideline version 1 for batch b1 stored" in capsys.readouterr().out
    empty = tmp_path / "empty.md"
    empty.write_text(" \n")
    assert main([*run, "guidelines", "set", str(empty)]) == 2
    assert "the guideline is empty" in capsys.readouterr().err
    assert main([*run, "guidelines", "list"]) == 0
    assert "Prefer the correct answer." in capsys.readouterr().out
    assert main([*run, "review", "contested"]) == 0
    assert f"{task_id}" in capsys.readouterr().out
    resolve = [*run, "review", "resolve", str(task_id)]
    assert main([*resolve, *"--reviewer s1 --ranks 1,2,3 --rationale x".split()]) == 2
    assert "needs role reviewer or admin" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main([*resolve, "--reviewer", "rita", "--ranks", "1,2"])
    assert e.value.code == 2 and "--rationale" in capsys.readouterr().err
    assert main([*resolve, *"--reviewer rita --ranks 1,2 --rationale x".split()]) == 2
    assert "the task has 3 candidates but 2 ranks were given" in capsys.readouterr().err
    with Store.open(data / "rankloop.duckdb") as store:  # the refusals stored nothing
        assert store.scalar("SELECT count(*) FROM adjudications") == 0
        assert store.scalar("SELECT count(*) FROM guidelines") == 1
    assert (
        main(
            [*resolve, "--reviewer", "rita", "--ranks", "1,3,2", "--rationale", "1 is right"]
            + ["--strength", "clearly", "--strength", "slightly"]
        )
        == 0
    )
    assert f"task {task_id} resolved: final ranks [1, 3, 2]" in capsys.readouterr().out
    assert main([*run, "quiz", "results"]) == 0
    capsys.readouterr()
    assert main([*run, "leaderboard", "--style-control"]) == 0
    assert "style coefficients" in capsys.readouterr().out
    assert main([*run, "snapshot", "--reviews", "raw"]) == 0
    with pytest.raises(SystemExit):
        main([*run, "snapshot", "--reviews", "sometimes"])
    assert "raw" in capsys.readouterr().err
