"""Rounds of the loop without the slow steps: the round record and its resume point, the unreliable-
annotator check, waiting for people's rankings, and the report built from the database."""

import threading
import time
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from annotator import queue
from annotator.accounts import add_annotator
from annotator.quality import unreliable
from annotator.ranking import Submission
from service.cli.client import LocalClient, connect
from service.cli.round_steps import RoundPlan, run_round
from service.core.errors import UserError
from service.core.registry import register_model
from service.core.settings import AnnotationOptions, load_settings
from service.data.rounds import RoundJob, RoundStart, RoundStep, finish_step, next_step, open_round, set_job
from service.report.report import build_report
from tests.support.seeding import seed_tasks


def test_a_round_resumes_at_its_first_unfinished_step(store) -> None:
    row = open_round(store, RoundStart(kind="loop"))
    assert next_step(row) == "sample" and row["status"] == "running"
    row = finish_step(
        store,
        RoundStep(
            round_id=row["id"], step="sample", seconds=3.04, values={"batch": "b1", "sampled_model_id": 7}
        ),
    )
    row = finish_step(store, RoundStep(round_id=row["id"], step="rank", values={"excluded": ["sim-u1"]}))
    set_job(store, RoundJob(round_id=row["id"], job_id=41))
    again = open_round(store, RoundStart(kind="loop"))  # a crashed run comes back to the same round
    assert again["id"] == row["id"] and next_step(again) == "snapshot" and again["job_id"] == 41
    assert (
        again["batch"] == "b1"
        and again["excluded"] == ["sim-u1"]
        and again["stages"] == {"sample": 3.0, "rank": 0}
    )
    assert open_round(store, RoundStart(kind="demo"))["id"] != row["id"]  # each command has its own
    with pytest.raises(UserError, match="is at step 'snapshot', not 'reward'"):  # steps run in order
        finish_step(store, RoundStep(round_id=row["id"], step="reward"))
    for step in ("snapshot", "reward", "policy", "evaluate"):
        row = finish_step(store, RoundStep(round_id=row["id"], step=step))
        assert row["job_id"] is None  # a finished step's job is not followed again
    done = finish_step(store, RoundStep(round_id=row["id"], step="deploy", finished=True))
    assert done["status"] == "done" and done["finished_at"] is not None and next_step(done) is None
    with pytest.raises(UserError, match="is done; start another"):
        finish_step(store, RoundStep(round_id=row["id"], step="deploy"))
    assert open_round(store, RoundStart(kind="loop"))["id"] > row["id"]  # the next run starts a new round


def test_bad_round_values_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError, match="snapshot"):
        RoundStep(round_id=1, step="snapshot", values={"snapshot": "x"})
    with pytest.raises(ValidationError, match="excluded"):
        RoundStep(round_id=1, step="rank", values={"excluded": "sim-u1"})
    with pytest.raises(ValidationError, match="seconds"):
        RoundStep(round_id=1, step="rank", seconds=float("inf"))


def test_a_bad_step_name_is_refused_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="sample.*deploy"):
        RoundStep(round_id=1, step="train")


def test_the_unreliable_annotator_is_the_one_far_below_the_others() -> None:
    rows = [
        {"annotator": n, "agreement_with_consensus": a, "overlap_tasks": 40}
        for n, a in (("a", 0.66), ("b", 0.63), ("c", 0.70), ("random", 0.49))
    ]
    assert unreliable(rows) == ["random"]
    assert unreliable(rows[:3]) == []  # careful annotators differ a little
    assert unreliable(rows[2:]) == []  # two cannot be told apart
    few = [{**r, "overlap_tasks": 5} if r["annotator"] == "random" else r for r in rows]
    assert unreliable(few) == []  # too few shared tasks to judge


def test_the_loop_waits_for_people_until_the_target(tmp_path: Path, capsys) -> None:
    settings = load_settings(None, {"data_dir": tmp_path / "data"}, environ={})
    with connect(settings) as c:
        assert isinstance(c, LocalClient)  # no service runs on a fresh data directory
        store = c.ctx.store
        seed_tasks(store, n_prompts=6, k=4)
        people = [add_annotator(store, name, "annotator", f"{name}-password") for name in ("alice", "bob")]
        row = c.call("rounds.open", kind="loop")
        c.call(
            "rounds.step",
            round_id=row["id"],
            step="sample",
            values={"batch": "batch-0", "sampled_model_id": 1},
        )

        def rank() -> None:  # two people rank four tasks each, a little later
            time.sleep(1.0)
            for who in people:
                for _ in range(4):
                    task = queue.next_task(store, who, AnnotationOptions(gold_rate=0))
                    assert task is not None
                    queue.submit(
                        store,
                        who,
                        Submission(
                            task_id=task["task_id"], submission_id=uuid.uuid4().hex, ranks=[1, 2, 3, 4]
                        ),
                    )

        person = threading.Thread(target=rank)
        person.start()
        plan = RoundPlan(annotators="people", target_rankings=8)
        stop = RuntimeError("stopped after the rank step")

        def say(line: str) -> None:
            if "step 3/7" in line:  # only the rank step runs here: sampling and training are tested elsewhere
                raise stop

        with pytest.raises(RuntimeError, match="stopped after the rank step"):
            run_round(c, settings, plan, "loop", 1, say=say)
        person.join()
        row = c.call("rounds.list")[0]
    assert row["step"] == "rank" and row["excluded"] == []  # two annotators: nobody can be flagged
    out = capsys.readouterr().out
    assert "0/8 rankings" in out and "alice" in out and "bob" in out  # it waited, then showed their agreement


def test_the_report_has_every_section_and_no_outside_reference(store) -> None:
    seed_tasks(store, n_prompts=4, k=4)
    html = build_report(store)
    assert "No round has run yet" in html and "Nothing is deployed yet" in html
    row = open_round(store, RoundStart(kind="demo"))
    finish_step(store, RoundStep(round_id=row["id"], step="sample", values={"batch": "batch-0"}))
    html = build_report(store)
    assert "Round 1 (demo, running)" in html and "Annotators (batch batch-0)" in html
    for outside in ("http://", "https://", "<script", "src="):  # opens offline, runs nothing
        assert outside not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_the_report_shows_answers_side_by_side_escaped_with_their_scores(store, tmp_path: Path) -> None:
    seed_tasks(store, n_prompts=2, k=2)
    example = {
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is <b> bold?"}],
        "baseline": "Yes it is <script>alert(1)</script>",
        "candidate": "",
        "scores": {"hidden": [0.25, -1.5]},
    }
    judged = {"win_rate": 0.3, "ci": [0.2, 0.4]}
    evaluation = {
        "baseline": 1,
        "baseline_name": "sft-1",
        "judges": {"reward": {"win_rate": 0.9, "ci": [0.8, 1.0]}, "safety": judged},
        "examples": [example],
        "judge": "reward",
        "safety_reward_model": 7,
        "harm_margin": 0.05,
    }
    policy = register_model(store, "policy", tmp_path / "dpo", metrics={"evaluations": [evaluation]})
    row = open_round(store, RoundStart(kind="demo"))
    for step, values in (("sample", {"batch": "b"}), ("rank", {}), ("snapshot", {}), ("reward", {})):
        finish_step(store, RoundStep(round_id=row["id"], step=step, values=values))
    finish_step(store, RoundStep(round_id=row["id"], step="policy", values={"policy_model_id": policy}))
    html = build_report(store)
    assert (
        "Answers side by side (1 held-out prompts)" in html
        and "model 1 sft-1" in html
        and f"policy #{policy}" in html
    )
    assert (
        "Is &lt;b&gt; bold?" in html
        and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        and "<script" not in html
    )
    assert "<i>(empty)</i>" in html  # an empty answer is shown as one, not as a blank cell
    assert "hidden -1.50" in html and "hidden 0.25" in html  # each side's score under the judge
    # The two-objective gate: both objectives charted, and the rule stated.
    assert "harmlessness: raw" in html and "reward: raw" in html
    assert "non-inferior on harmlessness (reward model #7)" in html and "above 0.45" in html


def test_bad_loop_flags_are_refused_before_a_round_is_opened(tmp_path: Path, capsys) -> None:
    from service.cli.main import main

    data = tmp_path / "data"
    for flags, message in (
        (["--k", "0"], "--k 0: samples per prompt and system prompt are 1..16"),
        (["--human-tasks", "-1"], "--human-tasks and --target-rankings are 0 or more"),
        (["--gold-model", str(tmp_path)], f"gold model {tmp_path} is not a Hugging Face model directory"),
    ):
        assert main(["--data", str(data), "loop", *flags]) == 2
        assert message in capsys.readouterr().err
    with connect(load_settings(None, {"data_dir": data}, environ={})) as c:
        assert c.call("rounds.list") == []
