"""The evaluation's statistics on literal data: judgments, the grouped bootstrap interval, the
length-controlled win rate, and `python -m policy.evaluate` end to end on a tiny reward model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from policy.config import EvalConfig
from policy.evaluate import kl_figures, main, pick_examples, read_comparisons, sequence_logprobs
from policy.length_control import length_controlled, similar_length
from policy.stats import judgments, logistic, win_rate


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


def _duel(rng: np.random.Generator, cand: np.ndarray, base: np.ndarray, utility, edge: float = 0.0):
    """Judgments by a judge that scores utility(words) (+ `edge` for the candidate) with logistic noise."""
    noise = rng.logistic(0, 1, (2, len(cand)))
    return judgments(utility(cand) + edge + noise[0], utility(base) + noise[1])


def test_length_control_holds_for_a_judge_that_likes_a_length_not_more_of_it() -> None:
    """A policy that differs only in length shows no length-controlled win, whether the judge wants more
    words or about 12 (the rule world's preference): a tanh-of-the-difference control (AlpacaEval's)
    keeps most of the raw win under the peaked judge."""
    rng = np.random.default_rng(0)
    n, group = 800, [f"p{i // 2}" for i in range(800)]
    base = rng.integers(1, 41, n).astype(float)
    near_12 = np.clip(np.round(rng.normal(12, 3, n)), 1, 60)
    for cand, utility in [
        (near_12, lambda w: -np.abs(w - 12) / 2),  # peaked: the candidate sits at the favourite length
        (base + rng.integers(0, 10, n), lambda w: w / 3),  # monotone: the candidate is longer
    ]:
        wins = _duel(rng, cand, base, utility)
        lc = length_controlled(wins, cand, base, group, n_boot=200)
        raw = win_rate(wins, group)["win_rate"]
        assert raw > 0.65 and lc["lc_ci"][0] < 0.5 < lc["lc_ci"][1], (raw, lc)
        assert abs(lc["lc_win_rate"] - 0.5) < 0.06, lc
    peaked = _duel(rng, near_12, base, lambda w: -np.abs(w - 12) / 2)
    d = near_12 - base
    x = np.column_stack([np.ones(n), np.tanh(d / d.std())])
    tanh_lc = 1 / (1 + np.exp(-logistic(x, peaked, np.ones(n), np.array([0.0, 1e-3]))[0]))
    assert tanh_lc > 0.75  # the old control calls most of a length-only win real


def test_length_control_keeps_a_win_at_every_length() -> None:
    rng = np.random.default_rng(1)
    n, group = 800, [f"p{i // 2}" for i in range(800)]
    base = rng.integers(1, 41, n).astype(float)
    cand = np.clip(np.round(rng.normal(12, 3, n)), 1, 60)
    wins = _duel(rng, cand, base, lambda w: -np.abs(w - 12) / 2, edge=1.5)  # better at equal length
    lc = length_controlled(wins, cand, base, group, n_boot=200)
    truth = 1 / (1 + np.exp(-1.5 / np.sqrt(2)))  # logistic noise on both sides, roughly
    assert lc["lc_ci"][0] > 0.6 and abs(lc["lc_win_rate"] - truth) < 0.08, (lc, truth)
    similar = similar_length(wins, cand, base, group)
    assert similar["tolerance"] == 0.2 and 0 < similar["n"] < n and similar["ci"][0] > 0.55, similar
    assert similar_length(wins, cand * 0 + 5, cand * 0 + 50, group)["n"] == 0  # none alike: no figure


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
    # Batched by length and left-padded, each row's log-probability is the one it has alone.
    alone = [reply_logprob(tiny_model, r) for r in rows]
    batched = [lp for lp, _ in sequence_logprobs(tiny_model, rows, 1024)]
    assert batched == pytest.approx(alone, abs=1e-3) and len(set(np.round(alone, 2))) > 2
    judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines()]
    assert len(judged) == 20 and set(judged[0]["scores"]) == {"hidden", "reward"}
    # Answers kept for people to read, side by side, with every judge's score of each.
    assert len(report["examples"]) == 5 and all(
        set(e["scores"]) == {"hidden", "reward"} for e in report["examples"]
    )
    assert report["examples"][0]["baseline"] == "Cats." and report["examples"][0]["scores"]["hidden"] == [
        1.0,
        0.0,
    ]


def test_examples_are_one_per_prompt_drawn_with_the_seed_in_prompt_order() -> None:
    rows = [
        {
            "group": f"p{g}",
            "messages": [{"role": "user", "content": f"q{g}"}],
            "candidate": f"c{g}-{i}",
            "baseline": f"b{g}-{i}",
        }
        for g in range(10)
        for i in range(3)
    ]
    picked = pick_examples(rows, seed=1, n=6)
    prompts = [e["messages"][0]["content"] for e in picked]
    assert len(set(prompts)) == 6 and prompts == sorted(prompts, key=lambda q: int(q[1:]))
    assert all(e["candidate"][1:] == e["baseline"][1:] for e in picked)  # one comparison: both sides
    assert len({e["candidate"][-1] for e in picked}) > 1  # not always the first system prompt
    assert pick_examples(rows, seed=1, n=6) == picked and pick_examples(rows, seed=2, n=6) != picked
    assert len(pick_examples(rows[:6], seed=1, n=6)) == 2  # fewer prompts than asked: all of them
    assert "scores" not in picked[0]  # no judge scored these rows


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


def test_kl_on_sampled_token_ids_matches_the_exact_kl_within_its_interval(
    tiny_model: Path, tmp_path: Path
) -> None:
    """Two-token responses sampled from the candidate, scored on the ids it sampled (no text at all): the
    estimate's interval holds the exact KL(candidate || reference), summed over the whole vocabulary at
    each of the two steps for every prefix drawn. An interval that reaches 0 gives a note that the estimate
    is too noisy, never a negative KL to quote."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    reference = perturbed(tiny_model, tmp_path / "ref")
    tok = AutoTokenizer.from_pretrained(tiny_model)
    cand_m, ref_m = (AutoModelForCausalLM.from_pretrained(m).eval() for m in (tiny_model, reference))
    torch.manual_seed(0)
    rows, exact = [], []
    with torch.inference_mode():
        for p in range(12):
            chat = [{"role": "user", "content": f"Tell me about topic {p}."}]
            prompt = tok.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
            for _ in range(40):
                ids, kl = list(prompt), 0.0
                for _step in range(2):  # KL of the two-token sequence = expected sum of per-step KLs
                    lp = cand_m(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
                    lq = ref_m(torch.tensor([ids])).logits[0, -1].log_softmax(-1)
                    kl += float((lp.exp() * (lp - lq)).sum())
                    ids.append(int(torch.multinomial(lp.exp(), 1)))
                exact.append(kl)
                rows.append(
                    {"group": str(p), "messages": chat, "candidate": "", "candidate_token_ids": ids[-2:]}
                )
    cand = sequence_logprobs(tiny_model, rows, 256)
    ref = sequence_logprobs(reference, rows, 256)
    kl = kl_figures(cand, ref, [r["group"] for r in rows])
    truth = float(np.mean(exact))  # the exact KL, averaged over the same prefixes
    assert kl["ci"][0] <= truth <= kl["ci"][1] and kl["ci"][0] > 0 and "note" not in kl, (kl, truth)
    assert kl["per_token"] == pytest.approx(kl["estimate"] / 2)
    # Log-ratios -1, 0.5, 0.2 (mean below 0): no KL to print, a note saying why.
    few = kl_figures([(-1.0, 2), (0.5, 2), (0.2, 2)], [(0.0, 2)] * 3, ["a", "b", "c"])
    assert few["estimate"] < 0 and few["ci"][0] < 0 < few["ci"][1]
    assert few["note"].startswith("too noisy to tell from 0 (3 responses to 3 prompts)")


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
    with pytest.raises(ValueError, match="'reward' is a model's"):
        read_comparisons(bad, ("reward",))
    bad.write_text(json.dumps({**row, "scores": {"gold": [1, 0]}}) + "\n")
    with pytest.raises(ValueError, match="'gold' is a model's"):
        read_comparisons(bad, ("reward", "gold"))
    assert read_comparisons(bad, ("reward",))[0]["scores"] == {"gold": [1, 0]}
