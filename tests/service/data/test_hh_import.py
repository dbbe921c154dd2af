"""HH-RLHF files as real data sets ship them: gzip-compressed, with a few rows that break the format
(an empty turn, one speaker's message cut in two, an empty final answer). The readable rows are
imported, the others skipped with their line and reason; `--strict` rejects the file whole."""

import gzip
import json
import os
from pathlib import Path

import pytest

from service.cli.main import main
from service.core.store import Store
from service.data.hh import parse_hh
from tests.support import REPO

# The workplace's shared data beside the checkout (../shared/data), or where TESTS_SHARED_DATA says.
SHARED = Path(os.environ.get("TESTS_SHARED_DATA") or REPO.parent / "shared" / "data")
REAL = SHARED / "hh-harmless-base-dev.jsonl.gz"


def hh(*turns: tuple[str, str]) -> str:
    return "".join(f"\n\n{who}: {text}" for who, text in turns)


H, A = "Human", "Assistant"
ROWS = [
    {"chosen": hh((H, "Hi"), (A, "Hello!")), "rejected": hh((H, "Hi"), (A, "Go away."))},
    {  # one Assistant message cut in two, on the chosen side only (HH line 1543's shape)
        "chosen": hh((H, "Find a key."), (A, "Here is one:"), (A, "ABC-123.")),
        "rejected": hh((H, "Find a key."), (A, "I cannot.")),
    },
    {  # an empty Human turn inside the conversation, on both sides
        "chosen": hh((H, "Tell me a joke."), (A, "Why?"), (H, ""), (A, "A pun.")),
        "rejected": hh((H, "Tell me a joke."), (A, "Why?"), (H, ""), (A, "No.")),
    },
    {  # the people preferred saying nothing (HH lines 69 and 882): no answer to store
        "chosen": hh((H, "How do I steal a puppy?"), (A, "")),
        "rejected": hh((H, "How do I steal a puppy?"), (A, "Grab it.")),
    },
]


def hh_file(path: Path) -> Path:
    lines = [json.dumps(r) for r in ROWS] + ["{not json"]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def counts(data: Path) -> dict:
    with Store.open(data / "rankloop.duckdb") as store:
        return store.counts()


def test_a_compressed_file_imports_its_readable_rows_and_names_the_rest(tmp_path: Path, capsys) -> None:
    f, data = hh_file(tmp_path / "pairs.jsonl.gz"), tmp_path / "data"
    assert main(["--data", str(data), "import", "hh", str(f)]) == 0
    out = capsys.readouterr().out
    assert f"imported 3 preference pairs from {f}" in out
    assert "2 of them had turns of one speaker in a row joined or empty turns dropped" in out
    assert "skipped 2 lines" in out
    assert "line 4: the chosen transcript is not valid: its last answer is empty" in out
    assert "line 5: not valid JSON" in out
    with Store.open(data / "rankloop.duckdb") as store:
        texts = {r["text"] for r in store.query("SELECT text FROM samples")}
        conversations = [r["messages"] for r in store.query("SELECT messages FROM prompts ORDER BY id")]
    assert "Here is one:\n\nABC-123." in texts  # the message cut in two is one answer again
    # The empty Human turn dropped, the Assistant's two messages around it are one answer.
    assert [m["content"] for m in json.loads(conversations[2])] == ["Tell me a joke."]
    assert "Why?\n\nA pun." in texts
    assert main(["--data", str(data), "import", "hh", str(f)]) == 0  # again: nothing new
    assert "imported 0 preference pairs" in capsys.readouterr().out and counts(data)["rankings"] == 3


def test_strict_rejects_the_file_whole_and_stores_nothing(tmp_path: Path, capsys) -> None:
    f, data = hh_file(tmp_path / "pairs.jsonl.gz"), tmp_path / "data"
    main(["--data", str(data), "init"])
    assert main(["--data", str(data), "import", "hh", "--strict", str(f)]) == 2
    err = capsys.readouterr().err
    assert "rejected, nothing was imported" in err
    assert "line 2: the chosen transcript is not valid: turn 3 is Assistant again" in err
    assert "line 3: the chosen transcript is not valid: turn 3 is empty" in err
    assert (counts(data)["prompts"], counts(data)["rankings"]) == (0, 0)


def test_a_file_with_nothing_readable_or_a_broken_gzip_is_refused(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    main(["--data", str(data), "init"])
    nothing = tmp_path / "nothing.jsonl"
    nothing.write_text(json.dumps(ROWS[3]) + "\n")
    assert main(["--data", str(data), "import", "hh", str(nothing)]) == 2
    assert "its last answer is empty" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"chosen": "x"}\n' * 50)[:40])
    assert main(["--data", str(data), "import", "hh", str(broken)]) == 2
    assert "starts as gzip but does not decompress" in capsys.readouterr().err
    assert counts(data)["prompts"] == 0


def test_joining_and_dropping_keep_what_was_said() -> None:
    parsed = parse_hh(hh((H, "a"), (H, "b"), (A, ""), (A, "x"), (A, "y")))
    assert not isinstance(parsed, str)
    assert parsed.messages == [{"role": "user", "content": "a\n\nb"}] and parsed.answer == "x\n\ny"
    assert parsed.repaired
    plain = parse_hh(hh((H, "a"), (A, "x")))
    assert not isinstance(plain, str) and not plain.repaired
    assert parse_hh(hh((A, "x"), (H, "a"), (A, "y"))) == 'its first message is not a "Human:" turn'


@pytest.mark.skipif(not REAL.exists(), reason=f"the shared HH file is not on this machine ({REAL})")
def test_the_real_hh_file_imports_as_it_ships(tmp_path: Path, capsys) -> None:
    """Anthropic's harmless-base test split (1,816 lines, ../shared/data): everything but the two pairs
    whose preferred answer is empty; the eight rows with a message cut in two are joined."""
    data = tmp_path / "data"
    assert main(["--data", str(data), "import", "hh", str(REAL), "--batch", "hh-harmless"]) == 0
    out = capsys.readouterr().out
    assert "imported 1814 preference pairs" in out and "8 of them had turns" in out
    assert "skipped 2 lines" in out and "line 69:" in out and "line 882:" in out
    c = counts(data)
    assert (c["rankings"], c["samples"]) == (1814, 3628)
    # In the harmlessness batch, they are what a harmlessness reward model learns from, and only that.
    from reward.data import read_snapshot
    from reward.objectives import objective_rows
    from service.core.store import Store
    from service.data.snapshots import SnapshotFilters, create_snapshot

    with Store.open(data / "rankloop.duckdb") as store:
        rows = read_snapshot(create_snapshot(store, data, SnapshotFilters()).path)
    assert {r["batch"] for r in rows} == {"hh-harmless"}
    assert len(objective_rows(rows, "harmlessness")) == 1814 and objective_rows(rows, "helpfulness") == []
