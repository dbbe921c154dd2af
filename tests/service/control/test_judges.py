"""Model judges: answer parsing, templates, and a generative judge on the tiny model served by vLLM
whose unusable answers are skipped with reasons; judges that cannot work are refused up front."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli.main import main
from service.control.judges import check_template, parse_ranking, ranks_from_scores
from service.core.store import Store
from tests.support.seeding import seed_tasks


def test_parse_ranking() -> None:
    assert parse_ranking("2 > 1 > 3", 3) == [2, 1, 3]
    assert parse_ranking("Ranking: 3 > 1 = 2 > 4", 4) == [2, 2, 1, 3]  # ties with "="
    assert parse_ranking("I think [2, 3, 1] is right", 3) == [3, 1, 2]
    assert parse_ranking("1 > 2", 3) is None  # must name every candidate
    assert parse_ranking("1 > 1 > 2", 3) is None
    assert parse_ranking("no idea", 2) is None
    assert parse_ranking("see 5 > 9, then 2 > 1", 2) == [2, 1]  # the first ranking that fits
    assert ranks_from_scores([0.5, 2.0, 0.5]) == [2, 1, 2]


def test_template_placeholders() -> None:
    assert check_template("ok", "{conversation} {candidates} {k}") == []
    assert check_template("t", "Rank {candidates}") == ["template 't' lacks the placeholder {conversation}"]
    assert "unknown placeholder {answer}" in check_template("t", "{conversation}{candidates}{answer}")[0]
    assert "literal braces" in check_template("t", "{conversation {candidates}")[0]


def test_bad_judges_are_refused_and_store_nothing(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=2, k=2)
    bad = tmp_path / "templates.yaml"
    bad.write_text("terse: Rank these {candidates}\n")
    for argv, message in [
        (["judge-templates", "add", str(bad)], "template 'terse' lacks the placeholder {conversation}"),
        (["judge", "--endpoint", "http://127.0.0.1:9/v1"], "does not answer"),
        (
            ["judge", "--endpoint", "http://127.0.0.1:9/v1", "--template", "nope"],
            "no judge template named 'nope'",
        ),
        (["judge"], "name one judge"),
        (["judge", "--reward-model", "1"], "is a pretrained model"),
    ]:
        assert main(["--data", str(data), *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    with Store.open(data / "rankloop.duckdb") as store:
        assert store.scalar("SELECT count(*) FROM annotators WHERE role = 'judge'") == 0
        assert store.scalar("SELECT count(*) FROM rankings") == 0
        assert store.scalar("SELECT count(*) FROM judge_templates") == 0


@pytest.mark.slow
def test_generative_judge_on_the_tiny_model_skips_what_does_not_parse(
    tmp_path: Path, tiny_model: Path, capsys
) -> None:
    data = tmp_path / "data"
    with Store.open(data / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=2, k=3, styles=("brief",))  # 2 tasks of 3 candidates
    assert (
        main(
            [
                "--data",
                str(data),
                "--config",
                str(_float32(tmp_path)),
                "judge",
                "--model",
                str(tiny_model),
                "--retries",
                "1",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "judge 'judge-tiny'" in out
    with Store.open(data / "rankloop.duckdb") as store:
        rows = store.query("""SELECT r.skipped, r.skip_reason, r.ranks, r.rationale FROM rankings r
                              JOIN annotators a ON a.id = r.annotator_id WHERE a.role = 'judge'""")
    assert len(rows) == 2  # one answer per task: a ranking, or a skip with its reason
    skipped = [r for r in rows if r["skipped"]]
    assert skipped, "a barely trained model should not produce a parseable ranking"
    for r in skipped:
        assert r["skip_reason"].startswith("cannot_judge: judge answer did not parse after 2 tries"), r
    for r in rows:
        if not r["skipped"]:
            assert sorted(r["ranks"]) and "shown order" in r["rationale"]


def _float32(tmp_path: Path) -> Path:
    cfg = tmp_path / "settings.yaml"
    cfg.write_text("vllm:\n  dtype: float32\n")
    return cfg
