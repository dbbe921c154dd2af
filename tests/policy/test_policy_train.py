"""Policy trainers on the tiny model: SFT (instructions and best-of-K), DPO, GRPO and RLOO each log a
loss, change the weights and write a checkpoint transformers loads and generates from; bad configs
stop before training with one clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from policy.config import DPOTrainConfig, PretrainConfig, RLTrainConfig, SFTTrainConfig
from policy.data import dpo_pairs
from policy.dpo import main as train_dpo
from policy.rl import main as train_rl
from policy.sft import main as train_sft
from reward.config import RewardTrainConfig
from reward.train import main as train_reward
from service.core.store import Store
from service.data.snapshots import SnapshotFilters, create_snapshot
from tests.support import REPO
from tests.support.seeding import seed_rankings

pytestmark = pytest.mark.slow
FAST = {"max_steps": 3, "batch_size": 4, "logging_steps": 1, "max_length": 128}


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("policy") / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_rankings(store, n_prompts=30, annotators=2)
        return create_snapshot(store, data, SnapshotFilters()).path.parent


@pytest.fixture(scope="module")
def reward_model(snapshot: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_reward(
        RewardTrainConfig(
            snapshot=snapshot,
            base_model=tiny_model,
            epochs=1,
            batch_size=8,
            output_dir=tmp_path_factory.mktemp("rm") / "reward",
        )
    )


def without_chat_template(model: Path, dest: Path) -> Path:
    """A copy of `model` whose tokenizer has no chat template, as many base checkpoints."""
    shutil.copytree(model, dest)
    cfg = json.loads((dest / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg))
    (dest / "chat_template.jinja").unlink(missing_ok=True)
    return dest


def check_policy(out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["loss_curve"], "no loss was logged"
    assert 0 < metrics["train"]["parameters_changed"] <= metrics["train"]["parameters_trained"]
    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)  # a plain checkpoint: no adapter left
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "Tell me about cats."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    assert model.generate(**ids, max_new_tokens=4, do_sample=False).shape[1] > ids["input_ids"].shape[1]
    assert metrics["base_model"] in (out / "README.md").read_text()
    return metrics


def test_sft_on_instructions_and_on_best_of_k(snapshot: Path, tiny_model: Path, tmp_path: Path) -> None:
    data = tmp_path / "instructions.jsonl"
    data.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "Answer in one short sentence."},
                        {"role": "user", "content": f"Tell me about thing {i}."},
                        {"role": "assistant", "content": f"Thing {i} is calm."},
                    ]
                }
            )
            + "\n"
            for i in range(12)
        )
    )
    m = check_policy(
        train_sft(SFTTrainConfig(base_model=tiny_model, output_dir=tmp_path / "a", data=data, **FAST))
    )
    assert m["kind"] == "sft" and m["train"]["examples"] == 12
    m = check_policy(
        train_sft(
            SFTTrainConfig(
                base_model=tiny_model, output_dir=tmp_path / "b", snapshot=snapshot, lora=True, **FAST
            )
        )
    )
    assert m["train"]["snapshot"] and m["train"]["examples"] > 12


def test_dpo(snapshot: Path, tiny_model: Path, tmp_path: Path) -> None:
    pairs = dpo_pairs(snapshot)
    assert pairs and all(p["prompt"][0]["role"] == "system" for p in pairs)  # the arm's system prompt first
    assert len(dpo_pairs(snapshot, rank_gap_weighting=True)) > len(pairs)
    m = check_policy(
        train_dpo(DPOTrainConfig(base_model=tiny_model, output_dir=tmp_path / "d", snapshot=snapshot, **FAST))
    )
    assert m["method"] == "dpo" and m["train"]["pairs"] == len(pairs)


@pytest.fixture(scope="module")
def foreign_reward_model(snapshot: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model on another checkpoint whose tokenizer was trained on other text (another vocabulary)."""
    from policy.pretrain import main as pretrain

    root = tmp_path_factory.mktemp("foreign")
    base = pretrain(PretrainConfig(output_dir=root / "base", size="tiny", steps=0, n_transcripts=50, seed=3))
    return train_reward(
        RewardTrainConfig(
            snapshot=snapshot, base_model=base, epochs=1, batch_size=8, output_dir=root / "reward"
        )
    )


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_online_rl_against_the_reward_model(
    algorithm: str,
    snapshot: Path,
    reward_model: Path,
    foreign_reward_model: Path,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    # RLOO is scored by a reward model with another tokenizer: allowed, it reads the completion text.
    judge = reward_model if algorithm == "grpo" else foreign_reward_model
    cfg = RLTrainConfig(
        algorithm=algorithm,
        base_model=tiny_model,
        output_dir=tmp_path / algorithm,
        snapshot=snapshot,
        reward_model=judge,
        num_generations=2,
        max_completion_length=12,
        **FAST,
    )
    m = check_policy(train_rl(cfg))
    assert m["method"] == algorithm and m["train"]["reward_model"] == str(judge)
    assert any("reward" in h for h in m["log"]), "no reward was logged"
    same = algorithm == "grpo"
    assert ("re-tokenized" in m["train"]["reward_tokenizer"]) != same, m["train"]["reward_tokenizer"]


def test_dpo_in_two_processes_under_accelerate_launch(tiny_model: Path, tmp_path: Path, capsys) -> None:
    """Through the job table with `--launcher accelerate`: two processes, registered as any job."""
    import yaml

    from service.cli.main import main

    data = tmp_path / "data"  # a data directory of its own: the lineage test counts its jobs
    with Store.open(data / "rankloop.duckdb") as store:
        seed_rankings(store, n_prompts=30, annotators=2)
        create_snapshot(store, data, SnapshotFilters())
    config = tmp_path / "dpo.yaml"
    config.write_text(yaml.safe_dump({"base_model": str(tiny_model), **FAST}))
    run = ["--data", str(data), "train", "policy", "--method", "dpo", "--config", str(config)]
    assert main([*run, "--launcher", "accelerate", "--num-processes", "2"]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    policy_id = int(out.split("policy model #")[1].split()[0])
    with Store.open(data / "rankloop.duckdb") as store:
        (model,) = store.query("SELECT path, parent_id FROM models WHERE id = ?", [policy_id])
        (job,) = store.query("SELECT launch, launch_ref FROM jobs WHERE result_model_id = ?", [policy_id])
    m = check_policy(Path(model["path"]))
    assert m["train"]["processes"] == 2 and m["train"]["steps"] == FAST["max_steps"]
    assert '"launcher":"accelerate"' in job["launch"].replace(" ", "") and job["launch_ref"].startswith(
        "pid:"
    )
    assert main([*run, "--launcher", "ray"]) == 2  # no cluster named: refused before any job
    assert "--ray-address" in capsys.readouterr().err


def test_bad_configs_stop_before_training(snapshot: Path, tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="num_generations"):  # a field of another method
        DPOTrainConfig(base_model=tiny_model, output_dir=tmp_path / "x", snapshot=snapshot, num_generations=4)
    with pytest.raises(ValidationError, match="exactly one of data"):
        SFTTrainConfig(base_model=tiny_model, output_dir=tmp_path / "x")
    with pytest.raises(ValueError, match="fewer than one batch"):
        train_dpo(
            DPOTrainConfig(
                base_model=tiny_model,
                output_dir=tmp_path / "x",
                snapshot=snapshot,
                system_prompt="brief",
                **{**FAST, "batch_size": 10_000},
            )
        )
    bare = without_chat_template(tiny_model, tmp_path / "bare")
    with pytest.raises(ValueError, match="has no chat template"):
        train_sft(SFTTrainConfig(base_model=bare, output_dir=tmp_path / "y", snapshot=snapshot, **FAST))
    with pytest.raises(ValueError, match="not a Hugging Face model directory"):
        train_sft(
            SFTTrainConfig(
                base_model=tmp_path / "nothing", output_dir=tmp_path / "z", snapshot=snapshot, **FAST
            )
        )
    with pytest.raises(ValueError, match="training prompts .* fewer than one batch"):
        train_rl(
            RLTrainConfig(
                base_model=tiny_model,
                output_dir=tmp_path / "x",
                snapshot=snapshot,
                reward_model=tiny_model,
                num_generations=2,
                **{**FAST, "batch_size": 10_000},
            )
        )
    import torch

    if not torch.cuda.is_available():  # on a GPU machine server mode is allowed
        with pytest.raises(ValueError, match="vllm_server needs CUDA: TRL syncs"):
            train_rl(
                RLTrainConfig(
                    base_model=tiny_model,
                    output_dir=tmp_path / "x",
                    snapshot=snapshot,
                    reward_model=tiny_model,
                    generation="vllm_server",
                    **FAST,
                )
            )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_policy_training_jobs_register_with_lineage(
    snapshot: Path, tiny_model: Path, tmp_path: Path, capsys
) -> None:
    import yaml

    from service.cli.main import main
    from tests.support.servicectl import running_service

    data = snapshot.parent.parent
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(yaml.safe_dump({"base_model": str(tiny_model), **FAST}))
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base_model": str(tiny_model), "num_generations": 4}))
    assert main(["--data", str(data), "train", "policy", "--method", "dpo", "--config", str(bad)]) == 2
    assert "num_generations" in capsys.readouterr().err  # a field of another method, refused before any job
    bare = without_chat_template(tiny_model, tmp_path / "bare")
    refused = {"base_model": str(bare)}, {"base_model": str(tiny_model), "batch_size": 100_000}
    for values, message in zip(refused, ["has no chat template", "fewer than one batch"], strict=True):
        cfg_file = tmp_path / "refused.yaml"
        cfg_file.write_text(yaml.safe_dump(values))
        assert (
            main(["--data", str(data), "train", "policy", "--method", "dpo", "--config", str(cfg_file)]) == 2
        )
        assert message in capsys.readouterr().err
    with Store.open(data / "rankloop.duckdb") as store:
        assert store.scalar("SELECT count(*) FROM jobs") == 0
    assert main(["--data", str(data), "train", "policy", "--method", "dpo", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    policy_id = int(out.split("policy model #")[1].split()[0])
    assert main(["--data", str(data), "models", "show", str(policy_id)]) == 0
    lineage = capsys.readouterr().out
    assert (
        "dpo-1" in lineage and "candidate" in lineage and str(tiny_model) in lineage
    )  # policy -> its parent
    sft = tmp_path / "sft.yaml"
    sft.write_text(yaml.safe_dump({"base_model": str(tiny_model), **FAST}))
    with running_service(data):  # the same through the service's job runner
        assert main(["--data", str(data), "train", "policy", "--method", "sft", "--config", str(sft)]) == 0
        assert "(in the service)" in capsys.readouterr().out
    with Store.open(data / "rankloop.duckdb") as store:
        models = store.query(
            "SELECT kind, name, status, parent_id, snapshot_id FROM models WHERE name LIKE '%-_'"
        )
    assert {(m["kind"], m["status"]) for m in models} == {("policy", "candidate"), ("sft", "candidate")}
    assert all(m["parent_id"] and m["snapshot_id"] for m in models)


def test_colocated_vllm_generation_sees_the_trained_weights(tiny_model: Path, tmp_path: Path) -> None:
    """On CPU, vLLM packs its linear weights, so TRL's own sync fails; ours goes through vLLM's reload
    (and packs a tied output layer again). vLLM's log-probabilities must follow the policy's weights."""
    import os
    import subprocess
    import sys

    script = REPO / "tests" / "support" / "colocated_sync.py"
    done = subprocess.run(
        [sys.executable, str(script), str(tiny_model), str(tmp_path / "work")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    gaps = json.loads(done.stdout.strip().splitlines()[-1])
    # Largest per-token log-probability gap between vLLM and transformers on one reply.
    assert gaps["before"] < 0.1 and gaps["stale"] > 1.0 and gaps["synced"] < 0.1, gaps
