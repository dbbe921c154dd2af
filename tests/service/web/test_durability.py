"""The data directory against a careless user and a crash: files and secrets private to their owner,
bad settings and output paths refused with a message, and a service killed with SIGKILL under 32
annotators loses and duplicates no acknowledged ranking."""

from __future__ import annotations

import json
import os
import stat
import uuid
from pathlib import Path

import httpx
import pytest

from annotator.accounts import add_annotator
from service.cli.main import main
from service.core.store import Store
from tests.support import REPO
from tests.support.seeding import seed_tasks
from tests.support.servicectl import admin_headers

pytestmark = pytest.mark.slow


def test_data_directory_and_secrets_are_private(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb"):
        pass
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "rankloop.duckdb").stat().st_mode) == 0o600
    os.chmod(data, 0o755)
    os.chmod(data / "rankloop.duckdb", 0o644)
    assert main(["--data", str(data), "status"]) == 0
    err = capsys.readouterr().err
    assert "was open to other users" in err and "was readable by other users" in err
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "rankloop.duckdb").stat().st_mode) == 0o600
    key = data / "admin.key"
    key.write_text("x" * 40)
    os.chmod(key, 0o644)
    assert main(["--data", str(data), "serve", "--port", "0"]) == 2
    assert "readable by other users" in capsys.readouterr().err
    os.chmod(key, 0o600)
    key.write_text("short")
    assert main(["--data", str(data), "serve", "--port", "0"]) == 2
    assert "at least 32" in capsys.readouterr().err
    assert (
        main(["--data", str(data), "--config", str(_settings(tmp_path, "admin_key: short")), "status"]) == 2
    )
    assert "admin_key" in capsys.readouterr().err


def _settings(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"settings-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text + "\n")
    return path


def test_cli_refuses_bad_data_and_bad_outputs_with_a_message(tmp_path: Path, capsys) -> None:
    plain = tmp_path / "afile"
    plain.write_text("not a directory")
    for command in (["status"], ["serve", "--port", "0"]):
        assert main(["--data", str(plain), *command]) == 2
        assert "is a file" in capsys.readouterr().err
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=2, k=2)
    out = tmp_path / "export.jsonl"
    out.write_text("previous export\n")
    for target, words in [
        (tmp_path, "directory"),
        (Path("/dev/full"), "not a regular file"),
        (Path("/proc/rankloop/x.jsonl"), ""),
    ]:
        assert main(["--data", str(data), "export", "--format", "jsonl", "--out", str(target)]) == 2
        assert words in capsys.readouterr().err
    assert out.read_text() == "previous export\n"
    # A damaged database: refused with a message by every command, and by serve before it listens.
    db = data / "rankloop.duckdb"
    db.write_bytes(db.read_bytes()[: 4096 * 3])
    for command in (["status"], ["serve", "--port", "0"]):
        assert main(["--data", str(data), *command]) == 2
        assert "damaged" in capsys.readouterr().err


def test_kill_9_under_32_annotators_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Three times: 32 simulated annotators rank through the service over HTTP, and the service is
    killed with SIGKILL mid-stream. Every acknowledged submission is stored exactly once afterwards,
    and no task gets more than its R rankings."""
    import signal
    import subprocess
    import sys
    import threading
    import time

    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=100, k=4, required=2)  # 200 tasks x R = 2
        for i in range(32):
            add_annotator(store, f"sim-{i}", "simulated")
    acked: list[str] = []
    lock = threading.Lock()
    for round_ in range(3):
        log = open(tmp_path / f"serve-{round_}.log", "w")  # noqa: SIM115 (closed below)
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "--data", str(data), "serve", "--port", "0"],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RANKLOOP_ANNOTATION__GOLD_RATE": "0"},
        )
        deadline, url = time.monotonic() + 90, None
        while time.monotonic() < deadline and url is None:
            try:
                info = json.loads((data / "service.json").read_text())
                if (
                    info.get("pid") == proc.pid
                    and httpx.get(f"{info['url']}/healthz", timeout=2).status_code == 200
                ):
                    url = info["url"]
            except (OSError, ValueError, httpx.HTTPError):
                time.sleep(0.2)
        assert url, (tmp_path / f"serve-{round_}.log").read_text()
        stop = threading.Event()

        def annotate(name: str, url: str = url, stop: threading.Event = stop) -> None:
            headers = {**admin_headers(data), "X-Rankloop-Annotator": name}
            with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
                try:
                    while (
                        not stop.is_set() and (task := c.get("/api/annotate/next").json()["task"]) is not None
                    ):
                        body = {
                            "task_id": task["task_id"],
                            "submission_id": uuid.uuid4().hex,
                            "ranks": list(range(1, len(task["candidates"]) + 1)),
                        }
                        if c.post("/api/annotate/submit", json=body).status_code == 200:
                            with lock:
                                acked.append(body["submission_id"])
                except (httpx.HTTPError, ValueError):
                    pass  # the service was killed under us: what it acknowledged must be stored

        threads = [threading.Thread(target=annotate, args=(f"sim-{i}",)) for i in range(32)]
        before = len(acked)
        for t in threads:
            t.start()
        while len(acked) < before + 60 and any(t.is_alive() for t in threads):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
        proc.wait()
        stop.set()
        for t in threads:
            t.join()
        log.close()
        assert len(acked) > before, f"round {round_}: nothing was acknowledged"
    with Store.open(data / "rankloop.duckdb") as store:
        stored = {
            r["submission_id"]: r["n"]
            for r in store.query("SELECT submission_id, count(*) AS n FROM rankings GROUP BY submission_id")
        }
        over = store.query("SELECT task_id, count(*) AS n FROM rankings GROUP BY task_id HAVING count(*) > 2")
    assert all(stored.get(s) == 1 for s in acked), [s for s in acked if stored.get(s) != 1][:5]
    assert not over, over[:5]
