"""The `rankloop` command in this process (no service), for tests/e2e/test_policy_loop.py and bench/policy.py,
and one turn of the loop up to a trained reward model (`build_loop`, bench/policy.py's; the tests read
the session's demo round instead, tests/support/demo_round.py):

A tiny chat Llama pretrained for 200 steps -> SFT on instruction chats -> 72 prompts x 3 system
prompts x 8 samples from vLLM -> two simulated annotators rank them (fixed seeds; their hidden
preference is about 12 words and some liked words, not the system prompt's instruction, which
the reward model, reading the conversation without the system prompt, cannot see) -> snapshot
-> listwise reward model. Each stage's wall time is recorded.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import time
from pathlib import Path

import yaml

from annotator import simulate_run
from annotator.simulated import Preference, Profile
from policy.corpus import QUESTION_FORMS, SYSTEM_STYLES, TOPICS, training_transcripts
from service.cli.main import main
from service.core.settings import AnnotationOptions
from service.core.store import Store

VLLM = ["--max-model-len", "512"]


def rankloop(data: Path, *args: str) -> str:
    """Run a `rankloop` command on `data`; its output, or AssertionError naming the exit code."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--data", str(data), *args])
    assert code == 0, f"rankloop {' '.join(args)} exited {code}:\n{out.getvalue()}"
    return out.getvalue()


def write_yaml(path: Path, values: dict) -> str:
    path.write_text(yaml.safe_dump(values))
    return str(path)


def model_id(output: str) -> int:
    """The model a `rankloop train ...` output names."""
    return int(re.search(r"model #(\d+)", output).group(1))


def model_row(data: Path, model: int) -> dict:
    with Store.open(data / "rankloop.duckdb") as store:
        row = store.query("SELECT path, status, metrics FROM models WHERE id = ?", [model])[0]
    return {**row, "metrics": json.loads(row["metrics"] or "{}")}


def chat_model(dest: Path) -> Path:
    from policy.config import PretrainConfig
    from policy.pretrain import main as pretrain

    return pretrain(PretrainConfig(output_dir=dest, size="tiny", steps=200, n_transcripts=600))


def build_loop(root: Path, chat: Path) -> dict:
    """Everything up to the reward model; ids, paths and each stage's seconds."""
    data, stages = root / "data", {}

    def stage(name: str, *args: str) -> str:
        t0 = time.perf_counter()
        out = rankloop(data, *args)
        stages[name] = round(time.perf_counter() - t0, 1)
        return out

    (root / "instructions.jsonl").write_text(
        "".join(json.dumps({"messages": t}) + "\n" for t in training_transcripts(400, seed=7))
    )
    sft = model_id(
        stage(
            "sft",
            "train",
            "policy",
            "--method",
            "sft",
            "--config",
            write_yaml(
                root / "sft.yaml",
                {
                    "base_model": str(chat),
                    "data": str(root / "instructions.jsonl"),
                    "max_steps": 30,
                    "batch_size": 8,
                    "max_length": 256,
                },
            ),
        )
    )
    (root / "prompts.txt").write_text("".join(q.format(t=t) + "\n" for t in TOPICS for q in QUESTION_FORMS))
    rankloop(data, "prompts", "add", str(root / "prompts.txt"))
    rankloop(
        data,
        "system-prompts",
        "add",
        write_yaml(root / "sp.yaml", {s: SYSTEM_STYLES[s] for s in ("brief", "detailed", "friendly")}),
    )
    stage("sample", "sample", "--model", model_row(data, sft)["path"], "--k", "8", *VLLM)
    t0 = time.perf_counter()
    with Store.open(data / "rankloop.duckdb") as store:
        wanted = {
            f"sim-{i}": Profile(preference=Preference(instruction_weight=0.0), noise=0.3) for i in range(2)
        }
        profiles = simulate_run.ensure_accounts(store, wanted)
        rankings = simulate_run.run(
            simulate_run.LocalQueue(store, AnnotationOptions(gold_rate=0)), profiles, seed=0, parallel=False
        ).total
    stages["rank (simulated)"] = round(time.perf_counter() - t0, 1)
    stage("snapshot", "snapshot")
    reward = model_id(
        stage(
            "reward",
            "train",
            "reward",
            "--config",
            write_yaml(root / "rm.yaml", {"epochs": 2, "batch_size": 8, "max_length": 256}),
        )
    )
    return {
        "root": root,
        "data": data,
        "chat_model": chat,
        "sft": sft,
        "reward": reward,
        "rankings": rankings,
        "stages_s": stages,
    }


def evaluation(data: Path, model: int, *args: str) -> tuple[str, dict]:
    """`rankloop evaluate policy MODEL ARGS`: its output, and the evaluation it recorded with the status."""
    out = rankloop(data, "evaluate", "policy", str(model), *args, *VLLM)
    row = model_row(data, model)
    return out, {**row["metrics"]["evaluations"][-1], "status": row["status"]}
