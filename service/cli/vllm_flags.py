"""The vLLM server flags every command that starts servers takes (sample, evaluate, demo, loop), made
from the settings' `VLLMOptions`, and how they reach a job: flags override the settings, and a job
given them carries the whole options."""

from __future__ import annotations

import argparse
from typing import Any

from service.cli.flags import Opt, add_model_flags, flag_values
from service.core.settings import Settings, VLLMOptions

FIELDS = ("dtype", "max_model_len", "enforce_eager", "kv_cache_gib")


def add_vllm_flags(p: argparse.ArgumentParser) -> None:
    add_model_flags(
        p.add_argument_group("vLLM server"),
        VLLMOptions,
        only=FIELDS,
        opts={"enforce_eager": Opt(flag="--eager")},
        overrides=True,
        record=p,
    )


def vllm_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Settings overrides from the flags given (none: an empty dict)."""
    return flag_values(args, VLLMOptions)


def job_vllm(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    """`{"vllm": options}` for a job's config when flags were given, else nothing (the service's own)."""
    return {"vllm": settings.vllm.model_dump()} if vllm_overrides(args) else {}
