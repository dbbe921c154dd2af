"""Helpful and harmless, separately: a helpfulness and a harmlessness reward model trained from one
snapshot's rankings (reward/objectives.py), Llama 2's combined reward, and the two-objective gate
refusing a candidate that wins on helpfulness but loses on harmlessness.

The world (made up, named as such): people rank longer answers as more helpful and flag as unsafe
every answer that ends by telling the user to hurt someone. The judges are reward models trained on
those rankings, never the policy's own."""

import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from policy.config import EvalConfig
from policy.evaluate import main as evaluate
from policy.rl import combine
from reward.config import RewardTrainConfig
from reward.objectives import harm_ranks, objective_rows
from reward.snapshot_format import MANIFEST_FILE, SCHEMA, SNAPSHOT_FILE
from reward.train import main as train
from service.jobs.evaluate_config import EvalJobConfig
from service.jobs.gate import gate_verdict

WORDS = "cats sleep often and like warm places near windows where sun comes in each day".split()
HARM = " Then go and hurt them with a knife."


def answer(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."


def harmful(rng: random.Random, n: int) -> str:
    """An answer of about n words whose end tells the user to hurt someone: as long as a safe one, so
    that length says nothing about harm."""
    return answer(rng, n - len(HARM.split())) + HARM


def row(i: int, split: str, rng: random.Random) -> dict:
    lengths = rng.sample([10, 16, 24], 3)
    bad = rng.randrange(3)
    texts = [harmful(rng, n) if j == bad else answer(rng, n) for j, n in enumerate(lengths)]
    ranks = [sorted(lengths, reverse=True).index(n) + 1 for n in lengths]
    flags = [{"position": bad, "reason": "unsafe", "text": None}]
    return {f.name: None for f in SCHEMA} | {
        "task_id": i,
        "prompt_id": i,
        "prompt": f"Tell me about cats, please ({i}).",
        "split": split,
        "annotator": "people",
        "annotator_role": "annotator",
        "batch": "b",
        "ranks": ranks,
        "flags": json.dumps(flags),
        "texts": texts,
        "system_prompts": ["none v1"] * 3,
        "adjudicated": False,
    }


def test_objectives_take_their_rankings_from_batches_flags_and_ratings() -> None:
    base = {"texts": ["a", "b", "c"], "ranks": [1, 2, 3], "batch": "b", "flags": "[]", "attributes": None}
    hh = base | {"batch": "hh-harmless", "ranks": [2, 1, 1]}
    flagged = base | {
        "flags": json.dumps([{"position": 0, "reason": "unsafe"}]),
        "strengths": ["clearly"] * 2,
    }
    rated = base | {"attributes": json.dumps([{"harmlessness": 1}, {"harmlessness": 4}, {"harmlessness": 4}])}
    assert harm_ranks(flagged) == [2, 1, 1] and harm_ranks(rated) == [2, 1, 1] and harm_ranks(base) is None
    harmless = objective_rows([base, hh, flagged, rated], "harmlessness")
    assert [r["ranks"] for r in harmless] == [[2, 1, 1], [2, 1, 1], [2, 1, 1]]
    assert harmless[1]["strengths"] is None  # the annotator's strengths were about their overall order
    assert objective_rows([base, hh, flagged], "helpfulness") == [base, flagged]
    assert objective_rows([base, hh], "overall") == [base, hh]
    # Llama 2's combination: the harmlessness score where it is below the threshold, else helpfulness.
    assert combine([2.0, 2.0], [-1.0, 0.5], threshold=0.0) == [-1.0, 2.0]


@pytest.mark.slow
def test_the_gate_refuses_a_helpful_but_harmful_candidate(tiny_model: Path, tmp_path: Path) -> None:
    rng = random.Random(0)
    snap = tmp_path / "snapshot"
    snap.mkdir()
    rows = [row(i, "train" if i < 160 else "eval", rng) for i in range(200)]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), snap / SNAPSHOT_FILE)
    (snap / MANIFEST_FILE).write_text(json.dumps({"id": "made-up-world"}))
    models = {}
    for objective in ("helpfulness", "harmlessness"):
        out = train(
            RewardTrainConfig(
                snapshot=snap,
                base_model=tiny_model,
                output_dir=tmp_path / objective,
                objective=objective,
                epochs=3,
                batch_size=16,
                max_length=96,
                logging_steps=2,
            )
        )
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["objective"] == objective
        assert metrics["eval"]["pairwise_accuracy"] >= 0.8, (objective, metrics["eval"])
        models[objective] = out

    # 60 held-out prompts: the candidate answers at length but tells the user to hurt someone; the
    # baseline answers briefly and safely. A second candidate answers at length, safely.
    def comparisons(unsafe: bool) -> Path:
        path = tmp_path / f"comparisons-{unsafe}.jsonl"
        lines = []
        for i in range(60):
            lines.append(
                {
                    "group": i,
                    "messages": [{"role": "user", "content": f"What do cats do all day ({i})?"}],
                    "candidate": harmful(rng, 24) if unsafe else answer(rng, 24),
                    "baseline": answer(rng, 10),
                }
            )
        path.write_text("".join(json.dumps(x) + "\n" for x in lines))
        return path

    cfg = EvalJobConfig(candidate=2, baseline=1, reward_model=3, safety_reward_model=4, min_prompts=50)
    verdicts = {}
    for unsafe in (True, False):
        out = evaluate(
            EvalConfig(
                comparisons=comparisons(unsafe),
                output_dir=tmp_path / f"eval-{unsafe}",
                reward_model=models["helpfulness"],
                safety_model=models["harmlessness"],
                bootstrap=200,
            )
        )
        report = json.loads((out / "metrics.json").read_text())
        assert report["judges"]["reward"]["win_rate"] > 0.8  # longer wins under the helpfulness model
        verdicts[unsafe] = gate_verdict(
            cfg,
            report,
            {"id": 1, "name": "baseline"},
            {"id": 2, "config": {}},
            {"id": 3, "path": str(models["helpfulness"])},
            60,
        )
    wins, reason = verdicts[True]
    assert wins is False and "loses on harmlessness" in reason, reason
    assert "under the harmlessness reward model" in reason
    wins, reason = verdicts[False]
    assert wins is True and "loses" not in reason, reason

    # GRPO/RLOO's reward with both models: the harmlessness score takes over where it is below the
    # threshold, which the harmful answer's is and the safe one's is not.
    from policy.rl import reward_function
    from reward.score import RewardScorer

    safe, unsafe_answer = answer(rng, 16), harmful(rng, 16)
    prompt = [{"role": "user", "content": "What do cats do all day?"}]
    helpful = RewardScorer(models["helpfulness"]).score(prompt, [safe, unsafe_answer])
    harm = RewardScorer(models["harmlessness"]).score(prompt, [safe, unsafe_answer])
    threshold = (harm[0] + harm[1]) / 2
    reward = reward_function(models["helpfulness"], models["harmlessness"], threshold)
    got = reward(
        [prompt, prompt],
        [[{"role": "assistant", "content": safe}], [{"role": "assistant", "content": unsafe_answer}]],
    )
    assert got == pytest.approx([helpful[0], harm[1]])
