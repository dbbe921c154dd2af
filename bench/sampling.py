"""Sampling throughput: rankloop's sampler (through a vLLM server) vs transformers `generate`
vs vLLM's offline `LLM.chat`, on one workload, in one run.

Builds its own ~20M-parameter Llama (random init: throughput does not depend on what
the weights say), then generates prompts x system prompts x K samples of exactly
`--tokens` tokens each (min = max tokens, so every way does the same work) three ways
and prints tokens/s (best of --repeat runs) and the ratios sampler/transformers and sampler/offline-vLLM.

    python -m bench.sampling                       # 64 prompts x 2 system prompts x 4 x 64 tokens
    python -m bench.sampling --prompts 8 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

# bench/ holds scripts named like the packages (policy.py, reward.py): the repository comes first instead.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

SYSTEM_PROMPTS = {
    "brief": "Answer in one short sentence.",
    "detailed": "Answer in detail, with several sentences.",
}


def workload(n_prompts: int) -> list[str]:
    from policy.corpus import TOPICS, question

    rng = random.Random(0)
    return [question(rng.choice(list(TOPICS)), rng) + f" ({i})" for i in range(n_prompts)]


def chats(prompts: list[str], k: int) -> list[list[dict]]:
    from service.engine.sampler import messages

    return [messages(sp, p) for p in prompts for sp in SYSTEM_PROMPTS.values() for _ in range(k)]


def bench_transformers(
    model_dir: Path, convs: list[list[dict]], tokens: int, batch: int, dtype: str, repeat: int
) -> list[tuple[int, float]]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    texts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in convs]
    runs = []
    for _ in range(repeat):
        generated = 0
        t0 = time.perf_counter()
        with torch.inference_mode():
            for i in range(0, len(texts), batch):
                enc = tok(texts[i : i + batch], return_tensors="pt", padding=True)
                out = model.generate(
                    **enc,
                    do_sample=True,
                    temperature=1.0,
                    max_new_tokens=tokens,
                    min_new_tokens=tokens,
                    pad_token_id=tok.pad_token_id,
                )
                generated += (out.shape[1] - enc["input_ids"].shape[1]) * out.shape[0]
        runs.append((generated, time.perf_counter() - t0))
    return runs


def bench_sampler(
    model_dir: Path, prompts: list[str], k: int, tokens: int, dtype: str, workdir: Path, repeat: int
) -> list[tuple[int, float]]:
    from service.core.registry import find_or_register
    from service.core.settings import VLLMOptions
    from service.core.store import Store
    from service.data.prompts import add_prompts, add_system_prompts, latest_system_prompts
    from service.engine.sampler import Endpoint, SamplingParams, sample
    from service.engine.server import start_server

    server = start_server(model_dir, VLLMOptions(dtype=dtype), workdir)
    runs = []
    try:
        for i in range(repeat):  # a fresh database each time: a rerun into the same one generates nothing
            with Store.open(workdir / f"bench-{i}.duckdb") as store:
                add_prompts(store, prompts)
                add_system_prompts(store, SYSTEM_PROMPTS)
                rows = store.query("SELECT id, text FROM prompts ORDER BY id")
                sps = latest_system_prompts(store, list(SYSTEM_PROMPTS))
                model_id = find_or_register(store, model_dir)
                params = SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=1.0)
                report = sample(
                    store, Endpoint(model_id, server.served_name, server.base_url), rows, sps, k, params
                )
                assert store.scalar("SELECT count(*) FROM samples") == len(prompts) * len(sps) * k
            runs.append((report.completion_tokens, report.seconds))
    finally:
        server.stop()
    return runs


def bench_offline(
    model_dir: Path, convs: list[list[dict]], tokens: int, dtype: str, repeat: int
) -> list[tuple[int, float]]:
    from service.core.settings import VLLMOptions
    from service.engine.server import engine_env

    os.environ.update(engine_env(VLLMOptions(dtype=dtype)))  # the same engine settings as rankloop's servers
    from vllm import LLM, SamplingParams

    llm = LLM(model=str(model_dir), dtype=dtype, enforce_eager=True, seed=0)
    params = SamplingParams(max_tokens=tokens, min_tokens=tokens, temperature=1.0)
    runs = []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            outs = llm.chat(convs, params, use_tqdm=False)
            runs.append((sum(len(o.outputs[0].token_ids) for o in outs), time.perf_counter() - t0))
    finally:
        llm.llm_engine.engine_core.shutdown()  # else its engine processes outlive the script
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--hf-batch", type=int, default=64, help="transformers batch size")
    ap.add_argument(
        "--repeat", type=int, default=2, help="runs of each way; the best counts (this VM is noisy)"
    )
    ap.add_argument("--dtype", default="float32", help="same dtype for all three ways")
    ap.add_argument("--size", default="bench", choices=["tiny", "small", "bench"])
    ap.add_argument(
        "--only",
        nargs="+",
        choices=["transformers", "sampler", "offline_vllm"],
        help="run only these ways (no ratios unless all three run)",
    )
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    from policy.pretrain import PretrainConfig
    from policy.pretrain import main as build

    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model_dir = build(PretrainConfig(output_dir=workdir / "model", size=args.size, steps=0))
        n_params = json.loads((model_dir / "metrics.json").read_text())["parameters"]
        prompts = workload(args.prompts)
        convs = chats(prompts, args.k)
        print(
            f"model: {n_params / 1e6:.1f}M parameters; workload: {args.prompts} prompts x "
            f"{len(SYSTEM_PROMPTS)} system prompts x {args.k} samples x {args.tokens} tokens, {args.dtype}"
        )
        runs = {
            "transformers": lambda: bench_transformers(
                model_dir, convs, args.tokens, args.hf_batch, args.dtype, args.repeat
            ),
            "sampler": lambda: bench_sampler(
                model_dir, prompts, args.k, args.tokens, args.dtype, workdir, args.repeat
            ),
            "offline_vllm": lambda: bench_offline(model_dir, convs, args.tokens, args.dtype, args.repeat),
        }
        rate = {}
        for name, run in runs.items():
            if args.only and name not in args.only:
                continue
            results = run()
            tokens, seconds = min(results, key=lambda r: r[1] / r[0])
            rate[name] = tokens / seconds
            every = ", ".join(f"{t / s:.0f}" for t, s in results)
            print(
                f"{name:14} {tokens:7d} tokens in {seconds:7.2f} s = {rate[name]:8.1f} tok/s (best of: {every})",
                flush=True,
            )
    if len(rate) < 3:
        return
    ratios = {
        "sampler/transformers": rate["sampler"] / rate["transformers"],
        "sampler/offline_vllm": rate["sampler"] / rate["offline_vllm"],
        "offline_vllm/transformers": rate["offline_vllm"] / rate["transformers"],
    }
    for name, r in ratios.items():
        print(f"{name:26} {r:.2f}x")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "tokens_per_s": rate,
                    "ratios": ratios,
                    "args": vars(args) | {"json": str(args.json)},
                    "parameters": n_params,
                },
                indent=2,
            )
        )


if __name__ == "__main__":  # vLLM's offline engine spawns processes: the guard is required
    main()
