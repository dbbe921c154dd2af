"""Serving throughput and latency: streaming clients through the gateway vs straight to vLLM.

Builds the bench-size model (briefly trained), starts one vLLM server with a key,
starts `rankloop serve` and deploys that server as the route `current` (`--endpoint`), so both
ways reach the very same engine. At 1, 8 and 32 concurrent streaming clients (the `openai`
client, `stream=True`, max_tokens tokens each: `ignore_eos`), each way in turn: completion tokens/s and
time-to-first-token p50/p99. The ratio to the direct way, measured in the same run, is the
gateway's cost.

    python bench/serve.py [--requests 96] [--tokens 64] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from pathlib import Path
from statistics import quantiles

import httpx
import openai

# bench/ holds scripts named like the packages (policy.py, reward.py): the repository comes first instead.
sys.path[0] = str(Path(__file__).resolve().parent.parent)
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))
from servicectl import admin_headers, running_service  # noqa: E402

from service.core.registry import register_model  # noqa: E402
from service.core.settings import VLLMOptions  # noqa: E402
from service.core.store import Store  # noqa: E402
from service.loop.engine import start_server  # noqa: E402

LEVELS = (1, 8, 32)
QUESTION = [{"role": "user", "content": "Tell me about the weather in the mountains."}]


async def one(client: openai.AsyncOpenAI, model: str, tokens: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    first, done = None, 0
    stream = await client.chat.completions.create(model=model, messages=QUESTION, max_tokens=tokens, stream=True,
                                                  stream_options={"include_usage": True}, temperature=1.0,
                                                  # every request the same length: both ways do equal work
                                                  extra_body={"ignore_eos": True})
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - t0
        if chunk.usage:
            done = chunk.usage.completion_tokens
    return first if first is not None else time.perf_counter() - t0, done


async def level(base_url: str, key: str, model: str, clients: int, requests: int, tokens: int) -> dict:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=600,
                                http_client=openai.DefaultAsyncHttpxClient(limits=httpx.Limits(max_connections=64)))
    queue = list(range(requests))
    ttfts, total = [], 0

    async def worker() -> None:
        nonlocal total
        while queue:
            queue.pop()
            ttft, n = await one(client, model, tokens)
            ttfts.append(ttft)
            total += n

    await one(client, model, 4)  # warm the connection
    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(clients)])
    wall = time.perf_counter() - t0
    await client.close()
    return {"clients": clients, "requests": requests, "tokens": total, "seconds": wall, "tokens_per_s": total / wall,
            **ttft_quantiles(ttfts), "ttfts": ttfts}


def ttft_quantiles(ttfts: list[float]) -> dict:
    q = quantiles(ttfts, n=100) if len(ttfts) > 1 else [ttfts[0]] * 99
    return {"ttft_p50_ms": q[49] * 1000, "ttft_p99_ms": q[98] * 1000}


def combine(runs: list[dict]) -> dict:
    """Throughput of the best run; time to first token over every request of every run (the VM's noise
    moves a single run's median by +-15 ms, more than the gateway's cost)."""
    best = max(runs, key=lambda r: r["tokens_per_s"])
    ttfts = [t for r in runs for t in r["ttfts"]]
    return {**{k: v for k, v in best.items() if k != "ttfts"}, **ttft_quantiles(ttfts), "ttft_samples": len(ttfts)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=96, help="streaming requests per level and way (at least "
                    "the number of clients)")
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens per request")
    ap.add_argument("--size", default="bench", choices=["tiny", "small", "bench"])
    ap.add_argument("--repeat", type=int, default=3, help="runs of each way per level: the best throughput "
                    "counts, and TTFT over all of them")
    ap.add_argument("--pretrain-steps", type=int, default=60, help="pretraining steps for the model (default 60)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--work", type=Path, default=None, help="where the model, logs and data go (removed after)")
    args = ap.parse_args()

    from policy.pretrain import PretrainConfig
    from policy.pretrain import main as build

    results = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        # Briefly trained: an untrained model's tokens often do not decode to text until several arrive,
        # which would hide the first token's time.
        model_dir = build(PretrainConfig(output_dir=work / "model", size=args.size, steps=args.pretrain_steps))
        vllm_key = secrets.token_urlsafe(16)
        server = start_server(model_dir, VLLMOptions(dtype="float32"), work / "logs", served_name="bench",
                              api_key=vllm_key)
        try:
            data = work / "data"
            with Store.open(data / "rankloop.duckdb") as store:
                model_id = register_model(store, "policy", model_dir, name="bench", status="active")
            with running_service(data) as url:
                admin = admin_headers(data)
                key = httpx.post(f"{url}/admin/keys", headers=admin, json={"name": "bench"}).json()["key"]
                r = httpx.post(f"{url}/admin/deploy", headers=admin, timeout=600, json={
                    "model_id": model_id, "endpoint": f"http://127.0.0.1:{server.port}", "endpoint_key": vllm_key})
                r.raise_for_status()
                for clients in LEVELS:
                    n = max(args.requests, clients)
                    runs: dict[str, list[dict]] = {"direct": [], "gateway": []}
                    for _ in range(args.repeat):  # interleaved, so drift on this noisy VM hits both ways
                        runs["direct"].append(asyncio.run(level(server.base_url, vllm_key, "bench", clients, n,
                                                                args.tokens)))
                        runs["gateway"].append(asyncio.run(level(f"{url}/v1", key, "current", clients, n,
                                                                 args.tokens)))
                    direct, gateway = combine(runs["direct"]), combine(runs["gateway"])
                    results.append({"clients": clients, "direct": direct, "gateway": gateway,
                                    "throughput_ratio": gateway["tokens_per_s"] / direct["tokens_per_s"],
                                    "ttft_p50_added_ms": gateway["ttft_p50_ms"] - direct["ttft_p50_ms"]})
        finally:
            server.stop()
    print(f"{'clients':>7} {'way':>8} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p99':>9}")
    for row in results:
        for way in ("direct", "gateway"):
            r = row[way]
            print(f"{row['clients']:7d} {way:>8} {r['tokens_per_s']:9.1f} {r['ttft_p50_ms']:7.1f}ms "
                  f"{r['ttft_p99_ms']:7.1f}ms")
        print(f"{'':7} gateway/direct throughput {row['throughput_ratio']:.3f}x, TTFT p50 "
              f"{row['ttft_p50_added_ms']:+.1f} ms")
    if args.json:
        args.json.write_text(json.dumps({"levels": results, "args": {k: str(v) for k, v in vars(args).items()}},
                                        indent=2))


if __name__ == "__main__":
    main()
