"""`rankloop sample`: bad input changes nothing; a real run fills the database and leaves no vLLM behind."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.cli.main import main
from service.core.store import Store
from tests.support import REPO
from tests.support.procs import vllm_processes

EXAMPLES = REPO / "examples"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    assert main(["--data", str(d), "prompts", "add", str(EXAMPLES / "prompts.jsonl")]) == 0
    assert main(["--data", str(d), "system-prompts", "add", str(EXAMPLES / "system_prompts.yaml")]) == 0
    return d


def snapshot(data: Path) -> dict:
    with Store.open(data / "rankloop.duckdb") as s:
        return s.counts()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--k", "0"], "--k must be between 1 and 16, got 0"),
        (["--k", "17"], "--k must be between 1 and 16, got 17"),
        (
            ["--system-prompt", "brief", "--system-prompt", "pirate"],
            "unknown system prompt 'pirate'; stored: brief, detailed, friendly",
        ),
        (["--task-size", "9"], "--task-size must be between 2 and 8"),
        (["--mix", "pirate=2"], "NAME=WEIGHT with NAME one of brief, detailed, friendly"),
        (["--max-tokens", "0"], "max_tokens"),
        (["--rankings-per-task", "0"], "--rankings-per-task must be at least 1"),
    ],
)
def test_bad_sample_arguments_change_nothing(data: Path, tiny_model: Path, capsys, args, expected) -> None:
    before = snapshot(data)
    assert main(["--data", str(data), "sample", "--model", str(tiny_model), *args]) == 2
    assert expected in capsys.readouterr().err
    assert snapshot(data) == before


def test_model_directory_that_does_not_exist(data: Path, tmp_path: Path, capsys) -> None:
    before = snapshot(data)
    assert main(["--data", str(data), "sample", "--model", str(tmp_path / "missing")]) == 1
    assert f"model directory {tmp_path / 'missing'} does not exist" in capsys.readouterr().err
    assert snapshot(data) == before


def test_directory_without_config_is_not_a_model(data: Path, tmp_path: Path, capsys) -> None:
    (tmp_path / "notamodel").mkdir()
    assert main(["--data", str(data), "sample", "--model", str(tmp_path / "notamodel")]) == 1
    assert "has no config.json" in capsys.readouterr().err
    assert snapshot(data)["models"] == 0


def test_no_prompts_stored(tmp_path: Path, tiny_model: Path, capsys) -> None:
    d = tmp_path / "empty"
    main(["--data", str(d), "system-prompts", "add", str(EXAMPLES / "system_prompts.yaml")])
    assert main(["--data", str(d), "sample", "--model", str(tiny_model)]) == 2
    assert "no prompts stored" in capsys.readouterr().err


def test_held_data_directory(data: Path, capsys) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print(1, flush=True); "
            "time.sleep(60)",
            str(data / "rankloop.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        holder.stdout.readline()
        assert main(["--data", str(data), "status"]) == 2
        err = capsys.readouterr().err
        assert "rankloop.duckdb is held by another process" in err and "rankloop serve" in err
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_rankloop_sample_end_to_end(data: Path, tiny_model: Path) -> None:
    """The real command in its own process: vLLM started, samples and tasks stored, vLLM gone after.

    24 prompts x 2 system prompts x K=2 gives 96 samples; tasks of K=2 candidates, 2 per prompt.
    """
    cmd = [
        sys.executable,
        "-m",
        "service.cli",
        "--data",
        str(data),
        "sample",
        "--model",
        str(tiny_model),
        "--k",
        "2",
        "--system-prompt",
        "brief",
        "--system-prompt",
        "friendly",
        "--max-tokens",
        "16",
        "--dtype",
        "float32",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=os.environ)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "96 new samples" in done.stdout and "built 48 ranking tasks" in done.stdout
    assert vllm_processes(data / "logs") == set()  # no server, EngineCore or worker left
    status = subprocess.run(
        [sys.executable, "-m", "service.cli", "--data", str(data), "status", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    counts = json.loads(status.stdout)
    assert (counts["samples"], counts["tasks"], counts["models"], counts["open_tasks"]) == (96, 48, 1, 48)
