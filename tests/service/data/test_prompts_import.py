"""Prompt and system-prompt import through `rankloop`, including every bad input."""

import json
from pathlib import Path

import pytest

from annotator.accounts import add_annotator
from service.cli.main import main
from service.core.store import Store


@pytest.fixture
def data(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    assert main(["--data", str(d), "init"]) == 0
    return d


def rows(data: Path, table: str) -> list[dict]:
    with Store.open(data / "rankloop.duckdb") as s:
        return s.query(f"SELECT * FROM {table} ORDER BY id")


def run(data: Path, *argv: str) -> int:
    return main(["--data", str(data), *argv])


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_jsonl_csv_and_text(data: Path, tmp_path: Path, capsys) -> None:
    assert (
        run(
            data,
            "prompts",
            "add",
            str(write(tmp_path, "a.jsonl", '{"prompt": "one"}\n\n{"prompt": " two "}\n')),
        )
        == 0
    )
    assert (
        run(
            data,
            "prompts",
            "add",
            str(write(tmp_path, "b.csv", 'id,prompt\n1,three\n2,"four, with comma"\n')),
        )
        == 0
    )
    assert run(data, "prompts", "add", str(write(tmp_path, "c.txt", "five\n\nsix\none\n"))) == 0
    stored = rows(data, "prompts")
    assert [r["text"] for r in stored] == ["one", "two", "three", "four, with comma", "five", "six"]
    assert {r["source_ref"] for r in stored} == {str(tmp_path / n) for n in ("a.jsonl", "b.csv", "c.txt")}
    assert "1 already stored, skipped" in capsys.readouterr().out


@pytest.mark.parametrize(
    "name, text, expected",
    [
        (
            "bad.jsonl",
            '{"prompt": "ok"}\nnot json\n{"text": "x"}\n{"prompt": ""}\n{"prompt": 3}\n',
            [
                "line 2: not valid JSON",
                'line 3: expected an object with a "prompt" or a "messages" field',
                "line 4: prompt is empty",
                "line 5: prompt must be a string",
            ],
        ),
        (
            "conv.jsonl",
            '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}\n{"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}, {"role": "user", "content": "x"}]}\n{"messages": [{"role": "user", "content": "  "}]}\n{"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}\n{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "b"}]}\n{"messages": []}\n',
            [
                "line 1: messages: the conversation must end with a user turn",
                "line 2: messages[1]: unknown role 'bot'; valid: user, assistant",
                "line 3: messages[0]: content must be non-empty text",
                "line 4: messages[1]: role 'user' out of turn",
                "line 5: messages[0]: a system turn is not part of a prompt",
                "line 6: messages: expected a non-empty list",
            ],
        ),
        ("bad.csv", 'prompt\nok\n""\n', ["line 3: prompt is empty"]),
        ("nocol.csv", "text\nhello\n", ['needs a header row with a "prompt" column', "['text']"]),
        ("empty.jsonl", "\n\n", ["holds no prompts"]),
        ("empty.txt", "", ["holds no prompts"]),
        ("latin1.txt", b"caf\xe9\n", ["not UTF-8"]),
        ("long.txt", "x" * 40_000 + "\n", ["line 1: prompt has 40000 characters, at most 32000"]),
    ],
)
def test_bad_prompt_files_are_rejected_whole(
    data: Path, tmp_path: Path, capsys, name, text, expected
) -> None:
    assert run(data, "prompts", "add", str(write(tmp_path, name, text))) == 2
    err = capsys.readouterr().err
    for piece in expected:
        assert piece in err
    assert rows(data, "prompts") == []


def test_missing_prompt_file(data: Path, capsys) -> None:
    assert run(data, "prompts", "add", "/no/such.jsonl") == 2
    assert "no such file" in capsys.readouterr().err


def test_system_prompts_are_versioned_never_overwritten(data: Path, tmp_path: Path, capsys) -> None:
    v1 = write(tmp_path, "sp.yaml", "brief: Be brief.\nkind: Be kind.\n")
    assert run(data, "system-prompts", "add", str(v1)) == 0
    assert run(data, "system-prompts", "add", str(v1)) == 0
    v2 = write(tmp_path, "sp2.yaml", "brief: Be very brief.\n")
    assert run(data, "system-prompts", "add", str(v2)) == 0
    out = capsys.readouterr().out
    assert "unchanged" in out and "new version" in out
    stored = [(r["name"], r["version"], r["text"]) for r in rows(data, "system_prompts")]
    assert stored == [("brief", 1, "Be brief."), ("kind", 1, "Be kind."), ("brief", 2, "Be very brief.")]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("- a\n- b\n", "expected a non-empty YAML mapping"),
        ("", "expected a non-empty YAML mapping"),
        ("good: fine\nbad name: x\n", "'bad name': a name is"),
        ("empty: ''\n", "'empty': text must be a non-empty string"),
        ("listy: [1, 2]\n", "'listy': text must be a non-empty string"),
        ("none: anything\n", "'none': reserved"),
        ("a: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_system_prompt_files(data: Path, tmp_path: Path, capsys, text: str, expected: str) -> None:
    assert run(data, "system-prompts", "add", str(write(tmp_path, "sp.yaml", text))) == 2
    assert expected in capsys.readouterr().err
    assert rows(data, "system_prompts") == []


def test_conversations_in_a_prompt_file(data: Path, tmp_path: Path, capsys) -> None:
    three = [
        {"role": "user", "content": "I want a pet."},
        {"role": "assistant", "content": "Cat or dog?"},
        {"role": "user", "content": "Tell me about cats."},
    ]
    lines = [
        {"messages": three},
        {"messages": three},  # the same conversation twice: stored once
        {"messages": [{"role": "user", "content": "Tell me about cats."}]},  # a one-message conversation
        {"prompt": "Tell me about cats."},
    ]  # ... is the plain prompt: the same, so skipped
    f = write(tmp_path, "conv.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    assert run(data, "prompts", "add", str(f)) == 0
    assert "added 2 prompts" in capsys.readouterr().out
    stored = rows(data, "prompts")
    assert [json.loads(r["messages"]) for r in stored] == [three, three[-1:]]
    assert (
        stored[1]["text"] == "Tell me about cats."
    )  # a plain prompt's key is its text, as before conversations


def test_migration_makes_existing_prompts_one_message_conversations(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    with Store.open(db, target_version=5) as store:  # a database of the previous version
        with store.write() as cur:
            cur.execute(
                "INSERT INTO prompts (text, source) VALUES ('Describe bread.', 'seed'), ('Hi', 'seed')"
            )
            cur.execute(
                "INSERT INTO annotators (name, role, profile) VALUES ('sim-1', 'simulated', '{\"noise\": 0.3}')"
            )
        before = store.query("SELECT id, text FROM prompts ORDER BY id")
        sims = store.query("SELECT id, name, role, profile, created_at FROM annotators")
    with Store.open(db) as store:  # migrates to the latest version
        after = store.query("SELECT id, text, messages FROM prompts ORDER BY id")
        assert store.schema_version() >= 7
        # The annotators table was rebuilt for the judge role: rows, ids and the id sequence kept.
        assert store.query("SELECT id, name, role, profile, created_at FROM annotators") == sims
        judge = add_annotator(store, "judge-1", "judge")
        assert judge > sims[0]["id"]
    assert [(r["id"], r["text"]) for r in after] == [(r["id"], r["text"]) for r in before]
    assert [json.loads(r["messages"]) for r in after] == [
        [{"role": "user", "content": "Describe bread."}],
        [{"role": "user", "content": "Hi"}],
    ]
