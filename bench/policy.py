"""Policy training and one turn of the loop, timed by stage, with the win rates it reaches.

One run, all through the `rankloop` command in this process (no service), on a tiny chat Llama
pretrained here (no download):

1. the loop: SFT on instructions -> sample with vLLM -> simulated annotators rank (fixed seeds)
   -> snapshot -> reward model -> DPO -> evaluation against the SFT parent on held-out prompts
   (vLLM again), each stage's wall time printed;
2. DPO pairs/s (from the DPO job);
3. GRPO completions/s (jobs like any other) with transformers generation and with TRL's colocated
   vLLM, the same steps and batch, as a ratio (time outside the training loop, vLLM's start-up
   included, is reported apart), and the transformers-generated GRPO policy's win rate.

    python -m bench.policy [--dpo-steps 60] [--grpo-steps 40] [--json bench/policy.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from tests.support.loopkit import (
    build_loop,
    chat_model,
    evaluation,
    model_id,
    model_row,
    rankloop,
    write_yaml,
)


def figures(data: Path, model: int, against: int) -> dict:
    """Win rates under each judge, KL and lengths of `model` against `against` (no gate). The reward model
    an online-RL policy was trained against is its proxy: recorded as such, never as a win rate."""
    _, ev = evaluation(data, model, "--against", str(against), "--judge", "hidden", "--no-gate")
    judges = {
        name: (
            {
                "trained_against": True,
                "mean_candidate": j["mean_candidate"],
                "mean_baseline": j["mean_baseline"],
            }
            if j.get("trained_against")
            else {
                "win_rate": j["win_rate"],
                "ci": j["ci"],
                "lc_win_rate": j["lc_win_rate"],
                "lc_ci": j["lc_ci"],
                "similar_length": j["similar_length"],
            }
        )
        for name, j in ev["judges"].items()
    }
    kl = {k: ev["kl"].get(k) for k in ("estimate", "ci", "note", "token_ids")}
    return judges | {"kl": kl, "comparisons": ev["comparisons"], "words": ev["length"]}


def grpo(work: Path, data: Path, steps: int, generation: str) -> dict:
    """A GRPO job (registered, so it can be evaluated): completions/s of its training loop."""
    t0 = time.perf_counter()
    out = rankloop(
        data,
        "train",
        "policy",
        "--method",
        "grpo",
        "--config",
        write_yaml(
            work / f"grpo-{generation}.yaml",
            {
                "max_steps": steps,
                "batch_size": 8,
                "num_generations": 4,
                "learning_rate": 1e-4,
                "max_completion_length": 48,
                "max_length": 256,
                "generation": generation,
            },
        ),
    )
    wall = time.perf_counter() - t0
    model = model_id(out)
    train = model_row(data, model)["metrics"]["train"]
    return {
        "model": model,
        "completions_per_s": steps * 8 / train["seconds"],
        "train_seconds": train["seconds"],
        "job_wall_seconds": round(wall, 1),
        "outside_training_seconds": round(wall - train["seconds"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dpo-steps", type=int, default=60)
    ap.add_argument("--grpo-steps", type=int, default=40)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        # The chat model and the configs live beside the data directory: jobs may read them there.
        os.environ["RANKLOOP_ALLOWED_ROOTS"] = json.dumps([str(work)])
        loop = build_loop(work, chat_model(work / "chat"))
        data, stages = loop["data"], loop["stages_s"]
        t0 = time.perf_counter()
        dpo = model_id(
            rankloop(
                data,
                "train",
                "policy",
                "--method",
                "dpo",
                "--config",
                write_yaml(
                    work / "dpo.yaml", {"max_steps": args.dpo_steps, "batch_size": 8, "max_length": 256}
                ),
            )
        )
        stages["policy (dpo)"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        dpo_figures = figures(data, dpo, loop["sft"])
        stages["evaluation"] = round(time.perf_counter() - t0, 1)
        train = model_row(data, dpo)["metrics"]["train"]
        result = {
            "stages_s": stages,
            "rankings": loop["rankings"],
            "dpo": {
                "pairs": train["pairs"],
                "steps": train["steps"],
                "seconds": train["seconds"],
                "pairs_per_s": train["steps"] * 8 / train["seconds"],
                "vs_sft": dpo_figures,
            },
        }
        speeds = {g: grpo(work, data, args.grpo_steps, g) for g in ("transformers", "vllm")}
        result["grpo"] = {g: {k: v for k, v in s.items() if k != "model"} for g, s in speeds.items()}
        result["grpo"]["vllm_vs_transformers"] = (
            speeds["vllm"]["completions_per_s"] / speeds["transformers"]["completions_per_s"]
        )
        result["grpo"]["vs_sft"] = figures(data, speeds["transformers"]["model"], loop["sft"])
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
