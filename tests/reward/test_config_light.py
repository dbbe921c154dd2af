"""The config modules, and the service's job runner that validates configs with them, import no
torch, transformers, TRL or PEFT and no trainer module: those load only in the trainers' own
processes (`python -m reward.train`, `python -m policy.*`)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

LIGHT = [
    "reward.config",
    "reward.checkpoint",
    "policy.config",
    "policy.data",
    "policy.stats",
    "policy.packaged",
    "service.control.packaged_models",
    "service.jobs.runner",
]
HEAVY = ["torch", "transformers", "trl", "peft", "datasets"]
TRAINERS = [
    "reward.train",
    "reward.scaffold",
    "reward.score",
    "reward.listwise",
    "policy.trainer",
    "policy.sft",
    "policy.dpo",
    "policy.rl",
    "policy.evaluate",
    "policy.pretrain",
]


def test_configs_and_the_job_runner_import_no_training_stack() -> None:
    code = (
        f"import json, sys\nfor m in {LIGHT!r}:\n    __import__(m)\n"
        f"print(json.dumps([m for m in {HEAVY + TRAINERS!r} if m in sys.modules]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
