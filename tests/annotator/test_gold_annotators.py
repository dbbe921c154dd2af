"""Gold simulated annotators (the gold-judge world): they rank by a gold reward model's scores with the
same Bradley-Terry noise, ties and unreliability as the rule-based ones; the scores come from the caller,
and a gold account's rankings leave no hidden utility in a snapshot (the service runs no model)."""

import json
import random
from pathlib import Path

import pytest

from annotator import simulate_run
from annotator.simulated import Profile, rank
from service.cli.main import main
from service.core.errors import UserError
from service.core.store import Store
from tests.support.seeding import seed_tasks

CANDIDATES = [{"text": t} for t in ("a", "b", "c", "d")]


def test_a_gold_annotator_ranks_by_the_gold_scores_with_bradley_terry_noise() -> None:
    gold = Profile(gold_model="/models/gold", noise=0.01)
    # Nearly noiseless: the gold order, whatever the texts say (a rule-based annotator reads the texts).
    assert rank(gold, CANDIDATES, random.Random(0), [0.1, 2.0, -1.0, 1.0]) == [3, 1, 4, 2]
    # At the model's own confidence (noise 1), a 1-logit gap is won sigmoid(1) = 0.73 of the time.
    noisy = Profile(gold_model="/models/gold", noise=1.0, tie_margin=0.0)
    pairs = [{"text": "x"}, {"text": "y"}]
    wins = sum(rank(noisy, pairs, random.Random(i), [1.0, 0.0]) == [1, 2] for i in range(4000)) / 4000
    assert wins == pytest.approx(0.731, abs=0.025)
    # Scores closer than the tie margin tie, as utilities do.
    assert rank(Profile(gold_model="g", noise=0.01), pairs, random.Random(0), [0.5, 0.51]) == [1, 1]


def test_gold_scores_are_required_unless_the_annotator_ranks_at_random() -> None:
    with pytest.raises(ValueError, match="give 4 of them"):
        rank(Profile(gold_model="/models/gold"), CANDIDATES, random.Random(0))
    with pytest.raises(ValueError, match="give 4 of them"):
        rank(Profile(gold_model="/models/gold"), CANDIDATES, random.Random(0), [1.0])
    at_random = rank(Profile(gold_model="/models/gold", unreliable=True), CANDIDATES, random.Random(0))
    assert sorted(at_random) == [1, 2, 3, 4]
    profiles = simulate_run.default_profiles(2, 1.0, 1, gold_model="/models/gold")
    assert list(profiles) == ["gold-1", "gold-2", "gold-u1"]
    with pytest.raises(UserError, match="gold-1, gold-2 rank by a gold reward model, and no gold scorer"):
        simulate_run.run(simulate_run.LocalQueue(None, None), profiles)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gold_model(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A reward model on the tiny backbone: its scores are all the test needs of a gold judge."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("gold") / "gold-reward"
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    with torch.no_grad():  # a random head scores every answer about alike; spread its scores out
        model.score.weight.mul_(1000)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(out)
    return out


def test_annotate_sim_with_a_gold_model_ranks_by_its_scores(
    gold_model: Path, tiny_model: Path, tmp_path: Path, capsys
) -> None:
    from reward.score import RewardScorer

    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=4, k=3, styles=("brief", "detailed"), required=3)
    # A chat model is no gold judge: refused before any account is made.
    assert main(["--data", str(data), "annotate-sim", "--gold-model", str(tiny_model)]) == 2
    assert "is not a reward model (LlamaForCausalLM)" in capsys.readouterr().err
    with Store.open(data / "rankloop.duckdb") as store:
        assert store.query("SELECT * FROM annotators") == []
    argv = ["annotate-sim", "--gold-model", str(gold_model), "--annotators", "2", "--unreliable", "1"]
    assert main(["--data", str(data), *argv, "--noise", "0.001"]) == 0
    assert "stored 24 rankings" in capsys.readouterr().out
    scorer = RewardScorer(gold_model)
    with Store.open(data / "rankloop.duckdb") as store:
        accounts = {
            r["name"]: json.loads(r["profile"]) for r in store.query("SELECT name, profile FROM annotators")
        }
        assert set(accounts) == {"gold-1", "gold-2", "gold-u1"}
        assert all(p["gold_model"] == str(gold_model.resolve()) for p in accounts.values())
        text = {r["id"]: r["text"] for r in store.query("SELECT id, text FROM samples")}
        rows = store.query(
            """SELECT a.name, r.ranks, p.text AS prompt, t.sample_ids
               FROM rankings r JOIN annotators a ON a.id = r.annotator_id JOIN tasks t ON t.id = r.task_id
               JOIN prompts p ON p.id = t.prompt_id"""
        )
        checked = 0
        for r in rows:
            if r["name"] == "gold-u1":
                continue
            scores = scorer.score(r["prompt"], [text[i] for i in r["sample_ids"]])
            best = max(range(len(scores)), key=scores.__getitem__)
            gap = sorted(scores)[-1] - sorted(scores)[-2]
            if gap > 0.05:  # noise 0.001: the gold model's favourite comes first
                assert r["ranks"][best] == 1, (r, scores)
                checked += 1
        assert checked >= 4, f"too few tasks with a clear gold favourite to check ({checked})"
        # A snapshot carries no hidden utility for gold rankings: the service cannot compute them.
    assert main(["--data", str(data), "snapshot", "--eval-fraction", "0.5"]) == 0
    snapshot = next((data / "snapshots").iterdir()) / "rankings.parquet"
    import pyarrow.parquet as pq

    assert all(u is None for u in pq.read_table(snapshot).column("hidden_utility").to_pylist())


def test_annotators_taking_turns_meet_on_tasks_in_every_pairing(tmp_path: Path) -> None:
    """In turns (how gold annotators rank), who shares a task with whom varies: in a fixed order two
    annotators would always meet, and one paired only with a random ranker would be flagged unreliable."""
    from service.core.settings import AnnotationOptions

    with Store.open(tmp_path / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=12, k=2, styles=("brief", "detailed"), required=2)
        profiles = simulate_run.ensure_accounts(store, simulate_run.default_profiles(3, 0.3, 1))
        simulate_run.run(
            simulate_run.LocalQueue(store, AnnotationOptions(gold_rate=0)), profiles, parallel=False
        )
        pairs = store.query(
            """SELECT DISTINCT list_sort(list(a.name)) AS pair FROM rankings r
               JOIN annotators a ON a.id = r.annotator_id GROUP BY r.task_id"""
        )
    assert len(pairs) >= 4, pairs  # of the 6 possible; a fixed order gives 2
