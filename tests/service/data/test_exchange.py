"""Export to TRL / HH / full rankings, and HH-RLHF import with its bad inputs."""

import json
from pathlib import Path

import pytest

from annotator import queue
from annotator.accounts import add_annotator
from annotator.ranking import RankingError, Submission
from service.cli.main import main
from service.core.settings import AnnotationOptions
from service.core.store import Store
from service.data import exchange
from service.data.exchange import ImportedRanking, export, import_hh, import_rankings
from service.data.hh import parse_hh
from service.data.prompts import InputFileError
from tests.support.seeding import seed_tasks


def answer(transcript: str) -> str:
    parsed = parse_hh(transcript)
    assert not isinstance(parsed, str), parsed
    return parsed.answer


def added(result: dict) -> tuple[int, int]:
    return result["added"], result["already"]


def ranked_store(path: Path) -> Path:
    db = path / "data" / "rankloop.duckdb"
    with Store.open(db) as store:
        seed_tasks(store, n_prompts=2, k=3, styles=("brief",))  # 2 tasks of 3 candidates
        who = add_annotator(store, "sim", "simulated")
        first = queue.next_task(store, who, AnnotationOptions(gold_rate=0))
        assert first is not None
        queue.submit(store, who, Submission(task_id=first["task_id"], submission_id="a", ranks=[1, 1, 2]))
        second = queue.next_task(store, who, AnnotationOptions(gold_rate=0))
        assert second is not None
        queue.submit(store, who, Submission(task_id=second["task_id"], submission_id="b", ranks=[3, 1, 2]))
    return db


def lines(p: Path) -> list[dict]:
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_export_formats(tmp_path: Path) -> None:
    db = ranked_store(tmp_path)
    with Store.open(db) as store:
        texts = {
            r["task_id"]: r
            for r in store.query(
                "SELECT r.task_id, t.sample_ids FROM rankings r JOIN tasks t ON t.id = r.task_id ORDER BY r.id"
            )
        }
        sample_text = {r["id"]: r["text"] for r in store.query("SELECT id, text FROM samples")}
        prompt = store.scalar(
            "SELECT p.text FROM tasks t JOIN prompts p ON p.id = t.prompt_id ORDER BY t.id LIMIT 1"
        )
        # [1,1,2] gives 2 strict pairs (the tie none); [3,1,2] gives 3.
        assert export(store, "trl", tmp_path / "trl.jsonl") == 5
        assert export(store, "hh", tmp_path / "hh.jsonl") == 5
        assert export(store, "jsonl", tmp_path / "full.jsonl") == 2
    trl = lines(tmp_path / "trl.jsonl")
    first_task = next(iter(texts.values()))
    a, b, c = (sample_text[s] for s in first_task["sample_ids"])
    assert trl[0] == {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": a}],
        "rejected": [{"role": "assistant", "content": c}],
    }
    assert trl[1]["chosen"][0]["content"] == b and trl[1]["rejected"][0]["content"] == c
    hh = lines(tmp_path / "hh.jsonl")
    assert hh[0] == {
        "chosen": f"\n\nHuman: {prompt}\n\nAssistant: {a}",
        "rejected": f"\n\nHuman: {prompt}\n\nAssistant: {c}",
    }
    full = lines(tmp_path / "full.jsonl")
    assert [c["rank"] for c in full[1]["candidates"]] == [3, 1, 2]
    assert {"system_prompt", "model", "text"} <= set(full[0]["candidates"][0])


def test_export_import_round_trip_through_the_cli(tmp_path: Path, capsys) -> None:
    db = ranked_store(tmp_path)
    data = db.parent
    assert main(["--data", str(data), "export", "--format", "hh", "--out", str(tmp_path / "hh.jsonl")]) == 0
    other = tmp_path / "other"
    assert main(["--data", str(other), "import", "hh", str(tmp_path / "hh.jsonl")]) == 0
    assert main(["--data", str(other), "import", "hh", str(tmp_path / "hh.jsonl")]) == 0  # again: nothing new
    assert "(5 already imported)" in capsys.readouterr().out
    with Store.open(other / "rankloop.duckdb") as store:
        c = store.counts()
        assert (c["rankings"], c["tasks"], c["samples"], c["prompts"]) == (5, 5, 10, 2)
        rows = store.query("""SELECT r.ranks, t.sample_ids, a.role FROM rankings r JOIN tasks t ON t.id = r.task_id
                              JOIN annotators a ON a.id = r.annotator_id""")
        assert {r["role"] for r in rows} == {"import"}
        assert store.scalar("SELECT kind FROM models") == "external"
    # Exporting the imported data as TRL gives the same 5 preference pairs.
    assert (
        main(["--data", str(other), "export", "--format", "hh", "--out", str(tmp_path / "again.jsonl")]) == 0
    )
    key = lambda r: (r["chosen"], r["rejected"])  # noqa: E731
    assert sorted(map(key, lines(tmp_path / "again.jsonl"))) == sorted(map(key, lines(tmp_path / "hh.jsonl")))


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"chosen": "x"}\n', 'line 2: expected an object with string fields "chosen" and "rejected"'),
        ("not json\n", "line 2: not valid JSON"),
        (
            '{"chosen": "\\n\\nHuman: hi", "rejected": "\\n\\nHuman: hi"}\n',
            'must end with an "Assistant:" turn',
        ),
        (
            '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: x", "rejected": "\\n\\nHuman: b\\n\\nAssistant: y"}\n',
            "must share the conversation",
        ),
        (
            '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: x", "rejected": "\\n\\nHuman: a\\n\\nAssistant: x"}\n',
            "the same answer",
        ),
        (
            '{"chosen": "\\n\\nHuman: a\\n\\nHuman: b\\n\\nAssistant: x", "rejected": "\\n\\nHuman: a\\n\\nAssistant: y"}\n',
            "line 2: the chosen transcript is not valid: turn 2 is Human again: the turns must alternate",
        ),
        (
            '{"chosen": "preamble\\n\\nHuman: a\\n\\nAssistant: x", "rejected": "\\n\\nHuman: a\\n\\nAssistant: y"}\n',
            'must start with a "Human:" turn',
        ),
        (
            '{"chosen": "\\n\\nHuman: a\\n\\nAssistant:  \\n\\nHuman: b\\n\\nAssistant: x", "rejected": "y"}\n',
            "turn 2 is empty",
        ),
    ],
)
def test_malformed_hh_is_rejected_whole_with_strict(
    tmp_path: Path, capsys, content: str, message: str
) -> None:
    good = (
        '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: yes", "rejected": "\\n\\nHuman: a\\n\\nAssistant: no"}\n'
    )
    f = tmp_path / "hh.jsonl"
    f.write_text(good + content)
    data = tmp_path / "data"
    main(["--data", str(data), "init"])
    assert main(["--data", str(data), "import", "hh", "--strict", str(f)]) == 2
    err = capsys.readouterr().err
    assert message in err  # line numbers count the good row before the bad one
    with Store.open(data / "rankloop.duckdb") as store:
        c = store.counts()
        assert (c["prompts"], c["samples"], c["rankings"], c["models"]) == (0, 0, 0, 0)


def test_empty_hh_file(tmp_path: Path, capsys) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    assert main(["--data", str(tmp_path / "data"), "import", "hh", str(f)]) == 2
    assert "holds no rows" in capsys.readouterr().err


def hh(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


def test_multi_turn_hh_round_trip_is_lossless(tmp_path: Path, capsys) -> None:
    """Every Human/Assistant turn is kept as the conversation; export writes every turn back."""
    rows = [
        {
            "chosen": hh("I want a pet.", "Cat or dog?", "A cat. What do they eat?", "Fish and meat."),
            "rejected": hh("I want a pet.", "Cat or dog?", "A cat. What do they eat?", "Rocks."),
        },
        {
            "chosen": hh("Hi", "Hello!", "Tell me a joke.", "Why did the cat sit on the laptop?"),
            "rejected": hh("Hi", "Hello!", "Tell me a joke.", "No."),
        },
        {
            "chosen": hh("Describe bread.", "Bread is baked dough."),
            "rejected": hh("Describe bread.", "Bread."),
        },
    ]
    first = tmp_path / "in.jsonl"
    first.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--data", str(a), "import", "hh", str(first)]) == 0
    with Store.open(a / "rankloop.duckdb") as store:
        convs = [json.loads(r["messages"]) for r in store.query("SELECT messages FROM prompts ORDER BY id")]
    assert convs[0] == [
        {"role": "user", "content": "I want a pet."},
        {"role": "assistant", "content": "Cat or dog?"},
        {"role": "user", "content": "A cat. What do they eat?"},
    ]
    assert [len(c) for c in convs] == [3, 3, 1]
    assert main(["--data", str(a), "export", "--format", "hh", "--out", str(tmp_path / "out.jsonl")]) == 0
    assert main(["--data", str(a), "export", "--format", "trl", "--out", str(tmp_path / "trl.jsonl")]) == 0
    key = lambda r: (r["chosen"], r["rejected"])  # noqa: E731
    assert sorted(map(key, lines(tmp_path / "out.jsonl"))) == sorted(map(key, rows))  # every turn, as given
    trl = {r["chosen"][0]["content"]: r for r in lines(tmp_path / "trl.jsonl")}
    assert trl["Fish and meat."]["prompt"] == convs[0]  # TRL's conversational format: the whole conversation
    assert main(["--data", str(b), "import", "hh", str(tmp_path / "out.jsonl")]) == 0
    with Store.open(b / "rankloop.duckdb") as store:
        again = [json.loads(r["messages"]) for r in store.query("SELECT messages FROM prompts ORDER BY id")]
        texts = sorted(r["text"] for r in store.query("SELECT text FROM samples"))
    assert sorted(map(json.dumps, again)) == sorted(map(json.dumps, convs))
    assert texts == sorted(t for r in rows for t in (answer(r["chosen"]), answer(r["rejected"])))


def test_imports_store_through_the_queue_and_prompt_paths(store: Store, tmp_path: Path) -> None:
    """An HH import's rankings are the queue's rows (dense, by the `import` account, counted by the
    queue), its prompts are the prompt store's (source 'import'), its tasks the task store's."""
    f = tmp_path / "hh.jsonl"
    f.write_text(
        "".join(
            json.dumps({"chosen": hh(q, "A fine answer."), "rejected": hh(q, "No.")}) + "\n"
            for q in ("Why is the sky blue?", "How do bees fly?")
        )
    )
    person = add_annotator(store, "sim", "simulated")
    assert queue.progress(store, person, AnnotationOptions(gold_rate=0))["queue"] == 0  # the book exists
    assert added(import_hh(store, f)) == (2, 0)
    rows = store.query(
        """SELECT r.ranks, r.flags, r.skipped, r.submission_id, a.name, a.role, t.batch, t.required_rankings,
                  len(t.sample_ids) AS k, p.source FROM rankings r JOIN annotators a ON a.id = r.annotator_id
           JOIN tasks t ON t.id = r.task_id JOIN prompts p ON p.id = t.prompt_id"""
    )
    assert len(rows) == 2
    for r in rows:
        assert sorted(r["ranks"]) == [1, 2] and r["flags"] == "[]" and not r["skipped"]
        assert (r["name"], r["role"], r["batch"], r["required_rankings"], r["k"], r["source"]) == (
            "import",
            "import",
            "import",
            1,
            2,
            "import",
        )
        assert r["submission_id"].startswith("hh:")
    assert queue.next_task(store, person, AnnotationOptions(gold_rate=0)) is None  # both count as done
    assert added(import_hh(store, f)) == (0, 2)


def test_an_import_row_with_an_invalid_ranking_is_refused_as_a_submit_is(
    store: Store, tmp_path: Path
) -> None:
    (tid,) = seed_tasks(store, n_prompts=1, k=2, styles=("brief",))
    person = add_annotator(store, "sim", "simulated")
    queue.next_task(store, person, AnnotationOptions(gold_rate=0))
    with pytest.raises(RankingError) as submitted:
        queue.submit(store, person, Submission(task_id=tid, submission_id="s", ranks=[1, 3]))
    before = store.counts()
    conv = [{"role": "user", "content": "Pick one."}]
    rows = [
        ImportedRanking(conv, ["yes", "no"], [1, 2], "good"),
        ImportedRanking(conv, ["maybe", "never"], [1, 3], "bad", line=7),
    ]
    with pytest.raises(InputFileError) as refused:
        import_rankings(store, rows, tmp_path / "in.jsonl")
    assert f"line 7: {submitted.value}" in str(refused.value) and "nothing was imported" in str(refused.value)
    assert store.counts() == before


def test_an_import_is_one_transaction(store: Store, tmp_path: Path, monkeypatch) -> None:
    """A failure while storing the rankings (after prompts, samples and tasks were written) leaves none
    of them."""
    f = tmp_path / "hh.jsonl"
    f.write_text(json.dumps({"chosen": hh("Hi", "Hello!"), "rejected": hh("Hi", "Go away.")}) + "\n")

    def broken(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(exchange, "record_rankings", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        import_hh(store, f)
    c = store.counts()
    assert (c["prompts"], c["samples"], c["tasks"], c["rankings"]) == (0, 0, 0, 0)
    monkeypatch.undo()
    assert added(import_hh(store, f)) == (1, 0)
