"""How long a vLLM server takes to answer /health, its tokens/s and what it answers, four ways: vLLM's
CPU default (the worker in a process of its own, `--distributed-executor-backend mp`, and processes
spawned), the worker in the engine core's process (`uni`, what rankloop starts on one CPU or GPU) with
the engine core spawned, that with the engine core forked (`vllm.engine_start: fork`; see
service/engine/vllm_main.py), each as a new Python process, and that forked from the warm launcher that
imported vLLM once (rankloop's default, `vllm.warm_start`; service/engine/launcher.py), timed once the
launcher runs (its own first start is reported apart). Runs alternate, so all see the same machine.

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

MP, UNI_SPAWN, UNI_FORK = "mp, spawn (vLLM's CPU default)", "uni, spawn", "uni, fork"
WARM = "uni, fork, from the warm launcher (rankloop's)"
# (extra_args, engine_start, warm_start): no flag is rankloop's `worker_in_engine_core` (uni)
WAYS = {
    MP: (["--distributed-executor-backend", "mp"], "spawn", False),
    UNI_SPAWN: ([], "spawn", False),
    UNI_FORK: ([], "fork", False),
    WARM: ([], "fork", True),
}


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


def greedy_answer(url: str, served: str) -> str:
    client = openai.OpenAI(base_url=url, api_key="bench", max_retries=0)
    answer = client.chat.completions.create(
        model=served,
        messages=[{"role": "user", "content": "Tell me about the sea."}],
        max_tokens=24,
        temperature=0,
        logprobs=True,
        extra_body={"ignore_eos": True},  # 24 tokens even from the untrained model, which ends at once
    )
    # The tokens, not the text: the untrained model's greedy tokens decode to nothing visible.
    tokens = answer.choices[0].logprobs.content if answer.choices[0].logprobs else None
    return "|".join(t.token for t in tokens or [])


def measure(model: Path, way: tuple[list[str], str, bool], logs: Path) -> dict:
    extra_args, engine_start, warm = way
    opts = VLLMOptions(
        dtype="float32",
        max_model_len=256,
        extra_args=extra_args,
        engine_start=engine_start,  # type: ignore[arg-type]
        warm_start=warm,
    )
    t0 = time.perf_counter()
    server = start_server(model, opts, logs)
    start_s = time.perf_counter() - t0
    try:
        answer = greedy_answer(server.base_url, server.served_name)
        rate = asyncio.run(tokens_per_s(server.base_url, server.served_name))
    finally:
        server.stop()
    return {"start_s": round(start_s, 1), "tokens_per_s": round(rate), "greedy_answer": answer}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory() as tmp:
        model = pretrain(
            PretrainConfig(output_dir=Path(tmp) / "tiny", size="tiny", steps=30, n_transcripts=300)
        )
        # A launcher of the bench's own, started by its first warm start (reported apart).
        runtime = Path(tmp) / "run"
        runtime.mkdir(mode=0o700)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        first_warm = measure(model, WAYS[WARM], Path(tmp) / "logs-first-warm")
        print("the launcher's own first start", first_warm, flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in WAYS}
        for i in range(args.repeat):
            for j, (name, way) in enumerate(WAYS.items()):
                runs[name].append(measure(model, way, Path(tmp) / f"logs-{j}-{i}"))
                print(name, runs[name][-1], flush=True)
    summary = {
        name: {k: statistics.median(r[k] for r in rs) for k in ("start_s", "tokens_per_s")}
        for name, rs in runs.items()
    }
    mp, spawn, fork, warm = summary[MP], summary[UNI_SPAWN], summary[UNI_FORK], summary[WARM]
    result = {
        "machine": f"{os.cpu_count()} cores",
        "model": "tiny chat Llama (policy.pretrain size=tiny, 30 steps), float32, max_model_len 256",
        "runs": runs,
        "median": summary,
        "first_warm_start_s": first_warm["start_s"],  # the launcher starting: imports vLLM, then forks
        "start_ratio_uni_spawn_vs_mp": round(spawn["start_s"] / mp["start_s"], 3),
        "start_ratio_uni_fork_vs_mp": round(fork["start_s"] / mp["start_s"], 3),
        "start_ratio_fork_vs_spawn": round(fork["start_s"] / spawn["start_s"], 3),
        "start_ratio_warm_vs_mp": round(warm["start_s"] / mp["start_s"], 3),
        "start_ratio_warm_vs_fork": round(warm["start_s"] / fork["start_s"], 3),
        "tokens_per_s_ratio_uni_fork_vs_mp": round(fork["tokens_per_s"] / mp["tokens_per_s"], 3),
        "tokens_per_s_ratio_warm_vs_mp": round(warm["tokens_per_s"] / mp["tokens_per_s"], 3),
        "tokens_per_s_ratio_fork_vs_spawn": round(fork["tokens_per_s"] / spawn["tokens_per_s"], 3),
        # the same seed and a greedy request: every way must give the same answer
        "same_greedy_answer": len({r["greedy_answer"] for rs in runs.values() for r in rs}) == 1,
    }
    print(json.dumps({k: v for k, v in result.items() if k not in ("runs", "machine", "model")}))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
