"""Pydantic configs from a YAML file plus command-line flags, with field-level errors.

Every trainer and command config is one pydantic model. This module turns such a
model into argparse flags (one per scalar field, named after it), reads a YAML file,
lets flags override file values, and reports validation errors per field. It is pure:
no database, no heavy imports, so trainers may use it.
"""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


class ConfigError(ValueError):
    """A config file or flag value that does not validate; the message names each field."""


def _scalar_type(annotation: Any) -> type | None:
    """The argparse type for a field, or None when it is not a plain scalar."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is typing.Literal:
        return str
    return annotation if annotation in (str, int, float, bool, Path) else None


def add_model_flags(parser: argparse.ArgumentParser, model: type[BaseModel]) -> None:
    """One `--field-name` flag per scalar field, defaulting to None (= keep file/default)."""
    for name, field in model.model_fields.items():
        typ = _scalar_type(field.annotation)
        if typ is None:
            continue
        flag = "--" + name.replace("_", "-")
        if typ is bool:
            parser.add_argument(
                flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=field.description
            )
        else:
            choices = (
                typing.get_args(field.annotation)
                if typing.get_origin(field.annotation) is typing.Literal
                else None
            )
            parser.add_argument(
                flag, dest=name, type=typ, default=None, choices=choices, help=field.description
            )


def format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config ({source}):"]
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {where}: {e['msg']}")
    return "\n".join(lines)


def read_yaml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of field: value, not {type(data).__name__}")
    return data


def validate(model: type[M], data: dict[str, Any], source: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_errors(e, source)) from None


def build(model: type[M], file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> M:
    """Validate file values updated by non-None overrides; raise ConfigError naming each bad field."""
    data = read_yaml(file) if file else {}
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return validate(model, data, str(file) if file else "flags")


def parse_cli(model: type[M], argv: list[str] | None, description: str | None = None) -> M:
    """`python -m pkg.train --config FILE --some-field X`: the standard trainer entry point."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", help="YAML file with the config's fields; flags override it")
    add_model_flags(ap, model)
    ns = vars(ap.parse_args(argv))
    file = ns.pop("config")
    try:
        return build(model, file, ns)
    except ConfigError as e:
        ap.exit(2, f"{e}\n")
