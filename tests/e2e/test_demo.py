"""`rankloop demo --small --no-serve` end to end on a fresh data directory, then again (cached): the
loop closes (the unreliable annotator is flagged and left out, the reward model beats chance
against the hidden preference, the aligned policy beats SFT under it, blind tasks wait for a
person, a completion went through the gateway), and report.html renders every chart in Chromium."""

import json
import os
import signal
import subprocess
import sys
from html import escape
from pathlib import Path

import pytest

from service.cli.demo import TINY_WORLD_GATE_PROMPTS
from service.core.store import Store
from service.data.lineage import snapshot_summary
from tests.support import REPO
from tests.support.browser import ARGS, CHROMIUM
from tests.support.demo_round import DemoRound, demo

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def first(demo_round: DemoRound) -> dict:
    return {"data": demo_round.data, "out": demo_round.out}


def figures(data: Path) -> dict:
    with Store.open(data / "rankloop.duckdb") as store:
        rnd = store.query("SELECT * FROM rounds WHERE kind = 'demo'")
        loop_rounds = store.query("SELECT * FROM rounds WHERE kind = 'loop'")
        models = {
            r["id"]: {**r, "metrics": json.loads(r["metrics"] or "{}")}
            for r in store.query("SELECT * FROM models")
        }
        snap = snapshot_summary(store, rnd[0]["snapshot_id"]) if rnd and rnd[0]["snapshot_id"] else {}
        open_tasks = store.query(
            """SELECT t.id FROM tasks t WHERE t.batch LIKE 'human evaluation%' AND NOT EXISTS (
                 SELECT 1 FROM rankings r WHERE r.task_id = t.id)"""
        )
        served = store.query("SELECT status, completion_tokens, route FROM traffic")
    return {
        "rounds": rnd,
        "loop_rounds": loop_rounds,
        "models": models,
        "snapshot": snap,
        "open_eval_tasks": open_tasks,
        "traffic": served,
    }


def test_demo_closes_the_loop(first: dict) -> None:
    out, f = first["out"], figures(first["data"])
    for stage in [
        "pretraining the tiny chat model",
        "supervised fine-tuning",
        "sampling responses",
        "UNRELIABLE: left out",
        "training the reward model",
        "(dpo) from model",
        "hidden judge: win rate",
        "deployed policy #",
        "POST http",
        "assistant:",
        "report:",
        "annotator app:",
        "OpenAI API:",
    ]:
        assert stage in out, f"{stage!r} missing from the demo's output:\n{out[-4000:]}"
    [rnd] = f["rounds"]
    assert rnd["status"] == "done" and json.loads(rnd["excluded"]) == ["sim-u1"]  # the random ranker, flagged
    assert f["snapshot"]["annotator_names"] == ["sim-1", "sim-2", "sim-3"]  # and left out of training
    reward = f["models"][rnd["reward_model_id"]]["metrics"]["eval"]["hidden"]
    assert reward["model_vs_hidden"] > 0.6, reward  # chance is 0.5
    policy = f["models"][rnd["policy_model_id"]]
    ev = policy["metrics"]["evaluations"][-1]
    assert ev["judges"]["hidden"]["ci"][0] > 0.5, ev["judges"]["hidden"]  # beats SFT, 95% interval above even
    assert ev["baseline"] == rnd["sampled_model_id"] and f["models"][ev["baseline"]]["kind"] == "sft"
    assert rnd["deployed_model_id"] == policy["id"] and policy["status"] == "active"
    assert f["open_eval_tasks"], "no blind task was left in the queue for a person"
    assert [t["status"] for t in f["traffic"]] == [200] and f["traffic"][0]["completion_tokens"] > 0
    report = (first["data"] / "report.html").read_text()
    assert "yes: left out of training" in report and f"Deployed model #{policy['id']}" in report
    assert (
        "Answers side by side (6 held-out prompts)" in report
        and escape(ev["examples"][0]["candidate"]) in report
    )


def test_report_renders_every_chart_in_chromium(first: dict) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto((first["data"] / "report.html").as_uri())
        charts, drawn = page.locator("svg.chart"), 0
        for i in range(charts.count()):
            chart = charts.nth(i)
            box = chart.bounding_box()
            label = chart.get_attribute("aria-label")
            assert box and box["width"] > 100 and box["height"] > 50, label
            # A chart draws its marks or says it has no data yet (the model leaderboard, until someone ranks
            # the deployed policy against SFT); nothing else.
            marks, empty = chart.locator(".mark").count(), chart.locator(".empty").count()
            assert (marks >= 1) != (empty == 1), f"chart {label!r}: {marks} marks, {empty} empty notes"
            drawn += marks >= 1
        assert drawn >= 8
        browser.close()


def test_a_second_run_reuses_everything(first: dict) -> None:
    before = figures(first["data"])
    out = demo(first["data"])
    assert "using the tiny model already built" in out and "using SFT model" in out and "using round" in out
    after = figures(first["data"])
    assert after["models"].keys() == before["models"].keys() and len(after["rounds"]) == 1
    assert len(after["traffic"]) == 2  # the second run's completion went through the gateway too


def loop(data: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "--data",
            str(data),
            "loop",
            "--rounds",
            "1",
            "--k",
            "2",
            "--eval-samples",  # the round's evaluation is not what this test checks: a small one
            "2",
            "--gate-min-prompts",  # the tiny world holds out 21 prompts: the gate decides on them
            str(TINY_WORLD_GATE_PROMPTS),
            *args,
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_loop_samples_the_deployed_policy_and_resumes_after_a_crash(first: dict) -> None:
    data = first["data"]
    deployed = figures(data)["rounds"][0]["deployed_model_id"]
    proc = loop(data)
    seen = []
    for (
        line
    ) in proc.stdout:  # crash (the whole process group, trainer included) once the snapshot is recorded
        seen.append(line)
        if "step 4/7" in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert any("step 4/7" in line for line in seen), "".join(seen)[-3000:]
    again = loop(data)
    out = again.communicate(timeout=1200)[0]
    assert again.returncode == 0, out[-3000:]
    assert "resuming round 2 after its 'snapshot' step" in out and "[round 2, step 4/7]" in out
    assert "[round 2, step 1/7]" not in out  # sampling and ranking were not redone
    f = figures(data)
    [second] = f["loop_rounds"]
    assert second["status"] == "done" and second["sampled_model_id"] == deployed
    won = f["models"][second["policy_model_id"]]["status"] == "active"
    assert second["deployed_model_id"] == (
        second["policy_model_id"] if won else deployed
    )  # a loser never deploys
    assert "Round 2 (loop, done)" in (data / "report.html").read_text()


def test_bad_demo_input_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for args, message in (
        (["--model", str(tmp_path)], "not a Hugging Face model directory"),
        (["--method", "ppo"], "invalid choice: 'ppo'"),
        (["--real", "--method", "grpo"], "--real runs DPO from SmolLM2-135M-Instruct"),
        (["--real", "--hh", str(tmp_path / "hh.jsonl")], "no such file; give Anthropic HH-RLHF pairs"),
        (["--hh", str(tmp_path / "hh.jsonl")], "--hh is for --real"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "--data", str(data), "demo", *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not data.exists()
