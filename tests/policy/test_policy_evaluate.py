"""The evaluation's statistics on literal data: judgments, the grouped bootstrap interval, the
length-controlled win rate, and `python -m policy.evaluate` end to end on a tiny reward model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy.config import EvalConfig
from policy.evaluate import judgments, length_controlled, main, read_comparisons, win_rate


def test_judgments_are_win_tie_loss() -> None:
    assert judgments(np.array([2.0, 1.0, 0.0]), np.array([1.0, 1.0, 3.0])).tolist() == [1.0, 0.5, 0.0]


def test_win_rate_interval_covers_the_rate_and_resamples_groups() -> None:
    wins = np.array([1.0] * 70 + [0.0] * 30)
    spread = win_rate(wins, [f"p{i}" for i in range(100)], n_boot=2000)
    assert spread["win_rate"] == pytest.approx(0.7)
    lo, hi = spread["ci"]
    # Binomial sd at n=100 is 0.046: a 95% interval of about +-0.09.
    assert 0.58 < lo < 0.65 and 0.75 < hi < 0.82, spread
    # The same judgments in 10 groups of 10 identical ones: only 10 independent prompts, a wider interval.
    clustered = win_rate(
        np.repeat([1.0] * 7 + [0.0] * 3, 10), [f"p{i // 10}" for i in range(100)], n_boot=2000
    )
    assert clustered["groups"] == 10
    assert clustered["ci"][1] - clustered["ci"][0] > 2 * (hi - lo) * 0.9, (clustered, spread)


def test_length_controlled_win_rate_removes_a_win_that_is_only_length() -> None:
    rng = np.random.default_rng(0)
    # The candidate is longer 80% of the time, and the judge likes length and nothing else: at equal
    # length it is a coin flip (P(win) = sigmoid(2 tanh(d / sd)), d = candidate minus baseline words).
    longer = np.abs(rng.normal(0, 10, 400)) * np.where(rng.random(400) < 0.8, 1, -1)
    p_win = 1 / (1 + np.exp(-2 * np.tanh(longer / longer.std())))
    wins = (rng.random(400) < p_win).astype(float)
    raw = win_rate(wins, [str(i) for i in range(400)])["win_rate"]
    lc = length_controlled(wins, longer, [str(i) for i in range(400)], n_boot=100)
    assert raw > 0.65 and abs(lc["lc_win_rate"] - 0.5) < 0.1, (raw, lc)
    # A candidate that wins at every length keeps its win rate.
    better = np.where(rng.random(400) < 0.75, 1.0, 0.0)
    lc = length_controlled(better, longer, [str(i) for i in range(400)], n_boot=100)
    assert abs(lc["lc_win_rate"] - better.mean()) < 0.05 and lc["lc_ci"][0] > 0.6, lc


def test_evaluate_writes_figures_for_every_judge(tiny_model: Path, tmp_path: Path) -> None:
    rows = [
        {
            "group": f"p{i % 5}",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": f"Tell me about cats {i}."},
            ],
            "candidate": "Cats purr and nap." * (1 + i % 2),
            "baseline": "Cats.",
            "scores": {"hidden": [1.0, 0.0]},
        }
        for i in range(20)
    ]
    data = tmp_path / "comparisons.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reference = perturbed(tiny_model, tmp_path / "ref")
    out = main(
        EvalConfig(
            comparisons=data,
            output_dir=tmp_path / "ev",
            reward_model=tiny_model,
            candidate_model=tiny_model,
            reference_model=reference,
            bootstrap=200,
        )
    )
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["judges"]) == {"hidden", "reward"}
    assert report["judges"]["hidden"]["win_rate"] == 1.0 and report["judges"]["hidden"]["ci"] == [1.0, 1.0]
    assert report["groups"] == 5 and report["comparisons"] == 20
    assert report["length"]["candidate_words"] > report["length"]["baseline_words"]
    # KL by hand: log p(reply | chat) summed over the reply's tokens (and its end of turn), per model.
    expected = np.mean([reply_logprob(tiny_model, r) - reply_logprob(reference, r) for r in rows])
    assert report["kl"]["estimate"] == pytest.approx(expected, abs=1e-3) and abs(expected) > 0.01
    judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(judged) == 20 and set(judged[0]["scores"]) == {"hidden", "reward"}


def perturbed(model: Path, dest: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = AutoModelForCausalLM.from_pretrained(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    m.save_pretrained(dest)
    AutoTokenizer.from_pretrained(model).save_pretrained(dest)
    return dest


def reply_logprob(model: Path, row: dict) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok, m = AutoTokenizer.from_pretrained(model), AutoModelForCausalLM.from_pretrained(model)
    start = len(tok.apply_chat_template(row["messages"], add_generation_prompt=True)["input_ids"])
    ids = tok.apply_chat_template(row["messages"] + [{"role": "assistant", "content": row["candidate"]}])[
        "input_ids"
    ]
    with torch.no_grad():
        logp = m(torch.tensor([ids])).logits[0].log_softmax(-1)
    return float(sum(logp[i - 1, ids[i]] for i in range(start, len(ids))))


def test_bad_comparison_files_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "c.jsonl"
    bad.write_text(json.dumps({"group": "a", "messages": []}) + "\n")
    with pytest.raises(ValueError, match="line 1: missing candidate, baseline"):
        read_comparisons(bad)
    bad.write_text("")
    with pytest.raises(ValueError, match="holds no comparisons"):
        read_comparisons(bad)
    row = {"group": "a", "messages": [], "candidate": "x", "baseline": "y"}
    bad.write_text(json.dumps({**row, "scores": {"hidden": [1, 0]}}) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="line 2: scores must give every row the same judges"):
        read_comparisons(bad)
    bad.write_text(json.dumps({**row, "scores": {"reward": [1, 0]}}) + "\n")
    with pytest.raises(ValueError, match="'reward' is the reward model's"):
        read_comparisons(bad, reward_judge=True)
