"""`rankloop demo` end to end on a fresh data directory (the tiny model built with few steps)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


def test_demo_runs_the_loop(tmp_path: Path) -> None:
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, "-m", "service.cli", "--data", str(data), "demo", "--no-serve",
                           "--pretrain-steps", "20", "--k", "2", "--dtype", "float32"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for stage in ["building the tiny model", "144 new samples", "ranking tasks", "simulated annotators ranked",
                  "system prompt leaderboard", "annotator agreement", "snapshot", "reward model #"]:
        assert stage in out, stage
    status = subprocess.run([sys.executable, "-m", "service.cli", "--data", str(data), "status", "--json"],
                            cwd=REPO, capture_output=True, text=True, check=True)
    counts = json.loads(status.stdout)
    assert counts["samples"] == 144 and counts["rankings"] == 2 * counts["tasks"] > 0
    assert counts["snapshots"] == 1 and counts["jobs"] == 2 and counts["models"] == 2  # jobs: sampling, reward
