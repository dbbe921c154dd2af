"""The vLLM server flags every command that starts servers takes (sample, evaluate, demo), and how
they reach a job: flags override the settings, and a job given them carries the whole options."""

from __future__ import annotations

import argparse

from service.core.settings import Settings

FLAGS = {
    "dtype": "dtype",
    "max_model_len": "max_model_len",
    "eager": "enforce_eager",
    "kv_cache_gib": "kv_cache_gib",
}


def add_vllm_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("vLLM server")
    g.add_argument("--dtype", default=None, help="weight dtype (auto, float32, bfloat16, float16)")
    g.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    g.add_argument(
        "--eager",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="skip torch.compile (faster start; default on)",
    )
    g.add_argument("--kv-cache-gib", type=float, default=None, help="KV-cache size in GiB")


def vllm_overrides(args: argparse.Namespace) -> dict:
    """Settings overrides from the flags given (none: an empty dict)."""
    return {
        field: getattr(args, flag) for flag, field in FLAGS.items() if getattr(args, flag, None) is not None
    }


def job_vllm(args: argparse.Namespace, settings: Settings) -> dict:
    """`{"vllm": options}` for a job's config when flags were given, else nothing (the service's own)."""
    return {"vllm": settings.vllm.model_dump()} if vllm_overrides(args) else {}
