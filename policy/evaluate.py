"""How much better a policy is than a baseline, from paired responses on held-out prompts.

Input: a JSONL file of comparisons, one per (prompt, system prompt, sample index): the
conversation the policy saw (system prompt first), the candidate's response and the
baseline's, a `group` (the prompt and system prompt: responses to one prompt are not
independent, so the bootstrap resamples groups), and optionally precomputed judge scores
`{"scores": {"hidden": [candidate, baseline]}}` (the simulated annotators' ground truth,
which only the service knows). For every judge (the reward model, plus those given):

* win rate: a comparison is won (1), tied (0.5) or lost (0), with a bootstrap 95% interval;
* length-controlled win rate (as AlpacaEval LC): a logistic regression of the judgment on
  tanh(length difference / its sd); the win rate it predicts at equal length;
* mean score of each side.

Also the mean length of each side and an estimate of KL(candidate || reference): the mean
over the candidate's responses of log p_candidate(y|x) - log p_reference(y|x), unbiased
when the responses were sampled at temperature 1. TRL 1.16 has no judges or win-rate
callback, so this is ours. The config is `policy.config.EvalConfig`.

    python -m policy.evaluate --config eval.yaml      # writes <output_dir>/metrics.json
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from policy.config import EvalConfig
from reward.checkpoint import write_metrics
from reward.configfile import parse_cli
from reward.score import RewardScorer

_WORD = re.compile(r"\S+")


def words(text: str) -> int:
    return len(_WORD.findall(text))


def judgments(candidate: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """1 where the candidate scores higher, 0.5 on a tie, 0 where it scores lower."""
    return 0.5 + 0.5 * np.sign(np.asarray(candidate, float) - np.asarray(baseline, float))


def _groups(keys: list[str]) -> tuple[np.ndarray, int]:
    index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    return np.array([index[k] for k in keys]), len(index)


def _draws(n_groups: int, n: int, seed: int) -> np.ndarray:
    """(n x groups): how often each group was drawn in each bootstrap resample."""
    rng = np.random.default_rng(seed)
    return np.stack(
        [np.bincount(row, minlength=n_groups) for row in rng.integers(0, n_groups, (n, n_groups))]
    )


def _interval(values: np.ndarray) -> list[float]:
    return [float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))]


def win_rate(wins: np.ndarray, group: list[str], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean judgment and its 95% bootstrap interval, resampling groups (prompts)."""
    wins = np.asarray(wins, float)
    g, n_groups = _groups(group)
    draws = _draws(n_groups, n_boot, seed)  # per-group sums keep memory at n_boot x groups
    boots = (draws @ np.bincount(g, wins, n_groups)) / (draws @ np.bincount(g, minlength=n_groups))
    return {"win_rate": float(wins.mean()), "ci": _interval(boots), "n": int(len(wins)), "groups": n_groups}


def _logistic(
    x: np.ndarray, y: np.ndarray, weight: np.ndarray, l2: float = 1e-3, iters: int = 30
) -> np.ndarray:
    """Weighted logistic regression of soft labels y on [1, x] by Newton's method."""
    X = np.column_stack([np.ones_like(x), x])
    theta = np.zeros(2)
    ridge = np.diag([0.0, l2])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-X @ theta))
        grad = X.T @ (weight * (p - y)) + ridge @ theta
        hess = (X * (weight * p * (1 - p))[:, None]).T @ X + ridge + 1e-9 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-8:
            break
    return theta


def length_controlled(
    wins: np.ndarray, length_diff: np.ndarray, group: list[str], n_boot: int = 500, seed: int = 0
) -> dict:
    """The win rate a logistic fit of judgment on tanh(length difference / sd) predicts at equal length."""
    wins = np.asarray(wins, float)
    d = np.asarray(length_diff, float)
    sd = d.std() or 1.0
    x = np.tanh(d / sd)
    ones = np.ones_like(wins)
    point = 1 / (1 + np.exp(-_logistic(x, wins, ones)[0]))
    g, n_groups = _groups(group)
    boots = [
        1 / (1 + np.exp(-_logistic(x, wins, d[g].astype(float))[0]))
        for d in _draws(n_groups, n_boot, seed + 1)
    ]
    return {"lc_win_rate": float(point), "lc_ci": _interval(np.array(boots))}


def judge_report(
    candidate: list[float],
    baseline: list[float],
    length_diff: np.ndarray,
    group: list[str],
    n_boot: int,
    seed: int,
) -> dict:
    wins = judgments(np.array(candidate), np.array(baseline))
    return {
        **win_rate(wins, group, n_boot, seed),
        **length_controlled(wins, length_diff, group, n_boot // 4, seed),
        "mean_candidate": float(np.mean(candidate)),
        "mean_baseline": float(np.mean(baseline)),
    }


def _completion_ids(
    tokenizer, messages: list[dict], response: str, finished: bool
) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) as the policy produced them: the chat template up to the assistant
    turn, then the response and, when it ended by itself (not cut at max_tokens), its end of turn."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    text = tokenizer(response, add_special_tokens=False)["input_ids"]
    if not finished:
        return prompt, text
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": response}], tokenize=True
    )["input_ids"]
    if full[: len(prompt)] != prompt:  # a template that renders the last turn differently
        full = prompt + text + [tokenizer.eos_token_id]
    return prompt, full[len(prompt) :]


def sequence_logprobs(model_dir: Path, rows: list[dict], max_length: int) -> list[tuple[float, int]]:
    """(sum of log p(response | conversation), response tokens) under one checkpoint, per row."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    with torch.inference_mode():
        for r in rows:
            prompt, completion = _completion_ids(
                tokenizer, r["messages"], r["candidate"], r.get("candidate_finish", "stop") != "length"
            )
            ids = (prompt + completion)[-max_length:]
            n = min(len(completion), len(ids) - 1)
            logits = model(input_ids=torch.tensor([ids])).logits[0, -n - 1 : -1].float()
            target = torch.tensor(ids[-n:])
            out.append((float(logits.log_softmax(-1).gather(1, target[:, None]).sum()), n))
    return out


def kl_estimate(cfg: EvalConfig, rows: list[dict]) -> dict:
    """Mean log-ratio of the candidate's own responses under candidate and reference."""
    if cfg.candidate_model is None or cfg.reference_model is None:
        return {"skipped": "no candidate_model and reference_model given"}
    vocab = [AutoTokenizer.from_pretrained(m).get_vocab() for m in (cfg.candidate_model, cfg.reference_model)]
    if vocab[0] != vocab[1]:
        return {
            "skipped": "the candidate and reference tokenizers differ, so their log-probabilities do not compare"
        }
    cand = sequence_logprobs(cfg.candidate_model, rows, cfg.max_length)
    ref = sequence_logprobs(cfg.reference_model, rows, cfg.max_length)
    ratios = np.array([c - r for (c, _), (r, _) in zip(cand, ref, strict=True)])
    tokens = sum(n for _, n in cand)
    return {
        "estimate": float(ratios.mean()),
        "per_token": float(ratios.sum() / max(tokens, 1)),
        "reference": str(cfg.reference_model),
        "temperature": cfg.temperature,
        **(
            {}
            if cfg.temperature == 1.0 and cfg.top_p == 1.0
            else {"note": "responses not sampled from the full distribution (temperature 1, top_p 1): biased"}
        ),
    }


def _progress(cfg: EvalConfig, step: int, total: int) -> None:
    if cfg.progress_file:
        cfg.progress_file.write_text(json.dumps({"step": step, "total": total}))


def read_comparisons(path: Path, reward_judge: bool = False) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no comparisons; sample some held-out prompts first")
    judges = set(rows[0].get("scores") or {})
    for i, r in enumerate(rows, 1):
        missing = [k for k in ("group", "messages", "candidate", "baseline") if k not in r]
        if missing:
            raise ValueError(f"{path} line {i}: missing {', '.join(missing)}")
        scores = r.get("scores") or {}
        if set(scores) != judges or not all(
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) for x in v)
            for v in scores.values()
        ):
            raise ValueError(
                f"{path} line {i}: scores must give every row the same judges "
                f"({', '.join(sorted(judges)) or 'none'}), each [candidate, baseline] numbers"
            )
    if reward_judge and "reward" in judges:
        raise ValueError(
            f"{path}: the judge name 'reward' is the reward model's; name given scores otherwise"
        )
    return rows


def main(cfg: EvalConfig) -> Path:
    rows = read_comparisons(cfg.comparisons, cfg.reward_model is not None)
    scores: dict[str, list[list[float]]] = {}
    for r in rows:
        for judge, pair in (r.get("scores") or {}).items():
            scores.setdefault(judge, []).append(pair)
    _progress(cfg, 0, 3)
    if cfg.reward_model is not None:
        scorer = RewardScorer(cfg.reward_model, max_length=cfg.max_length)
        # The reward model reads the conversation without the system prompt, as it was trained.
        convs = [[m for m in r["messages"] if m["role"] != "system"] for r in rows]
        cand = scorer.score_pairs([(c, r["candidate"]) for c, r in zip(convs, rows, strict=True)])
        base = scorer.score_pairs([(c, r["baseline"]) for c, r in zip(convs, rows, strict=True)])
        scores["reward"] = [list(p) for p in zip(cand, base, strict=True)]
    _progress(cfg, 1, 3)
    group = [str(r["group"]) for r in rows]
    length_diff = np.array([words(r["candidate"]) - words(r["baseline"]) for r in rows], float)
    report = {
        "comparisons": len(rows),
        "groups": len(set(group)),
        "judges": {
            name: judge_report(
                [p[0] for p in pairs], [p[1] for p in pairs], length_diff, group, cfg.bootstrap, cfg.seed
            )
            for name, pairs in scores.items()
        },
        "length": {
            "candidate_words": float(np.mean([words(r["candidate"]) for r in rows])),
            "baseline_words": float(np.mean([words(r["baseline"]) for r in rows])),
        },
        "reward_model": str(cfg.reward_model) if cfg.reward_model else None,
    }
    _progress(cfg, 2, 3)
    report["kl"] = kl_estimate(cfg, rows)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "judgments.jsonl").open("w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({**r, "scores": {k: v[i] for k, v in scores.items()}}) + "\n")
    write_metrics(out, report)
    _progress(cfg, 3, 3)
    return out


if __name__ == "__main__":
    print(main(parse_cli(EvalConfig, None, __doc__)))
