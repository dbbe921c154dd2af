"""Every command both ways: in-process on one copy of a data directory, and through a running
`rankloop serve` on another copy. Output, errors, exit codes and the database must match.
Also: files over the upload limit, a stale service.json, and a service that stops answering."""

from __future__ import annotations

import io
import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from service.cli.client import RemoteClient
from service.cli.main import main
from service.core.errors import CommandFailed
from service.core.store import Store
from tests.support.seeding import seed_tasks
from tests.support.servicectl import running_service

pytestmark = pytest.mark.slow

HH_ROW = {
    "chosen": "\n\nHuman: Why is the sky blue?\n\nAssistant: Light scatters.",
    "rejected": "\n\nHuman: Why is the sky blue?\n\nAssistant: No idea.",
}


def inputs(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "prompts": folder / "prompts.jsonl",
        "bad_prompts": folder / "bad.jsonl",
        "system": folder / "system.yaml",
        "hh": folder / "hh.jsonl",
        "bad_hh": folder / "bad_hh.jsonl",
        "bad_job": folder / "job.yaml",
    }
    files["prompts"].write_text(
        "".join(json.dumps({"prompt": f"Tell me about topic {i}."}) + "\n" for i in range(5))
    )
    files["bad_prompts"].write_text('{"prompt": "fine"}\n{"prompt": ""}\nnot json\n')
    files["system"].write_text(
        "terse: Answer in one short sentence.\nwarm: Answer in a warm and friendly way.\n"
    )
    files["hh"].write_text(json.dumps(HH_ROW) + "\n")
    files["bad_hh"].write_text(json.dumps({"chosen": "no turns", "rejected": "x"}) + "\n")
    files["bad_job"].write_text("epochs: 0\nmode: triangular\n")
    return files


def commands(files: dict[str, Path], out: Path) -> list[tuple[list[str], str]]:
    """(argv, stdin) in order; each runs against both copies."""
    return [
        (["status"], ""),
        (["prompts", "add", str(files["prompts"])], ""),
        (["prompts", "add", str(files["prompts"])], ""),  # all already stored
        (["prompts", "add", str(files["bad_prompts"])], ""),
        (["prompts", "add", str(out / "missing.jsonl")], ""),
        (["system-prompts", "add", str(files["system"])], ""),
        (["system-prompts", "list"], ""),
        (["annotators", "add", "alice", "--password-stdin"], "alice-password\n"),
        (["annotators", "add", "bob", "--password-stdin"], "short\n"),
        (["annotators", "disable", "nobody"], ""),
        (["annotators", "logout", "nobody"], ""),
        (["annotate-sim", "--annotators", "1", "--unreliable", "1"], ""),  # both rank every task
        (["annotators", "list"], ""),
        (["tasks", "gold", "1", "--ranks", "1,2,3,4"], ""),
        (["tasks", "gold", "999", "--ranks", "1,2"], ""),
        (["leaderboard"], ""),
        (["leaderboard", "--by", "model"], ""),
        (["snapshot", "--eval-fraction", "0.3"], ""),
        (["snapshot", "--eval-fraction", "2"], ""),
        (["export", "--format", "trl", "--out", str(out / "trl.jsonl")], ""),
        (["export", "--format", "jsonl", "--out", str(out)], ""),  # a directory
        (["import", "hh", str(files["hh"])], ""),
        (["import", "hh", str(files["bad_hh"])], ""),
        (["models", "list"], ""),
        (["models", "show", "1"], ""),
        (["models", "show", "999"], ""),
        (["models", "promote", "999", "--reason", "why not"], ""),
        (["train", "reward", "--config", str(files["bad_job"])], ""),
        (["prioritize"], ""),
        (["jobs", "list"], ""),
        (["jobs", "follow", "999"], ""),
        (["jobs", "cancel", "999"], ""),
        (["deploy", "999"], ""),
        (["deploy", "1"], ""),  # a pretrained model that is not approved
        (["rollback"], ""),
        (["keys", "revoke", "nobody"], ""),
        (["quality"], ""),
        (["quality", "--batch", "no such batch"], ""),
        (["rounds"], ""),
        (["loop", "--rounds", "0"], ""),
        (["loop", "--annotators", "people"], ""),  # no --target-rankings
        (["loop"], ""),  # no SFT model or policy to start from
        (["report"], ""),
        (["status"], ""),
    ]


TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:?\d\d|Z)?")


def normalized(text: str, data: Path, out: Path) -> str:
    text = text.replace(str(data), "<DATA>").replace(str(out), "<OUT>")
    return TIMESTAMP.sub("<TIME>", text)


# Columns that differ between two copies whatever path a command took: times, random salts,
# process ids and paths inside each copy.
VOLATILE = {
    "created_at",
    "started_at",
    "finished_at",
    "expires_at",
    "password_hash",
    "pid",
    "log_path",
    "submission_id",
    "time_spent_s",
    "applied_at",
}


# What only a running service writes, by itself: how far its webhook dispatcher has read the events.
SERVICE_ONLY = {"webhook_cursors"}


def dump(db: Path, data: Path) -> dict[str, list]:
    with Store.open(db) as store:
        tables = [
            r["table_name"]
            for r in store.query("SELECT table_name FROM information_schema.tables ORDER BY table_name")
        ]
        out = {}
        for t in (t for t in tables if t not in SERVICE_ONLY):
            # Ranking ids follow the order in which simulated annotators' threads submitted.
            skip = VOLATILE | ({"id"} if t == "rankings" else set())
            rows = [
                {k: normalized(str(v), data, Path("/nowhere")) for k, v in r.items() if k not in skip}
                for r in store.query(f"SELECT * FROM {t}")
            ]
            out[t] = sorted(rows, key=lambda r: json.dumps(r, sort_keys=True))
    return out


def run_all(data: Path, files: dict[str, Path], out: Path, capsys, monkeypatch) -> list[tuple[int, str, str]]:
    results = []
    for argv, stdin in commands(files, out):
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(["--data", str(data), *argv])
        captured = capsys.readouterr()
        results.append((code, normalized(captured.out, data, out), normalized(captured.err, data, out)))
    return results


def test_every_command_gives_the_same_result_in_process_and_through_the_service(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    origin = tmp_path / "origin"
    with Store.open(origin / "rankloop.duckdb") as store:
        seed_tasks(store, n_prompts=6, k=4, styles=("brief", "detailed"), required=2)  # 12 tasks
    local, served = tmp_path / "local", tmp_path / "served"
    for d in (local, served):
        shutil.copytree(origin, d)
    files = inputs(tmp_path / "in")
    out_local, out_served = tmp_path / "out-local", tmp_path / "out-served"
    out_local.mkdir()
    out_served.mkdir()

    in_process = run_all(local, files, out_local, capsys, monkeypatch)
    with running_service(served, env={"RANKLOOP_ANNOTATION__GOLD_RATE": "0.1"}):
        through_service = run_all(served, files, out_served, capsys, monkeypatch)

    argvs = [" ".join(a) for a, _ in commands(files, Path("<OUT>"))]
    for argv, mine, theirs in zip(argvs, in_process, through_service, strict=True):
        assert mine == theirs, (
            f"`rankloop {argv}` differs:\nin-process: {mine}\nthrough the service: {theirs}"
        )
    codes = dict(zip(argvs, (r[0] for r in in_process), strict=True))
    # The commands meant to fail did, with exit 2 and a message naming the problem; the rest worked.
    failing = {
        "prompts add <OUT>/missing.jsonl": "no such file",
        "annotators disable nobody": "no annotator named",
        "annotators logout nobody": "no annotator named",
        "tasks gold 999 --ranks 1,2": "there is no task 999",
        "models show 999": "no model with id 999",
        "jobs follow 999": "there is no job 999",
        "export --format jsonl --out <OUT>": "is a directory",
        "train reward --config": "epochs",
        "prioritize": "no reward model is active",
        "snapshot --eval-fraction 2": "eval_fraction",
    }
    for argv, (code, _, err) in zip(argvs, in_process, strict=True):
        expected = next((m for prefix, m in failing.items() if argv.startswith(prefix)), None)
        if expected:
            assert code == 2 and expected in err, (argv, code, err)
    assert codes["status"] == 0 and codes["annotate-sim --annotators 1 --unreliable 1"] == 0
    assert (out_local / "trl.jsonl").read_text() == (out_served / "trl.jsonl").read_text() != ""
    mine, theirs = dump(local / "rankloop.duckdb", local), dump(served / "rankloop.duckdb", served)
    for table in mine:
        assert mine[table] == theirs[table], f"table {table} differs"


def test_upload_limit_stale_service_file_and_a_service_that_stops_answering(tmp_path: Path, capsys) -> None:
    data = tmp_path / "data"
    big = tmp_path / "big.txt"
    big.write_text("".join(f"prompt number {i} padded {'x' * 60}\n" for i in range(20_000)))  # ~1.6 MB
    with running_service(data, env={"RANKLOOP_MAX_UPLOAD_MIB": "1"}) as url:
        assert main(["--data", str(data), "prompts", "add", str(big)]) == 2
        assert "over the upload limit of 1 MiB" in capsys.readouterr().err
        with pytest.raises(
            CommandFailed
        ) as e:  # a service that stops answering is an exit-1 failure, not a hang
            RemoteClient(url.rsplit(":", 1)[0] + ":9", "key", timeout_s=5).call("status")
        assert e.value.code == 1 and "stopped answering" in str(e.value)
    assert not (data / "uploads").exists() or not any(
        (data / "uploads").iterdir()
    )  # the partial upload is gone
    with Store.open(data / "rankloop.duckdb") as store:
        assert store.counts()["prompts"] == 0
    # A service.json left by a killed service: detected, and the command runs in-process.
    (data / "service.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "pid": 2**22 + 12345}))
    assert main(["--data", str(data), "status"]) == 0
    assert "prompts" in capsys.readouterr().out
