"""Start the real `rankloop serve` (uvicorn, FastAPI, Gradio) in a subprocess for a test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support import REPO


def start_service(
    data_dir: Path, env: dict[str, str] | None = None, timeout_s: float = 90, append: bool = False
) -> tuple[subprocess.Popen, str]:
    """`rankloop serve` on `data_dir`, once it answers /healthz: its process and base URL. The caller
    stops it (a test may kill it). Its output goes to `serve-<dir>.log` beside the data directory
    (`append`: after an earlier service's), never to an unread pipe that could fill up and block it."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"serve-{data_dir.name}.log"
    with open(log_path, "a" if append else "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "--data", str(data_dir), "serve", "--port", "0"],
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    info = data_dir / "service.json"
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"rankloop serve exited ({proc.returncode}):\n{log_path.read_text()}")
            if info.exists():
                found = json.loads(info.read_text())
                if found.get("pid") == proc.pid:  # not a file left by a service that was killed
                    try:
                        if httpx.get(f"{found['url']}/healthz", timeout=2).status_code == 200:
                            return proc, found["url"]
                    except httpx.HTTPError:
                        pass
            time.sleep(0.2)
        raise RuntimeError("rankloop serve did not become healthy")
    except BaseException:
        proc.terminate()
        proc.wait(timeout=30)
        raise


@contextmanager
def running_service(
    data_dir: Path, env: dict[str, str] | None = None, timeout_s: float = 90
) -> Iterator[str]:
    """Yields the service's base URL; stops it (and checks it exited) afterwards."""
    proc, url = start_service(data_dir, env, timeout_s)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not (data_dir / "service.json").exists(), "serve should remove service.json when it stops"


def admin_headers(data_dir: Path) -> dict[str, str]:
    return {"Authorization": f"Bearer {(data_dir / 'admin.key').read_text().strip()}"}


def start_gateway(control: str, key: str, spool: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """A `rankloop gateway` replica of the service at `control` (its log beside its spool); returns the
    process and its base URL once /health answers 200. The caller stops it."""
    spool.parent.mkdir(parents=True, exist_ok=True)
    log_path = spool.parent / f"{spool.name}.log"
    with open(log_path, "a") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "service.cli",
                "gateway",
                "--control",
                control,
                "--port",
                "0",
                "--spool",
                str(spool),
                *args,
            ],
            cwd=REPO,
            env={**os.environ, "RANKLOOP_CONTROL_KEY": key},
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rankloop gateway exited ({proc.returncode}):\n{log_path.read_text()}")
        started = [
            line
            for line in log_path.read_text().splitlines()[-20:]
            if line.startswith("rankloop gateway at ")
        ]
        if started:
            url = started[-1].split()[3].rstrip(",").removesuffix("/v1")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    return proc, url
            except httpx.HTTPError:
                pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"rankloop gateway did not become healthy:\n{log_path.read_text()}")
