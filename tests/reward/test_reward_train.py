"""Reward training on the tiny model, both modes, LoRA, and two processes under accelerate.

The data: 300 rankings of 4 candidates by 3 simulated annotators whose hidden preference
(length near 12 words, liked and disliked words) is visible in the responses, Bradley-Terry
noise 0.3. The noise ceiling is how often the held-out labels agree with that preference
(`labels_vs_hidden`, about 0.8 here): a model that learned the preference exactly scores that
against the labels, and can agree with the preference itself more often than the labels do.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from reward.config import RewardTrainConfig
from reward.score import RewardScorer
from reward.train import main
from service.core.store import Store
from service.data.snapshots import SnapshotFilters, create_snapshot
from tests.support import REPO
from tests.support.seeding import seed_rankings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("reward") / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        assert seed_rankings(store, n_prompts=100, annotators=3, noise=0.3) == 300
        return create_snapshot(store, data, SnapshotFilters()).path.parent


def check_trained(out: Path, metrics: dict) -> None:
    assert (out / "config.json").exists() and (out / "README.md").exists()
    losses = [p["loss"] for p in metrics["loss_curve"]]
    third = max(len(losses) // 3, 1)  # means of the first and last thirds: single minibatch losses are noisy
    first, last = sum(losses[:third]) / third, sum(losses[-third:]) / third
    assert len(losses) >= 2 and last < first, f"loss did not fall: first third {first:.4f}, last {last:.4f}"
    assert metrics["train"]["parameters_changed"] == metrics["train"]["parameters_trained"] > 0
    scores = RewardScorer(out).score("Tell me about cats.", ["Cats have paws and naps.", "Cats."])
    assert len(scores) == 2 and scores[0] != scores[1]  # loads back through the scoring path
    card = (out / "README.md").read_text()
    assert metrics["snapshot"] in card and str(metrics["base_model"]) in card


@pytest.mark.parametrize("mode, floor", [("listwise", 0.85), ("pairwise", 0.8)])
def test_mode_learns_the_hidden_preference(
    mode: str, floor: float, snapshot: Path, tiny_model: Path, tmp_path: Path
) -> None:
    cfg = RewardTrainConfig(
        snapshot=snapshot,
        base_model=tiny_model,
        output_dir=tmp_path / mode,
        mode=mode,
        epochs=3,
        batch_size=8 if mode == "listwise" else 16,
        logging_steps=5,
    )
    out = main(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    check_trained(out, metrics)
    ev = metrics["eval"]
    hidden = ev["hidden"]
    print(
        f"{mode}: held-out accuracy {ev['pairwise_accuracy']} vs labels; {hidden['model_vs_hidden']} vs the hidden "
        f"preference; noise ceiling (labels vs hidden) {hidden['labels_vs_hidden']}"
    )
    assert hidden["model_vs_hidden"] >= floor, (  # chance is 0.5
        f"{mode}: agreement with the hidden preference {hidden['model_vs_hidden']}, needed {floor}"
    )
    assert ev["pairwise_accuracy"] >= hidden["labels_vs_hidden"] - 0.1, (  # close to the ceiling
        f"{mode}: held-out accuracy {ev['pairwise_accuracy']}, needed the ceiling "
        f"{hidden['labels_vs_hidden']} - 0.1"
    )
    assert 0 <= ev["ece"] < 0.2, f"{mode}: calibration error {ev['ece']}, needed < 0.2"


def test_lora_is_merged_into_a_plain_checkpoint(snapshot: Path, tiny_model: Path, tmp_path: Path) -> None:
    cfg = RewardTrainConfig(
        snapshot=snapshot,
        base_model=tiny_model,
        output_dir=tmp_path / "lora",
        lora=True,
        lora_r=4,
        epochs=1,
        logging_steps=5,
    )
    out = main(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert not (out / "adapter_config.json").exists()  # merged: vLLM and transformers load it as is
    check_trained(out, metrics)


def test_two_processes_under_accelerate_launch(snapshot: Path, tiny_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "reward.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "snapshot": str(snapshot),
                "base_model": str(tiny_model),
                "output_dir": str(tmp_path / "ddp"),
                "epochs": 1,
                "batch_size": 8,
            }
        )
    )
    accelerate = Path(sys.executable).parent / "accelerate"
    done = subprocess.run(
        [
            str(accelerate),
            "launch",
            "--multi_gpu",
            "--num_processes",
            "2",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "reward.train",
            "--config",
            str(config),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    single_steps = -(-metrics["train"]["rankings"] // 8)
    assert metrics["train"]["processes"] == 2
    assert metrics["train"]["steps"] == -(-single_steps // 2)  # each process takes half of every epoch
    assert metrics["eval"]["pairwise_accuracy"] is not None


def test_a_base_checkpoint_without_pad_token_or_chat_template(
    snapshot: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """Like most base Llama/Mistral checkpoints: padding falls back to end-of-text, and responses
    are encoded as plain text."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = tmp_path / "base"
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.pad_token = None
    tok.chat_template = None
    tok.save_pretrained(base)
    (base / "chat_template.jinja").unlink(missing_ok=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.config.pad_token_id = None
    model.save_pretrained(base)
    reloaded = AutoTokenizer.from_pretrained(base)
    assert reloaded.pad_token is None and not reloaded.chat_template
    for mode in ("listwise", "pairwise"):
        out = main(
            RewardTrainConfig(
                snapshot=snapshot,
                base_model=base,
                output_dir=tmp_path / mode,
                mode=mode,
                max_steps=3,
                logging_steps=1,
            )
        )
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["train"]["steps"] == 3 and metrics["eval"]["pairwise_accuracy"] is not None
        assert len(RewardScorer(out).score("Q?", ["a", "b b b"])) == 2


def test_a_head_on_the_frozen_backbone_changes_the_head_alone(
    snapshot: Path, tiny_model: Path, tmp_path: Path
) -> None:
    """`frozen_backbone`: one forward pass per response, a Bradley-Terry head fit on the states; the
    checkpoint is the base model with that head, and scores as the fit did."""
    from safetensors.torch import load_file

    from reward.data import pairwise_rows, read_snapshot

    cfg = RewardTrainConfig(
        snapshot=snapshot,
        base_model=tiny_model,
        output_dir=tmp_path / "head",
        frozen_backbone="yes",
        max_length=96,
    )
    out = main(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [p["loss"] for p in metrics["loss_curve"]]
    assert losses[-1] < losses[0] == pytest.approx(0.6931, abs=1e-3)  # from w = 0: log 2
    base, trained = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in trained if k not in base or not (trained[k] == base[k]).all()}
    assert changed == {"score.weight"}, changed
    head = metrics["train"]["head"]
    # Depth and penalty chosen by cross-validation over the training prompts; the checkpoint keeps the
    # layers up to that depth, so its last hidden state is the one the head was fit on.
    val = head["validation_accuracy"]
    assert len(val) > 1 and val[str(head["layer"])][str(head["l2"])] == max(
        a for by_l2 in val.values() for a in by_l2.values()
    )
    config = json.loads((out / "config.json").read_text())
    assert (
        config["num_hidden_layers"]
        == head["layer"]
        <= json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]
    )
    # The saved model reproduces the fit: its scores order the training pairs as the head did.
    pairs = pairwise_rows(read_snapshot(snapshot, "train"))
    scorer = RewardScorer(out)  # reads inputs cut as it was trained, from its metrics.json
    assert scorer.max_length == 96 and RewardScorer(tiny_model).max_length == 1024  # 1024: not ours
    chosen = scorer.score_pairs([(p["prompt"], p["chosen"][0]["content"]) for p in pairs])
    rejected = scorer.score_pairs([(p["prompt"], p["rejected"][0]["content"]) for p in pairs])
    agree = sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(pairs)
    assert agree == pytest.approx(head["train_accuracy"], abs=0.01)
    hidden = metrics["eval"]["hidden"]
    print(f"frozen head: held-out accuracy {metrics['eval']['pairwise_accuracy']}, vs hidden {hidden}")
    assert hidden["model_vs_hidden"] >= 0.75, hidden  # chance is 0.5; full training reaches 0.8-0.85


def test_strengths_and_an_attribute_head(snapshot: Path, tiny_model: Path, tmp_path: Path) -> None:
    """Rankings with strengths and a rated attribute (here: helpfulness = a candidate's length in
    tens of characters, capped at 4, so it is learnable) train a reward plus a helpfulness head; the
    model loads back through the scoring path, and its helpfulness output follows the ratings."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from scipy.stats import spearmanr

    from reward.snapshot_format import MANIFEST_FILE, SCHEMA, SNAPSHOT_FILE

    def rating(text: str) -> int:
        return min(len(text) // 10, 4)

    rows = pq.read_table(snapshot / SNAPSHOT_FILE).to_pylist()
    for r in rows:
        r["strengths"] = ["clearly"] * (len(set(r["ranks"])) - 1)
        r["attributes"] = json.dumps([{"helpfulness": rating(t)} for t in r["texts"]])
    rated = tmp_path / "rated"
    rated.mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), rated / SNAPSHOT_FILE)
    (rated / MANIFEST_FILE).write_text((snapshot / MANIFEST_FILE).read_text())
    cfg = RewardTrainConfig(
        snapshot=rated,
        base_model=tiny_model,
        output_dir=tmp_path / "heads",
        attribute_heads=["helpfulness"],
        epochs=3,
        batch_size=16,
        max_length=64,
        logging_steps=2,
    )
    out = main(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    check_trained(out, metrics)
    scorer = RewardScorer(out)
    assert scorer.model.config.id2label == {0: "reward", 1: "helpfulness"}
    texts = [t for r in rows[:40] for t in r["texts"]]
    with torch.inference_mode():
        from reward.score import encode, pad_batch

        ids, mask = pad_batch(
            [encode(scorer.tokenizer, "Q", t, 64) for t in texts], scorer.tokenizer.pad_token_id
        )
        predicted = scorer.model(input_ids=ids, attention_mask=mask).logits[:, 1].tolist()
    rho = spearmanr(predicted, [rating(t) for t in texts]).statistic
    assert rho > 0.5, f"the helpfulness head does not follow the ratings: Spearman {rho:.2f}"
    with pytest.raises(ValueError, match="attribute_heads train with the listwise loss"):
        RewardTrainConfig(
            snapshot=rated,
            base_model=tiny_model,
            output_dir=tmp_path / "x",
            mode="pairwise",
            attribute_heads=["a"],
        )
