"""The command a vLLM server runs: rankloop's launcher with the engine core's start method."""

from pathlib import Path

import pytest

from service.core.settings import VLLMOptions
from service.engine.server import is_cpu_build, server_command
from service.engine.vllm_main import start_method


def test_the_start_method_is_taken_out_of_vllms_arguments() -> None:
    assert start_method(["--engine-start=fork", "--model", "m", "--port", "1"]) == (
        "fork",
        ["--model", "m", "--port", "1"],
    )
    assert start_method(["--model", "m"]) == ("spawn", ["--model", "m"])  # vLLM's own choice
    with pytest.raises(SystemExit, match="must be one of fork, spawn"):
        start_method(["--engine-start=thread"])


def test_one_worker_cpu_servers_fork_their_engine_unless_told_otherwise(tmp_path: Path) -> None:
    assert is_cpu_build()  # what this machine runs; on a GPU build every server spawns
    cmd = server_command(tmp_path, "m", "127.0.0.1", 8001, VLLMOptions())
    assert cmd[1:4] == ["-m", "service.engine.vllm_main", "--engine-start=fork"]
    mp = VLLMOptions(extra_args=["--distributed-executor-backend", "mp"])
    assert "--engine-start=spawn" in server_command(
        tmp_path, "m", "127.0.0.1", 8001, mp
    )  # vLLM binds its workers
    spawn = server_command(tmp_path, "m", "127.0.0.1", 8001, VLLMOptions(engine_start="spawn"))
    assert "--engine-start=spawn" in spawn and "--engine-start=fork" not in spawn
    with pytest.raises(ValueError, match="fork"):
        VLLMOptions(engine_start="thread")  # type: ignore[arg-type]
