"""One demo round for the whole-loop tests (the `demo_round` fixture in tests/e2e/conftest.py): `rankloop demo --small --no-serve` runs once per session
(pretrain -> SFT -> sample -> simulated annotators -> reward model -> DPO -> evaluation and gate ->
deploy -> a completion through the gateway -> report). tests/e2e/test_demo.py checks it and runs on in
its data directory; tests/e2e/test_policy_loop.py trains further policies from it, each module in a copy
taken before anything else touched it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.support import REPO


def demo(data: Path) -> str:
    """`rankloop demo --small --no-serve` on `data`; its output."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "--data",
            str(data),
            "demo",
            "--small",
            "--no-serve",
            "--port",
            "0",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


@dataclass(frozen=True)
class DemoRound:
    data: Path  # the demo's data directory (test_demo.py runs the demo again and a loop round in it)
    out: str  # what the demo printed
    pristine: Path  # the data directory as the demo left it

    def copy(self, dest: Path) -> Path:
        """A data directory of its own as the demo left it (models stay where the demo wrote them: a
        row's path is absolute, and nothing here deletes a model)."""
        shutil.copytree(self.pristine, dest)
        return dest


def run_demo_round(root: Path) -> DemoRound:
    out = demo(root / "data")
    shutil.copytree(root / "data", root / "pristine")
    return DemoRound(root / "data", out, root / "pristine")
