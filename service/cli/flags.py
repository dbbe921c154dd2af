"""Command-line flags generated from the pydantic parameter models.

A `rankloop` command's flags come from the model of what it runs: a row of the command table
(service/control/commands.py), a job's config, the settings. `add_model_flags(parser, Model)` adds
one flag per field, `--field-name`, with the field's description as help (and its default),
choices from a `Literal` or an enum, `--x`/`--no-x` for a bool that is on by default, a repeatable
flag for a list, and a required flag for a required field. `Opt` says what the field alone cannot
(a positional, another flag name, a metavar, narrower choices); `skip` names the fields a command
does not take from flags, and why. `flag_values(args, Model)` reads back what was given, as the
model's fields, ready for `client.call(...)` or a job's config.
"""

from __future__ import annotations

import argparse
import enum
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import AnyUrl, BaseModel
from pydantic.fields import FieldInfo

BOUND = "_flag_models"  # the parser default that records which models a command's flags came from

# Parsed by pydantic from the text as given: the flag passes the text on.
_TEXT_TYPES: tuple[type, ...] = (datetime, date, AnyUrl)


@dataclass(frozen=True)
class Opt:
    """How one field appears on the command line, where its name and type alone do not say it."""

    flag: str | None = None  # the flag when it is not --field-name (`--model` for the field `models`)
    positional: bool = False  # an argument, not a flag (the field must be required)
    metavar: str | None = None
    choices: Sequence[str] | None = None  # narrower than the field's type allows
    type: Callable[[str], Any] | None = None  # how the text is read, instead of the field's type
    repeat: bool | None = None  # given once per value (default: when the field is a list)
    negative: str | None = None  # a bool's off flag (default --no-x)
    convert: Callable[[Any], Any] | None = None  # turns what was given into the field's value


POSITIONAL = Opt(positional=True)


@dataclass(frozen=True)
class Bound:
    """The flags a command took from one model: a record for `flag_values` and the tests."""

    model: type[BaseModel]
    fields: tuple[str, ...]  # fields with a flag or positional argument (its dest is the field's name)
    skip: Mapping[str, str]  # fields with no generated flag, each with why
    op: str | None = None  # the command-table operation the model is the parameters of
    convert: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)


class Switch(argparse.Action):
    """An on/off pair: `--x` sets True, its negative flag (default `--no-x`) False."""

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        negative: str,
        default: bool | None = None,
        help: str | None = None,
    ) -> None:
        super().__init__([*option_strings, negative], dest, nargs=0, default=default, help=help)
        self.negative = negative

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, option_string != self.negative)

    def format_usage(self) -> str:
        return " | ".join(self.option_strings)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the type a value has, whether the field is a list of them), `X | None` read as X."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"{annotation}: a union has no one flag type")
        annotation = args[0]
    if typing.get_origin(annotation) is list:
        return typing.get_args(annotation)[0], True
    return annotation, False


def _text_type(typ: Any, where: str) -> tuple[Callable[[str], Any] | None, list[Any] | None]:
    """argparse's type and choices for one value of `typ` (None as type: the text itself)."""
    if typing.get_origin(typ) is typing.Literal:
        values = typing.get_args(typ)
        kinds = {type(v) for v in values}
        if kinds == {str}:
            return None, list(values)
        if len(kinds) == 1 and kinds <= {int, float}:
            return kinds.pop(), list(values)
        raise TypeError(f"{where}: no flag form for {typ}")
    if isinstance(typ, type) and issubclass(typ, enum.Enum):
        return None, [str(m.value) for m in typ]
    if typ is str:
        return None, None
    if typ in (int, float, Path):
        return typing.cast(Callable[[str], Any], typ), None
    if isinstance(typ, type) and issubclass(typ, _TEXT_TYPES):
        return None, None
    raise TypeError(f"{where}: no flag form for {typ}; skip it or give Opt(type=...)")


def _shown(value: Any) -> str | None:
    """A default as the help shows it, or None when there is nothing to say."""
    if value is None or value == [] or value == {}:
        return None
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, enum.Enum):
        return str(value.value)
    return str(value)


def _help(info: FieldInfo, default: Any, repeat: bool = False) -> str | None:
    """The field's description, with its default (or that the flag repeats) where it does not say."""
    if info.description is None:
        return None  # tests/service/cli/test_flags.py asks every model for its descriptions
    text, shown = info.description, _shown(default)
    if repeat and "repeat" not in text:
        text += " (repeat)"
    elif not repeat and shown is not None and "default" not in text:
        text += f" (default {shown})"
    return text.replace("%", "%%")  # argparse formats help with %


def _model_default(info: FieldInfo) -> Any:
    if info.is_required():
        return None
    return info.get_default(call_default_factory=True)


def add_model_flags(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    model: type[BaseModel],
    *,
    opts: Mapping[str, Opt] | None = None,
    skip: Mapping[str, str] | None = None,
    only: Sequence[str] | None = None,
    overrides: bool = False,
    op: str | None = None,
    record: argparse.ArgumentParser | None = None,
) -> Bound:
    """One flag (or positional) per field of `model`, in order; returns what it added.

    `only`: just these fields (a few of a job's config); otherwise every field not in `skip`.
    `overrides`: the flags override values from elsewhere (a YAML file, the settings), so each
    defaults to None and a flag not given changes nothing; otherwise flags default to the model's
    defaults and a required field is a required flag. `record`: the parser to record the model on
    when `parser` is an argument group.
    """
    opts, skip = opts or {}, skip or {}
    names = list(only) if only is not None else [n for n in model.model_fields if n not in skip]
    unknown = (set(names) | set(opts) | set(skip)) - set(model.model_fields)
    if unknown:
        raise ValueError(f"{model.__name__} has no field {', '.join(sorted(unknown))}")
    target = record if record is not None else parser
    if not isinstance(target, argparse.ArgumentParser):
        raise TypeError("an argument group needs record=its parser")
    taken = {a.dest for a in target._actions}
    convert: dict[str, Callable[[Any], Any]] = {}
    for name in names:
        info, opt = model.model_fields[name], opts.get(name, Opt())
        if name in taken:
            raise ValueError(f"{model.__name__}.{name}: the parser already has a {name!r} argument")
        _add(parser, name, info, opt, overrides, f"{model.__name__}.{name}")
        if opt.convert is not None:
            convert[name] = opt.convert
    bound = Bound(model, tuple(names), dict(skip), op, convert)
    target.set_defaults(**{BOUND: (*(target.get_default(BOUND) or ()), bound)})
    return bound


def _add(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    name: str,
    info: FieldInfo,
    opt: Opt,
    overrides: bool,
    where: str,
) -> None:
    typ, is_list = _unwrap(info.annotation)
    default = _model_default(info)
    repeat = is_list if opt.repeat is None else opt.repeat
    kw: dict[str, Any] = {"help": _help(info, default, repeat)}
    if opt.metavar is not None:
        kw["metavar"] = opt.metavar
    if opt.positional:
        if not info.is_required():
            raise ValueError(f"{where}: only a required field can be positional")
        conv, choices = (opt.type, None) if opt.type is not None else _text_type(typ, where)
        parser.add_argument(name, **kw, **_typed(conv, opt.choices or choices))
        return
    flag = opt.flag or "--" + name.replace("_", "-")
    if typ is bool and opt.type is None and not is_list:
        if default is False and not overrides and opt.negative is None:
            kw["help"] = _help(info, None)  # off unless given: no default to show
            parser.add_argument(flag, dest=name, action="store_true", **kw)
        else:
            negative = opt.negative or "--no-" + flag.removeprefix("--")
            start = None if overrides else default
            parser.add_argument(flag, dest=name, action=Switch, negative=negative, default=start, **kw)
        return
    conv, choices = (opt.type, None) if opt.type is not None else _text_type(typ, where)
    # An append default would be appended to: a repeated flag starts empty and the model fills in.
    kw |= {"action": "append", "default": None} if repeat else {"default": None if overrides else default}
    if info.is_required() and not overrides:
        kw["required"] = True
    parser.add_argument(flag, dest=name, **kw, **_typed(conv, opt.choices or choices))


def _typed(conv: Callable[[str], Any] | None, choices: Sequence[Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if conv is not None:
        out["type"] = conv
    if choices is not None:
        out["choices"] = list(choices)
    return out


def flag_values(args: argparse.Namespace, model: type[BaseModel]) -> dict[str, Any]:
    """The fields of `model` given on the command line (or defaulted by a flag), converted; a field
    whose flag is unset (None) is left out, so the model's default or the file's value applies."""
    for bound in getattr(args, BOUND, ()):
        if bound.model is model:
            out = {}
            for name in bound.fields:
                value = getattr(args, name, None)
                if value is not None:
                    out[name] = bound.convert[name](value) if name in bound.convert else value
            return out
    return {}


def bound_models(parser: argparse.ArgumentParser) -> tuple[Bound, ...]:
    """What `add_model_flags` recorded on a command's parser."""
    return tuple(parser.get_default(BOUND) or ())
