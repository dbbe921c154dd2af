"""How long a vLLM server takes to answer /health, and its tokens/s, with the CPU build's worker in a
process of its own (vLLM's default there: `--distributed-executor-backend mp`) and in the engine core's
process (`uni`, what rankloop starts on one CPU or GPU). Runs alternate, so both see the same machine.

    python -m bench.engine_start [--repeat 2] [--json bench/engine_start.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import openai

from policy.config import PretrainConfig
from policy.pretrain import main as pretrain
from service.core.settings import VLLMOptions
from service.engine.server import start_server

# vLLM's CPU default, named explicitly; and rankloop's default (no flag: `worker_in_engine_core`).
WAYS = {"mp (vLLM's CPU default)": ["--distributed-executor-backend", "mp"], "uni (rankloop's)": []}


async def tokens_per_s(url: str, served: str, requests: int = 32) -> float:
    client = openai.AsyncOpenAI(base_url=url, api_key="bench", max_retries=0)
    t0 = time.perf_counter()
    answers = await asyncio.gather(
        *[
            client.chat.completions.create(
                model=served,
                messages=[{"role": "user", "content": f"Tell me about topic {i}."}],
                n=4,
                max_tokens=64,
                extra_body={"ignore_eos": True},
            )
            for i in range(requests)
        ]
    )
    await client.close()
    return sum(a.usage.completion_tokens for a in answers if a.usage) / (time.perf_counter() - t0)


def measure(model: Path, extra_args: list[str], logs: Path) -> dict:
    opts = VLLMOptions(dtype="float32", max_model_len=256, extra_args=extra_args)
    t0 = time.perf_counter()
    server = start_server(model, opts, logs)
    start_s = time.perf_counter() - t0
    try:
        rate = asyncio.run(tokens_per_s(server.base_url, server.served_name))
    finally:
        server.stop()
    return {"start_s": round(start_s, 1), "tokens_per_s": round(rate)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        model = pretrain(
            PretrainConfig(output_dir=Path(tmp) / "tiny", size="tiny", steps=0, n_transcripts=100)
        )
        runs: dict[str, list[dict]] = {name: [] for name in WAYS}
        for i in range(args.repeat):
            for j, (name, extra_args) in enumerate(WAYS.items()):
                runs[name].append(measure(model, extra_args, Path(tmp) / f"logs-{j}-{i}"))
                print(name, runs[name][-1], flush=True)
    summary = {
        name: {k: statistics.median(r[k] for r in rs) for k in ("start_s", "tokens_per_s")}
        for name, rs in runs.items()
    }
    mp, uni = summary["mp (vLLM's CPU default)"], summary["uni (rankloop's)"]
    result = {
        "machine": f"{os.cpu_count()} cores",
        "model": "tiny chat Llama (policy.pretrain size=tiny), float32, max_model_len 256",
        "runs": runs,
        "median": summary,
        "start_ratio_uni_vs_mp": round(uni["start_s"] / mp["start_s"], 3),
        "tokens_per_s_ratio_uni_vs_mp": round(uni["tokens_per_s"] / mp["tokens_per_s"], 3),
    }
    print(
        json.dumps(
            {k: result[k] for k in ("median", "start_ratio_uni_vs_mp", "tokens_per_s_ratio_uni_vs_mp")}
        )
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
