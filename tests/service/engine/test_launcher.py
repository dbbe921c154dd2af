"""The warm launcher (service/engine/launcher.py): servers forked from one process that imported vLLM,
each in a group of its own with its request's environment; a dead launcher is replaced, its servers live
on; a bad request fails alone. The test has a launcher of its own (a private XDG_RUNTIME_DIR), so the
suite's shared one is never killed under another test."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from service.core.settings import VLLMOptions
from service.engine import launcher
from service.engine.server import free_port, is_cpu_build, start_server


@pytest.fixture
def own_launcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # Short: a Unix socket's path must fit ~108 bytes, and pytest's tmp_path may not leave room.
    runtime = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    yield runtime
    for p in psutil.process_iter():  # the test's launcher, whatever state the test left it in
        try:
            if str(runtime) in " ".join(p.cmdline()):
                p.kill()
        except psutil.Error:
            continue
    shutil.rmtree(runtime, ignore_errors=True)


def launcher_of(server) -> psutil.Process:
    parent = psutil.Process(server.process.pid).parent()
    assert parent is not None and "service.engine.launcher" in " ".join(parent.cmdline()), parent
    return parent


@pytest.mark.slow
@pytest.mark.skipif(not is_cpu_build(), reason="the warm launcher serves CPU builds of vLLM")
def test_servers_fork_from_one_launcher_which_is_replaced_when_it_dies_and_bad_requests_fail_alone(
    own_launcher: Path, tiny_model: Path, tmp_path: Path
) -> None:
    opts = VLLMOptions(dtype="float32", max_model_len=256)
    first = start_server(tiny_model, opts, tmp_path / "logs")
    second = start_server(tiny_model, opts, tmp_path / "logs", api_key="secret-key")
    try:
        warm = launcher_of(first)
        assert launcher_of(second).pid == warm.pid  # one import of vLLM for both
        assert psutil.Process(first.process.pid).ppid() != os.getpid()  # not this process's child
        assert {os.getpgid(s.process.pid) for s in (first, second)} == {first.process.pid, second.process.pid}
        assert "service.engine.vllm_main" in " ".join(psutil.Process(first.process.pid).cmdline())
        # The request's environment, not the launcher's: the key reached the second server alone.
        assert httpx.get(f"{second.base_url}/models").status_code == 401
        assert httpx.get(f"{first.base_url}/models").status_code == 200

        warm.kill()
        warm.wait(10)
        assert httpx.get(first.health_url).status_code == 200  # its servers live on
        third = start_server(tiny_model, opts, tmp_path / "logs")
        try:
            assert launcher_of(third).pid != warm.pid
        finally:
            third.stop()
        assert third.process.returncode == 0 and third.log_path.read_text().rstrip().endswith(
            f"{launcher.EXIT_LINE}0"
        )
        a_bad_request_fails_alone(own_launcher, tiny_model, tmp_path)
    finally:
        first.stop()
        second.stop()
    assert not first.alive() and not second.alive()


def a_bad_request_fails_alone(runtime: Path, tiny_model: Path, tmp_path: Path) -> None:
    env = dict(os.environ)
    [sock] = runtime.glob("rankloop-*/vllm-*.sock")
    with pytest.raises(launcher.LaunchError, match="refused the request: KeyError: 'log'"):
        launcher._ask(sock, {"args": [], "env": env, "cwd": "/"})  # noqa: SLF001
    pid = launcher.launch(["--help"], env, tmp_path / "help.log")
    assert launcher.LaunchedProcess(pid, tmp_path / "help.log").wait(60) == 0
    assert "usage" in (tmp_path / "help.log").read_text()
    # A server killed at once is reaped, and its log says how it ended.
    args = ["--model", str(tiny_model), "--port", str(free_port()), "--dtype", "float32"]
    killed = launcher.launch(args, env, tmp_path / "killed.log")
    os.kill(killed, signal.SIGKILL)
    assert launcher.LaunchedProcess(killed, tmp_path / "killed.log").wait(10) == -9


def test_a_runtime_directory_too_deep_or_missing_falls_back_to_the_temporary_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / ("d" * 90)
    deep.mkdir()
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(deep))
    assert launcher.launcher_dir() == Path(tempfile.gettempdir()) / f"rankloop-{os.getuid()}"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "missing"))  # set, but never created
    assert launcher.launcher_dir() == Path(tempfile.gettempdir()) / f"rankloop-{os.getuid()}"
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/tmp")
    assert launcher.launcher_dir() == Path("/tmp") / f"rankloop-{os.getuid()}"
