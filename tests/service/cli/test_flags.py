"""Every `rankloop` command's flags come from its parameter model (service/cli/flags.py): each field of
the command-table row it runs is a flag or an argument with the field's description as help, the few
hand-written flags are CLI behaviour, and bad values exit 2 naming the flag and what is valid."""

from __future__ import annotations

import argparse
import enum
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from service.cli.flags import Opt, add_model_flags, bound_models, flag_values
from service.cli.main import build_parser, main
from service.cli.tree import op_params
from service.control.commands import COMMANDS
from service.core.enums import HUMAN_ROLES, ModelKind
from service.core.errors import UserError
from service.data.snapshots import SnapshotFilters
from service.jobs.policy_job import CONFIGS

# What a model cannot say: the command's own behaviour, not a parameter of what it runs.
HAND_WRITTEN = {
    ("status", "json"),  # output format
    ("annotators add", "password_stdin"),  # where the password comes from
    ("deploy", "model"),  # MODEL_ID or the word `promote`
    ("train reward", "job_config"),  # a YAML file of the job's config
    ("train policy", "job_config"),
    ("evaluate policy", "job_config"),
    ("train policy", "method"),  # which job kind, so which config class
    ("train policy", "evaluate"),  # then run `evaluate policy`
    ("restore", "backup"),  # the backup's folder: restore runs here, never through a service
    ("dashboard", "csv"),  # output format
    ("jobs follow", "log"),  # also print the trainer's log while following
    # A gateway replica runs in its own process against a service, not through the command table.
    *(
        ("gateway", f)
        for f in ("control", "host", "port", "spool", "control_key_file", "log_format", "metrics_public")
    ),
}
# Commands that run no single command-table row (jobs started with a config, loops, processes).
NOT_ONE_ROW = {
    "init",
    "serve",
    "annotate-sim",
    "judge",
    "train reward",
    "train policy",
    "evaluate policy",
    "demo",
    "loop",
    "restore",
    "gateway",
}
GLOBAL = {"help", "data", "config"}


def leaves(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from leaves(sub, (*path, name))
            return
    yield " ".join(path), parser


COMMAND_PARSERS = dict(leaves(build_parser()))


def actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions if a.dest not in GLOBAL}


def test_every_row_parameter_is_a_flag_or_an_argument_with_its_description() -> None:
    bound_rows = 0
    for command, parser in COMMAND_PARSERS.items():
        by_dest = actions(parser)
        for bound in bound_models(parser):
            fields = bound.model.model_fields
            if bound.op is not None:
                bound_rows += 1
                assert bound.model is COMMANDS[bound.op].params, command
                missing = set(fields) - set(bound.fields) - set(bound.skip)
                assert not missing, f"{command}: {sorted(missing)} of {bound.op} have no flag"
                assert all(bound.skip.values()), f"{command}: say why a field has no flag"
            for name in bound.fields:
                action, info = by_dest[name], fields[name]
                assert info.description, f"{bound.model.__name__}.{name} needs Field(description=...)"
                assert action.help is not None and action.help.replace("%%", "%").startswith(info.description)
                if info.is_required() and not action.option_strings:
                    assert action.nargs is None  # a positional: exactly one
                elif info.is_required() and bound.op is not None:
                    assert action.required, f"{command} {action.option_strings}"
    assert bound_rows >= 30


def test_the_only_hand_written_flags_are_cli_behaviour() -> None:
    for command, parser in COMMAND_PARSERS.items():
        generated = {f for bound in bound_models(parser) for f in bound.fields}
        for dest in actions(parser):
            assert dest in generated or (command, dest) in HAND_WRITTEN, f"{command}: {dest} is hand-written"
        row = [b.op for b in bound_models(parser) if b.op is not None]
        assert bool(row) == (command not in NOT_ONE_ROW), command


@pytest.mark.parametrize("command", ["", *COMMAND_PARSERS])
def test_every_help_prints(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main([*command.split(), "--help"])
    assert e.value.code == 0
    assert "usage: rankloop" in capsys.readouterr().out


@pytest.mark.parametrize(
    "command, shown",
    [
        ("sample", ["--model DIR", "--k K", "samples per prompt and system prompt, 1..16 (default 4)"]),
        (
            "sample",
            ["--max-tokens MAX_TOKENS", "most tokens per response (default 64)", "--eager, --no-eager"],
        ),
        ("keys create", ["--scope {client,admin}", "--rpm RPM", "requests per minute (default: no limit)"]),
        ("snapshot", ["--include-traffic, --exclude-traffic", "--exclude-annotator NAME", "(repeat)"]),
        ("deploy", ["MODEL_ID|promote", "--canary PCT", "send this percent of traffic to it"]),
        (
            "evaluate policy",
            ["--against ID", "--judge {reward,hidden,gold}", "--gate, --no-gate", "(default on)"],
        ),
        ("models list", ["--kind {pretrained,sft,reward,policy,external}", "only this kind"]),
    ],
)
def test_help_shows_the_model_fields(
    command: str, shown: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        main([*command.split(), "--help"])
    out = " ".join(capsys.readouterr().out.split())  # as one line: help wraps
    for text in shown:
        assert text in out


def test_choices_come_from_the_models_and_enums() -> None:
    def choices(command: str, dest: str) -> list[str]:
        return list(actions(COMMAND_PARSERS[command])[dest].choices or [])

    assert choices("models list", "kind") == [k.value for k in ModelKind]
    assert choices("annotators add", "role") == [r.value for r in HUMAN_ROLES]
    assert choices("train policy", "method") == list(CONFIGS)
    assert choices("prompts add", "source") == ["seed", "import"]
    assert choices("loop", "method") == choices("demo", "method") == ["dpo", "grpo", "rloo"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["keys", "create", "app", "--scope", "root"],
            "argument --scope: invalid choice: 'root' (choose from 'client', 'admin')",
        ),
        (
            ["export", "--format", "csv", "--out", "x"],
            "argument --format: invalid choice: 'csv' (choose from 'trl', 'hh', 'jsonl')",
        ),
        (["models", "list", "--kind", "big"], "argument --kind: invalid choice: 'big'"),
        (
            ["loop", "--annotators", "crowd"],
            "argument --annotators: invalid choice: 'crowd' (choose from 'simulated', 'people')",
        ),
        (["deploy", "7", "--replicas", "two"], "argument --replicas: invalid int value: 'two'"),
        (["sample", "--k", "4"], "the following arguments are required: --model"),
        (["export", "--out", "x"], "the following arguments are required: --format"),
    ],
)
def test_a_bad_flag_exits_2_naming_it_and_what_is_valid(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_k_out_of_range_exits_2_naming_the_flag_and_its_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["--data", str(data), "sample", "--model", str(data / "model"), "--k", "99"]) == 2
    assert "--k must be between 1 and 16, got 99" in capsys.readouterr().err


def test_an_evaluation_flag_without_the_evaluation_exits_2_before_any_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    assert main(["--data", str(data), "train", "policy", "--method", "dpo", "--min-prompts", "20"]) == 2
    assert "--samples and --min-prompts are for the evaluation after training: add --evaluate" in (
        capsys.readouterr().err
    )
    assert not data.exists()  # refused before anything was opened


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(list(argv))


def test_flags_read_back_as_the_models_fields() -> None:
    filters = op_params(
        parse("snapshot", "--exclude-traffic", "--exclude-annotator", "a", "--exclude-annotator", "b"),
        "snapshot",
    )
    assert SnapshotFilters.model_validate(filters) == SnapshotFilters(
        exclude_annotators=["a", "b"], include_traffic=False
    )
    assert op_params(parse("snapshot"), "snapshot")["include_traffic"] is True
    assert op_params(parse("deploy", "7", "--system-prompt", "a=2", "--system-prompt", "b"), "deploy") == {
        "replicas": 1,
        "system_prompts": {"a": 2.0, "b": 1.0},
        "force": False,
    }
    with pytest.raises(UserError, match="--system-prompt 'a=x'"):
        op_params(parse("deploy", "7", "--system-prompt", "a=x"), "deploy")
    assert op_params(parse("tasks", "gold", "3", "--ranks", "1,2,2"), "tasks.gold") == {
        "task_id": 3,
        "ranks": [1, 2, 2],
    }
    assert op_params(parse("jobs", "follow", "5"), "jobs.show") == {"job_id": 5}
    # Config overrides: a flag not given is left out, so the job's YAML or the settings keep their value.
    ev = parse("evaluate", "policy", "7", "--no-gate")
    assert {k: v for k, v in vars(ev).items() if k in ("candidate", "gate", "samples")} == {
        "candidate": 7,
        "gate": False,
        "samples": None,
    }


class Color(enum.StrEnum):
    RED = "red"
    BLUE = "blue"


class Example(BaseModel):
    path: Path = Field(description="a required path")
    color: Color = Field(Color.RED, description="an enum")
    size: Literal["s", "m"] = Field("m", description="a literal")
    on: bool = Field(True, description="on by default")
    off: bool = Field(False, description="off by default")
    tags: list[str] = Field(default_factory=list, description="a list")
    limit: int | None = Field(None, description="an optional int")
    share: float = Field(0.5, description="50% of it")
    mapping: dict[str, int] = Field(default_factory=dict, description="no flag form")


def test_the_builder_on_every_kind_of_field() -> None:
    p = argparse.ArgumentParser()
    add_model_flags(p, Example, skip={"mapping": "not a flag"})
    args = p.parse_args(["--path", "x", "--color", "blue", "--no-on", "--off", "--tags", "a", "--tags", "b"])
    assert flag_values(args, Example) == {
        "path": Path("x"),
        "color": "blue",
        "size": "m",
        "on": False,
        "off": True,
        "tags": ["a", "b"],
        "share": 0.5,
    }
    assert Example.model_validate(flag_values(args, Example)).color is Color.BLUE
    text = p.format_help()
    assert "50% of it (default 0.5)" in text and "--on, --no-on" in text and "{red,blue}" in text
    with pytest.raises(SystemExit):
        p.parse_args([])  # --path is required


def test_the_builder_refuses_what_it_cannot_express() -> None:
    with pytest.raises(TypeError, match="mapping"):
        add_model_flags(argparse.ArgumentParser(), Example)  # a dict needs skip or Opt(type=...)
    p = argparse.ArgumentParser()
    p.add_argument("--limit")
    with pytest.raises(ValueError, match="already has a 'limit'"):
        add_model_flags(p, Example, only=("limit",))  # two flags for one dest
    with pytest.raises(ValueError, match="no field nope"):
        add_model_flags(argparse.ArgumentParser(), Example, only=("nope",))
    with pytest.raises(ValueError, match="only a required field"):
        add_model_flags(
            argparse.ArgumentParser(), Example, only=("limit",), opts={"limit": Opt(positional=True)}
        )
