"""The gold-judge world of `rankloop demo --real` (Gao et al. 2022; AlpacaFarm): Anthropic HH pairs
split by conversation opening into two parts that share no opening.

* the **gold** part trains the gold reward model on SmolLM2-135M-Instruct's backbone, fitted to the HH
  labels (a head on the frozen model without a GPU, reward/head.py; every weight with one), the
  simulated annotators' truth and the evaluation's judge;
* the **loop** part gives the loop its prompts (the openings) and, as HH pairs the gold model never
  saw, measures the gold model against the people who labelled them.

Nothing downstream trains on the gold part: the loop sees only its own samples, ranked by the gold
annotators. The world is built once per data directory (<data>/world) and reused.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

from reward.checkpoint import is_model_dir, read_metrics
from reward.conversation import split_key
from service.core.errors import UserError
from service.core.paths import write_atomic
from service.data.hh import read_hh

HH_FILE = "hh-harmless-base-dev.jsonl.gz"
# Beside a checkout, the workplace's shared data holds Anthropic's harmless-base test split (MIT).
DEFAULT_HH = Path(__file__).resolve().parents[3] / "shared" / "data" / HH_FILE
SYSTEM_PROMPT = {"assistant": "You are a helpful, honest and harmless assistant."}
# The reward models' recipe where the trainer sees a GPU (`frozen_backbone: auto`): every weight, TRL's
# pairwise RewardTrainer at a fine-tuning rate (bench/reward_hh.py's TRL baseline). The head on the
# frozen model, which runs without a GPU, reads none of these.
WHOLE_MODEL_ON_GPU = {"mode": "pairwise", "learning_rate": 1e-5, "epochs": 2}


def world_part(opening: str) -> str:
    """'gold' or 'loop', from the normalized opening with its own salt: independent of the snapshot's
    train/eval split (`reward.data.split_of`), which hashes the same key unsalted."""
    return "gold" if hashlib.sha256(f"world:{split_key(opening)}".encode()).digest()[0] < 128 else "loop"


@dataclass(frozen=True)
class WorldSize:
    gold_pairs: int  # HH pairs the gold model trains on
    eval_pairs: int  # held-out HH pairs it is measured on (0: all of the loop part's)
    max_length: int  # tokens per response the gold model reads, its end kept
    prompts: int  # loop prompts (HH openings)


def require_hh_file(hh: Path) -> None:
    if not hh.is_file():
        raise UserError(
            f"--hh {hh}: no such file; give Anthropic HH-RLHF pairs as JSONL (.gz or not), such as "
            f"{HH_FILE} from the HH-RLHF repository (MIT)"
        )


def read_world(hh: Path) -> dict[str, list[dict]]:
    require_hh_file(hh)
    rows = read_hh(hh).rows
    parts: dict[str, list[dict]] = {"gold": [], "loop": []}
    for r in rows:
        parts[world_part(r["messages"][0]["content"])].append(r)
    return parts


def snapshot_rows(rows: list[dict], split: str) -> list[dict]:
    """HH pairs as snapshot rows (`reward.snapshot_format.SCHEMA`): chosen ranked above rejected."""
    return [
        {
            "ranking_id": i,
            "task_id": i,
            "prompt_id": i,
            "prompt": json.dumps(r["messages"]),
            "split": split,
            "annotator": "hh-rlhf",
            "annotator_role": "human",
            "ranks": [1, 2],
            "texts": [r["chosen"], r["rejected"]],
            "system_prompts": ["none v1", "none v1"],
            "system_prompt_texts": ["", ""],
            "messages": json.dumps(r["messages"]),
        }
        for i, r in enumerate(rows)
    ]


def build_gold(parts: dict[str, list[dict]], base: Path, out: Path, size: WorldSize) -> dict:
    """Train the gold reward model on the gold part and measure it on held-out loop-part pairs (a reward
    snapshot's eval split); reused when `out` holds one. Its metrics."""
    model = out / "gold-reward"
    if is_model_dir(model) and (metrics := read_metrics(model)):
        print(f"using the gold reward model built before in {model}")
        return metrics
    import pyarrow as pa
    import pyarrow.parquet as pq

    from reward.config import RewardTrainConfig
    from reward.snapshot_format import SCHEMA
    from reward.train import main as train_reward

    gold = parts["gold"][: size.gold_pairs]
    held = parts["loop"][: size.eval_pairs or None]
    snap = out / "gold-snapshot"
    snap.mkdir(parents=True, exist_ok=True)
    rows = snapshot_rows(gold, "train") + snapshot_rows(held, "eval")
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), snap / "rankings.parquet")
    print(
        f"training the gold reward model on {base.name} (a head on the frozen model without a GPU, the "
        f"whole model with one) fitted to {len(gold)} HH pairs "
        f"(the gold part), measured on {len(held)} held-out pairs of the loop part"
    )
    t0 = time.monotonic()
    train_reward(
        RewardTrainConfig(
            snapshot=snap,
            base_model=base,
            output_dir=model,
            frozen_backbone="auto",
            **WHOLE_MODEL_ON_GPU,
            max_length=size.max_length,
            batch_size=16,
        )
    )
    metrics = read_metrics(model) or {}
    print(
        f"gold reward model: held-out accuracy against the HH labellers "
        f"{metrics.get('eval', {}).get('pairwise_accuracy')} on {len(held)} pairs ({metrics.get('mode')}; "
        f"{time.monotonic() - t0:.0f} s)"
    )
    return metrics


def write_prompts(parts: dict[str, list[dict]], out: Path, n: int) -> tuple[Path, Path]:
    """The loop's prompts (the first `n` distinct openings of the loop part) and its system prompt."""
    seen: dict[str, str] = {}
    for r in parts["loop"]:
        opening = r["messages"][0]["content"]
        seen.setdefault(split_key(opening), opening)
    openings = list(seen.values())[:n]
    if len(openings) < n:
        raise UserError(f"the HH file's loop part has {len(openings)} distinct openings; the demo needs {n}")
    prompts, system = out / "prompts.jsonl", out / "system-prompts.yaml"
    lines = (json.dumps({"messages": [{"role": "user", "content": o}]}) + "\n" for o in openings)
    write_atomic(prompts, "".join(lines).encode())
    write_atomic(system, "".join(f"{k}: {json.dumps(v)}\n" for k, v in SYSTEM_PROMPT.items()).encode())
    return prompts, system
