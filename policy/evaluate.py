"""How much better a policy is than a baseline, from paired responses on held-out prompts.

Input: a JSONL file of comparisons, one per (prompt, system prompt, sample index): the
conversation the policy saw (system prompt first), the candidate's response and the
baseline's, a `group` (the prompt and system prompt: responses to one prompt are not
independent, so the bootstrap resamples groups), and optionally precomputed judge scores
`{"scores": {"hidden": [candidate, baseline]}}` (the simulated annotators' ground truth,
which only the service knows). For every judge (the reward model, plus those given):

* win rate: a comparison is won (1), tied (0.5) or lost (0), with a bootstrap 95% interval;
* length-controlled win rate, for any shape of length preference, and the win rate on pairs of
  similar length beside it (policy/length_control.py);
* mean score of each side.

Also the mean length of each side and an estimate of KL(candidate || reference): the mean
over the candidate's responses of log p_candidate(y|x) - log p_reference(y|x), unbiased
when the responses were sampled at temperature 1. TRL 1.16 has no judges or win-rate
callback, so this is ours. The config is `policy.config.EvalConfig`.

    python -m policy.evaluate --config eval.yaml      # writes <output_dir>/metrics.json
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from transformers import AutoModelForCausalLM, AutoTokenizer

from policy.config import EvalConfig
from policy.length_control import length_controlled, similar_length
from policy.stats import cluster_mean_interval, judgments, win_rate
from reward.checkpoint import write_metrics
from reward.configfile import parse_cli
from reward.score import RewardScorer, local_device, trained_max_length

_WORD = re.compile(r"\S+")
EXAMPLES = 6  # comparisons an evaluation keeps for people to read: enough to see a pattern
T = TypeVar("T")


def processes() -> PartialState:
    """The processes `accelerate launch` started (one when run alone); over gloo on a machine without
    CUDA, where accelerate would otherwise see N unrelated processes."""
    return PartialState(cpu=not torch.cuda.is_available())


def sharded(score: Callable[[list[dict]], list[T]], rows: list[dict]) -> list[T]:
    """`score` over every row, in row order. Under `accelerate launch` (N processes: a job's
    `--launcher accelerate`) each process scores every Nth row from its rank and every process gets
    all of them back; alone, it scores them all."""
    state = processes()
    n = state.num_processes
    if n == 1:
        return score(rows)
    parts = gather_object([score(rows[state.process_index :: n])])
    out: list[T] = [None] * len(rows)  # type: ignore[list-item]  # every slot is filled below
    for rank, part in enumerate(parts):
        out[rank::n] = part
    return out


def words(text: str) -> int:
    return len(_WORD.findall(text))


def judge_report(
    candidate: list[float],
    baseline: list[float],
    cand_words: np.ndarray,
    base_words: np.ndarray,
    group: list[str],
    n_boot: int,
    seed: int,
) -> dict:
    wins = judgments(np.array(candidate), np.array(baseline))
    return {
        **win_rate(wins, group, n_boot, seed),
        # What the gate decides on: a t-interval with prompts as clusters holds with few of them, where a
        # percentile bootstrap over ~20 prompts is too narrow.
        "t_interval": cluster_mean_interval(wins, group),
        **length_controlled(wins, cand_words, base_words, group, n_boot // 4, seed),
        "similar_length": similar_length(wins, cand_words, base_words, group, n_boot, seed),
        "mean_candidate": float(np.mean(candidate)),
        "mean_baseline": float(np.mean(baseline)),
    }


def _completion_ids(
    tokenizer, messages: list[dict], response: str, finished: bool, sampled: list[int] | None = None
) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) as the policy produced them: the chat template up to the assistant
    turn, then the ids it sampled when known, else the response and, when it ended by itself (not cut
    at max_tokens), its end of turn."""
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)["input_ids"]
    if sampled:
        return prompt, list(sampled)
    text = tokenizer(response, add_special_tokens=False)["input_ids"]
    if not finished:
        return prompt, text
    full = tokenizer.apply_chat_template(
        messages + [{"role": "assistant", "content": response}], tokenize=True
    )["input_ids"]
    if full[: len(prompt)] != prompt:  # a template that renders the last turn differently
        full = prompt + text + [tokenizer.eos_token_id]
    return prompt, full[len(prompt) :]


LOGPROB_BATCH = 16


def sequence_logprobs(model_dir: Path, rows: list[dict], max_length: int) -> list[tuple[float, int]]:
    """(sum of log p(response | conversation), response tokens) under one checkpoint, per row: the token
    ids the policy sampled (`candidate_token_ids`, stop token included) where the row has them, else
    the response re-tokenized. Rows of similar length go together, left-padded (positions counted from
    each row's first real token), and the vocabulary projection runs only where responses are."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    device = local_device()
    model = AutoModelForCausalLM.from_pretrained(model_dir, device_map=device).eval()
    seqs = []
    for r in rows:
        prompt, completion = _completion_ids(
            tokenizer,
            r["messages"],
            r["candidate"],
            r.get("candidate_finish", "stop") != "length",
            r.get("candidate_token_ids"),
        )
        full = (prompt + completion)[-max_length:]
        seqs.append((full, min(len(completion), len(full) - 1)))
    out: list[tuple[float, int]] = [(0.0, 0)] * len(seqs)
    order = sorted(range(len(seqs)), key=lambda i: len(seqs[i][0]))
    with torch.inference_mode():
        for at in range(0, len(order), LOGPROB_BATCH):
            idx = order[at : at + LOGPROB_BATCH]
            width, keep = max(len(seqs[i][0]) for i in idx), max(seqs[i][1] for i in idx) + 1
            batch = torch.zeros((len(idx), width), dtype=torch.long)
            mask = torch.zeros_like(batch)
            for row, i in enumerate(idx):
                batch[row, width - len(seqs[i][0]) :] = torch.tensor(seqs[i][0])
                mask[row, width - len(seqs[i][0]) :] = 1
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = (
                model(
                    input_ids=batch.to(device),
                    attention_mask=mask.to(device),
                    position_ids=positions.to(device),
                    logits_to_keep=keep,
                )
                .logits.float()
                .cpu()
            )
            for row, i in enumerate(idx):
                n = seqs[i][1]  # the last n tokens, predicted by the n positions before each
                logp = logits[row, keep - n - 1 : keep - 1].log_softmax(-1)
                target = batch[row, width - n :]
                out[i] = (float(logp.gather(1, target[:, None]).sum()), n)
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
    cand = sharded(partial(sequence_logprobs, cfg.candidate_model, max_length=cfg.max_length), rows)
    ref = sharded(partial(sequence_logprobs, cfg.reference_model, max_length=cfg.max_length), rows)
    with_ids = sum(bool(r.get("candidate_token_ids")) for r in rows)
    return {
        **kl_figures(cand, ref, [str(r["group"]) for r in rows]),
        "token_ids": "sampled" if with_ids == len(rows) else "re-tokenized text" if not with_ids else "mixed",
        "reference": str(cfg.reference_model),
        "temperature": cfg.temperature,
        **(
            {}
            if cfg.temperature == 1.0 and cfg.top_p == 1.0
            else {"biased": "responses not sampled from the full distribution (temperature 1, top_p 1)"}
        ),
    }


def kl_figures(cand: list[tuple[float, int]], ref: list[tuple[float, int]], group: list[str]) -> dict:
    """KL(candidate || reference) from the candidate's own responses: the mean log-ratio with a
    cluster-robust 95% interval over prompts. A KL is never negative, so an interval that reaches 0 or
    below says the estimate is too noisy to read, and `note` says so instead of a figure to quote."""
    ratios = np.array([c - r for (c, _), (r, _) in zip(cand, ref, strict=True)])
    tokens = sum(n for _, n in cand)
    spread = cluster_mean_interval(ratios, group)
    out = {
        "estimate": spread["mean"],
        "ci": spread["ci"],
        "per_token": float(ratios.sum() / max(tokens, 1)),
        "responses": len(ratios),
    }
    if spread["ci"][0] <= 0:
        out["note"] = (
            f"too noisy to tell from 0 ({len(ratios)} responses to {spread['groups']} prompts): "
            "more samples or prompts narrow it"
        )
    return out


def model_scores(model_dir: Path, rows: list[dict], max_length: int) -> list[list[float]]:
    """[candidate, baseline] scores by a reward model, which reads the conversation without the system
    prompt, as reward models here are trained and as gold annotators judge, cut as it was trained."""
    scorer = RewardScorer(model_dir, max_length=min(max_length, trained_max_length(model_dir)))
    convs = [[m for m in r["messages"] if m["role"] != "system"] for r in rows]
    cand = scorer.score_pairs([(c, r["candidate"]) for c, r in zip(convs, rows, strict=True)])
    base = scorer.score_pairs([(c, r["baseline"]) for c, r in zip(convs, rows, strict=True)])
    return [list(p) for p in zip(cand, base, strict=True)]


def _progress(cfg: EvalConfig, step: int, total: int) -> None:
    if cfg.progress_file and processes().is_main_process:
        cfg.progress_file.write_text(json.dumps({"step": step, "total": total}))


def read_comparisons(path: Path, model_judges: tuple[str, ...] = ()) -> list[dict]:
    """The comparisons, checked; `model_judges` are the judge names this run's models take."""
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
    for name in sorted(judges & set(model_judges)):
        raise ValueError(f"{path}: the judge name {name!r} is a model's; name given scores otherwise")
    return rows


def pick_examples(rows: list[dict], seed: int, n: int = EXAMPLES) -> list[dict]:
    """`n` comparisons on different prompts, side by side for the report, in prompt order: the prompts
    and, for each, one of its comparisons (so any system prompt and sample) drawn with `seed`."""
    by_prompt: dict[str, list[dict]] = {}
    for row in rows:
        by_prompt.setdefault(str(row["group"]), []).append(row)
    rng, order = random.Random(seed), list(by_prompt)
    chosen = sorted(rng.sample(order, min(n, len(order))), key=order.index)
    keep = ("messages", "baseline", "candidate", "scores")
    picked = [rng.choice(by_prompt[g]) for g in chosen]
    return [{k: row[k] for k in keep if row.get(k) is not None} for row in picked]


def _model_judges(cfg: EvalConfig) -> tuple[tuple[str, Path | None], ...]:
    return (("reward", cfg.reward_model), ("gold", cfg.gold_model), ("safety", cfg.safety_model))


def main(cfg: EvalConfig) -> Path:
    rows = read_comparisons(
        cfg.comparisons,
        tuple(n for n, m in _model_judges(cfg) if m is not None),
    )
    scores: dict[str, list[list[float]]] = {}
    for r in rows:
        for judge, pair in (r.get("scores") or {}).items():
            scores.setdefault(judge, []).append(pair)
    _progress(cfg, 0, 3)
    for name, model in _model_judges(cfg):
        if model is not None:
            scores[name] = sharded(partial(model_scores, model, max_length=cfg.max_length), rows)
    _progress(cfg, 1, 3)
    group = [str(r["group"]) for r in rows]
    cand_words = np.array([words(r["candidate"]) for r in rows], float)
    base_words = np.array([words(r["baseline"]) for r in rows], float)
    report = {
        "comparisons": len(rows),
        "groups": len(set(group)),
        "judges": {
            name: judge_report(
                [p[0] for p in pairs],
                [p[1] for p in pairs],
                cand_words,
                base_words,
                group,
                cfg.bootstrap,
                cfg.seed,
            )
            for name, pairs in scores.items()
        },
        "length": {
            "candidate_words": float(cand_words.mean()),
            "baseline_words": float(base_words.mean()),
        },
        "reward_model": str(cfg.reward_model) if cfg.reward_model else None,
        "processes": processes().num_processes,  # that scored it, each a share of the comparisons
    }
    judged = [{**r, "scores": {k: v[i] for k, v in scores.items()}} for i, r in enumerate(rows)]
    report["examples"] = pick_examples(judged, cfg.seed)
    _progress(cfg, 2, 3)
    report["kl"] = kl_estimate(cfg, rows)
    out = Path(cfg.output_dir)
    if not processes().is_main_process:  # the others scored their shares; one process writes
        return out
    out.mkdir(parents=True, exist_ok=True)
    with (out / "judgments.jsonl").open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in judged)
    write_metrics(out, report)
    _progress(cfg, 3, 3)
    return out


if __name__ == "__main__":
    print(main(parse_cli(EvalConfig, None, __doc__)))
