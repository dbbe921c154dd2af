"""Serving throughput and latency: streaming clients through the gateway vs straight to vLLM.

Builds the bench-size model (briefly trained), starts one vLLM server with a key,
starts `rankloop serve` and deploys that server as the route `current` (`--endpoint`), so both
ways reach the very same engine. At 1, 8 and 32 concurrent streaming clients (chat completions,
`stream=True`, max_tokens tokens each with `ignore_eos`), each way in turn: completion tokens/s,
time-to-first-token p50/p99, and the CPU time each process spent per 1,000 tokens (the clients,
the gateway, vLLM's HTTP frontend, its engine). The ratio to the direct way, measured in the
same run, is the gateway's cost.

The clients read the event stream raw (aiohttp) and parse only the lines they need: everything
here shares 2 cores, and the `openai` client's per-chunk parsing would take a share of them
that is no part of either way. By default each client sends its next request as soon as its
last one ends (a closed loop); `--think-ms` adds a random pause, as real clients have.

    python -m bench.serve [--requests 96] [--tokens 64] [--repeat 3] [--levels 1 8 32] [--think-ms 0]
                          [--engine-nice N] [--reserved-cores N] [--json out.json]
    python -m bench.serve --upstream stub [--rate 20] ...   # the gateway's own cost: bench/serve_stub.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from statistics import quantiles

import aiohttp
import httpx
import psutil

# bench/ holds scripts named like the packages (policy.py, reward.py): the repository comes first instead.
from service.core.registry import register_model
from service.core.settings import VLLMOptions
from service.core.store import Store
from service.engine.server import start_server
from tests.support.servicectl import admin_headers, running_service

LEVELS = (1, 8, 32)
STUB_LEVELS = (1, 32, 128, 512)  # no engine in the way: the gateway alone, up to many streams
QUESTION = [{"role": "user", "content": "Tell me about the weather in the mountains."}]


async def one(
    http: aiohttp.ClientSession, base_url: str, key: str, model: str, tokens: int
) -> tuple[float, int]:
    """One streamed chat completion: seconds to its first text, and its completion tokens (from the
    usage chunk). Lines are read raw and only the few that matter are parsed, so the measuring
    client takes as little as it can of the cores the gateway and the engine share."""
    t0 = time.perf_counter()
    first, last = None, b""
    async with http.post(
        f"{base_url}/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={
            "model": model,
            "messages": QUESTION,
            "max_tokens": tokens,
            "stream": True,
            "temperature": 1.0,
            "stream_options": {"include_usage": True},
            "ignore_eos": True,
        },
    ) as resp:  # every request the same length: both ways do equal work
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            if (
                first is None
                and b'"content":"' in line
                and json.loads(line[6:])["choices"][0]["delta"].get("content")
            ):
                first = time.perf_counter() - t0
            last = line
    usage = json.loads(last[6:]).get("usage") or {}
    return first if first is not None else time.perf_counter() - t0, int(usage.get("completion_tokens") or 0)


async def level(
    base_url: str,
    key: str,
    model: str,
    clients: int,
    requests: int,
    tokens: int,
    think_s: float = 0.0,
    limit: int = 64,
    ramp_s: float = 0.0,
) -> dict:
    """`clients` streaming clients send `requests` in all; `limit`: connections at most (0: one each).

    `ramp_s` > 0: spread arrivals. Client j sends its first request at j * ramp_s / clients and each
    next one when its last ends, so with ramp_s one request's length the streams' starts stay spread
    evenly, as independent users' are; time to first token is then read only from requests sent once
    every client is streaming (from ramp_s on). 0: every client starts at once, a burst each round."""
    http = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=600), connector=aiohttp.TCPConnector(limit=limit)
    )
    queue = list(range(requests))
    ttfts, slow, total = [], [], 0

    async def worker(j: int) -> None:
        nonlocal total
        if ramp_s:
            await asyncio.sleep(j * ramp_s / clients)
        while queue:
            queue.pop()
            if think_s:  # a client's pause before its next request, random so clients drift apart
                await asyncio.sleep(random.uniform(0, 2 * think_s))
            sent = time.perf_counter() - t0
            ttft, n = await one(http, base_url, key, model, tokens)
            if sent >= ramp_s:
                ttfts.append(ttft)
            if ttft > 1.0:  # when in the run the outliers were sent, to tell a stall from a slow start
                slow.append([round(sent, 3), round(ttft * 1000, 1)])
            total += n

    await one(http, base_url, key, model, 4)  # warm the connection
    t0 = time.perf_counter()
    await asyncio.gather(*[worker(j) for j in range(clients)])
    wall = time.perf_counter() - t0
    await http.close()
    return {
        "clients": clients,
        "requests": requests,
        "tokens": total,
        "seconds": wall,
        "tokens_per_s": total / wall,
        **ttft_quantiles(ttfts),
        "ttfts": ttfts,
        "over_1s": slow,
    }


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of these processes so far."""
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def measured(procs: dict[str, list[psutil.Process]], run: Coroutine) -> dict:
    """The level `run` measures, with the CPU seconds each process (tree) spent during it, per 1,000 tokens."""
    before = {name: cpu_seconds(p) for name, p in procs.items()}
    result = asyncio.run(run)
    k = max(result["tokens"], 1) / 1000
    result["cpu_ms_per_1k_tokens"] = {
        name: (cpu_seconds(p) - before[name]) * 1000 / k for name, p in procs.items()
    }
    return result


def ttft_quantiles(ttfts: list[float]) -> dict:
    q = quantiles(ttfts, n=100) if len(ttfts) > 1 else [ttfts[0]] * 99
    return {"ttft_p50_ms": q[49] * 1000, "ttft_p99_ms": q[98] * 1000}


def combine(runs: list[dict]) -> dict:
    """Throughput of the best run; time to first token over every request of every run (the VM's noise
    moves a single run's median by +-15 ms, more than the gateway's cost)."""
    best = max(runs, key=lambda r: r["tokens_per_s"])
    ttfts = [t for r in runs for t in r["ttfts"]]
    cpu = {
        name: sum(r["cpu_ms_per_1k_tokens"][name] for r in runs) / len(runs)
        for name in best["cpu_ms_per_1k_tokens"]
    }
    return {
        **{k: v for k, v in best.items() if k not in ("ttfts", "over_1s")},
        **ttft_quantiles(ttfts),
        "ttft_samples": len(ttfts),
        "cpu_ms_per_1k_tokens": cpu,
        "first_token_over_1s": [[i, *x] for i, r in enumerate(runs) for x in r["over_1s"]],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--requests",
        type=int,
        default=96,
        help="streaming requests per level and way (at least the number of clients)",
    )
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens per request")
    ap.add_argument("--size", default="bench", choices=["tiny", "small", "bench"])
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each way per level: the best throughput counts, and TTFT over all of them",
    )
    ap.add_argument(
        "--pretrain-steps", type=int, default=60, help="pretraining steps for the model (default 60)"
    )
    ap.add_argument(
        "--levels",
        type=int,
        nargs="+",
        default=None,
        help="concurrent clients per level (default 1 8 32; with --upstream stub 1 32 128 512)",
    )
    ap.add_argument(
        "--reserved-cores",
        type=int,
        default=None,
        help="cores kept from the engine for HTTP "
        "(VLLM_CPU_NUM_OF_RESERVED_CPU; default: the service's choice)",
    )
    ap.add_argument(
        "--engine-nice",
        type=int,
        default=None,
        help="niceness of the engine's threads (default: the service's choice, 10 on CPU)",
    )
    ap.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="mean pause of a client between its requests "
        "(uniform from 0 to twice this; default 0: each sends its next request at once)",
    )
    ap.add_argument(
        "--upstream",
        choices=["vllm", "stub"],
        default="vllm",
        help="vllm: a real engine (default); stub: a server that streams prepared chunks (bench/serve_stub.py), "
        "with nginx as a baseline (two requests per stream and level; --requests applies to vllm only)",
    )
    ap.add_argument("--rate", type=float, default=20.0, help="--upstream stub: tokens/s per stream")
    ap.add_argument(
        "--arrivals",
        choices=["burst", "spread", "both"],
        default="both",
        help="--upstream stub: every client at once, arrivals spread over one request's length, or both",
    )
    ap.add_argument(
        "--replicas", type=int, default=2, help="--upstream stub: `rankloop gateway` replicas behind nginx"
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--work", type=Path, default=None, help="where the model, logs and data go (removed after)"
    )
    args = ap.parse_args()
    args.levels = args.levels or (list(STUB_LEVELS) if args.upstream == "stub" else list(LEVELS))
    if args.upstream == "stub":
        from bench.serve_stub import run

        out = run(args)
        if args.json:
            args.json.write_text(
                json.dumps({**out, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2)
            )
        return

    from policy.pretrain import PretrainConfig
    from policy.pretrain import main as build

    results = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        work = Path(tmp)
        # Briefly trained: an untrained model's tokens often do not decode to text until several arrive,
        # which would hide the first token's time.
        model_dir = build(
            PretrainConfig(output_dir=work / "model", size=args.size, steps=args.pretrain_steps)
        )
        vllm_key = secrets.token_urlsafe(16)
        server = start_server(
            model_dir,
            VLLMOptions(
                dtype="float32", cpu_reserved_cores=args.reserved_cores, engine_nice=args.engine_nice
            ),
            work / "logs",
            served_name="bench",
            api_key=vllm_key,
        )
        try:
            data = work / "data"
            with Store.open(data / "rankloop.duckdb") as store:
                model_id = register_model(store, "policy", model_dir, name="bench", status="active")
            with running_service(data) as url:
                admin = admin_headers(data)
                key = httpx.post(f"{url}/admin/keys", headers=admin, json={"name": "bench"}).json()["key"]
                r = httpx.post(
                    f"{url}/admin/deploy",
                    headers=admin,
                    timeout=600,
                    json={
                        "model_id": model_id,
                        "endpoint": f"http://127.0.0.1:{server.port}",
                        "endpoint_key": vllm_key,
                    },
                )
                r.raise_for_status()
                service = json.loads((data / "service.json").read_text())["pid"]
                vllm = psutil.Process(server.process.pid)  # vLLM's HTTP frontend; its engine is a child
                procs = {
                    "bench_clients": [psutil.Process()],
                    "gateway": [psutil.Process(service)],
                    "vllm_frontend": [vllm],
                    "vllm_engine": vllm.children(recursive=True),
                }
                for clients in args.levels:
                    n = max(args.requests, clients)
                    runs: dict[str, list[dict]] = {"direct": [], "gateway": []}
                    for _ in range(args.repeat):  # interleaved, so drift on this noisy VM hits both ways
                        runs["direct"].append(
                            measured(
                                procs,
                                level(
                                    server.base_url,
                                    vllm_key,
                                    "bench",
                                    clients,
                                    n,
                                    args.tokens,
                                    args.think_ms / 1000,
                                ),
                            )
                        )
                        runs["gateway"].append(
                            measured(
                                procs,
                                level(
                                    f"{url}/v1", key, "current", clients, n, args.tokens, args.think_ms / 1000
                                ),
                            )
                        )
                    direct, gateway = combine(runs["direct"]), combine(runs["gateway"])
                    results.append(
                        {
                            "clients": clients,
                            "direct": direct,
                            "gateway": gateway,
                            "throughput_ratio": gateway["tokens_per_s"] / direct["tokens_per_s"],
                            "ttft_p50_added_ms": gateway["ttft_p50_ms"] - direct["ttft_p50_ms"],
                        }
                    )
        finally:
            server.stop()
    print(f"{'clients':>7} {'way':>8} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p99':>9}")
    for row in results:
        for way in ("direct", "gateway"):
            r = row[way]
            print(
                f"{row['clients']:7d} {way:>8} {r['tokens_per_s']:9.1f} {r['ttft_p50_ms']:7.1f}ms "
                f"{r['ttft_p99_ms']:7.1f}ms  over 1 s (run, sent at s, ms): {r['first_token_over_1s']}"
            )
            print(
                f"{'':17} CPU ms per 1k tokens: "
                + ", ".join(f"{name} {ms:.0f}" for name, ms in r["cpu_ms_per_1k_tokens"].items())
            )
        print(
            f"{'':7} gateway/direct throughput {row['throughput_ratio']:.3f}x, TTFT p50 "
            f"{row['ttft_p50_added_ms']:+.1f} ms"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"levels": results, "args": {k: str(v) for k, v in vars(args).items()}}, indent=2)
        )


if __name__ == "__main__":
    main()
