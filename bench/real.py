"""The loop on a real chat model toward real human preferences, in one run: `rankloop demo --real`
(SmolLM2-135M-Instruct, Anthropic HH harmless-base, the gold-judge world of service/cli/demo_world.py)
timed first and cached, then its figures, each with its judge:

* the reward model trained on HH labels (the world's gold model fitted to the gold part's pairs: a head
  on frozen SmolLM2 without a GPU, every weight with one) on every held-out pair of the loop part, with a 95% Wilson interval, beside
  baselines measured on the same pairs: chance, the shorter answer, a bag-of-words logistic regression
  trained on the same pairs. Judged by the people who labelled HH.
* the DPO policy against SmolLM2 under the gold reward model (the simulated annotators' truth, trained on
  HH pairs the loop never saw): win rate with its 95% t-interval over prompts, length-controlled and
  similar-length; the proxy reward model's figures beside it; KL; the overoptimization points.
* seconds per stage.

    python -m bench.real [--hh FILE] [--json bench/real.json]

On a GPU the same script runs (torch finds CUDA; vLLM needs its GPU build) and says which it ran on.
TRL's pairwise RewardTrainer on the same backbone is not among the baselines: one full fine-tuning epoch
of SmolLM2 on these pairs takes hours on 2 cores (bench/reward_hh.py's docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def demo(data: Path, hh: Path) -> dict:
    """`rankloop demo --real --no-serve`: wall time and its stages. Its user cache is the run's own, so the
    first run converts SmolLM2 as a new user's does."""
    from bench.demo import run

    out = run(data, ["--real", "--hh", str(hh)], {"XDG_CACHE_HOME": str(data.parent / "cache")})
    print(f"demo --real: {out['wall_s']:.0f} s", flush=True)
    return {"wall_s": out["wall_s"], "stages_s": out["stages_s"]}


def gold_on_held_out(data: Path, hh: Path) -> dict:
    """The world's gold model and the baselines on every loop-part pair (none shares an opening with
    the pairs it was fitted to)."""
    from bench.reward_hh import bag_of_words, interval
    from reward.score import RewardScorer
    from service.cli.demo_real import REAL_SIZES
    from service.cli.demo_world import read_world

    parts = read_world(hh)
    size = REAL_SIZES[False]["world"]
    train, held = parts["gold"][: size.gold_pairs], parts["loop"]
    t0 = time.perf_counter()
    scorer = RewardScorer(data / "world" / "gold-reward", batch_size=16, max_length=size.max_length)
    chosen = scorer.score_pairs([(r["messages"], r["chosen"]) for r in held])
    rejected = scorer.score_pairs([(r["messages"], r["rejected"]) for r in held])
    # frozen_backbone: auto trains the head alone without a GPU, every weight with one
    ran = json.loads((data / "world" / "gold-reward" / "metrics.json").read_text())["config"]
    recipe = "head on frozen" if ran["frozen_backbone"] == "yes" else f"{ran['mode']}, every weight of"
    return {
        "data": f"{hh.name}: {len(train)} gold-part pairs to fit, {len(held)} loop-part pairs held out (no shared opening)",
        "judge": "the people who labelled Anthropic HH (harmless-base)",
        f"reward model (gold: {recipe} SmolLM2-135M-Instruct)": {
            **interval([c > r for c, r in zip(chosen, rejected, strict=True)]),
            # the depth it reads (the head's, cross-validated, the layers above dropped; with a GPU all of them)
            "layers": json.loads((data / "world" / "gold-reward" / "config.json").read_text())[
                "num_hidden_layers"
            ],
        },
        "baselines": {
            "chance": {"accuracy": 0.5},
            "shorter answer wins": interval([len(r["chosen"]) < len(r["rejected"]) for r in held]),
            "bag-of-words logistic regression": interval(bag_of_words(train, held)),
        },
        "scoring_s": round(time.perf_counter() - t0, 1),
    }


def loop_figures(data: Path) -> dict:
    from service.core.store import Store
    from service.report.overoptimization import points

    with Store.open(data / "rankloop.duckdb") as store:
        [rnd] = store.query("SELECT * FROM rounds WHERE kind = 'demo'")
        policy = json.loads(
            store.query("SELECT metrics FROM models WHERE id = ?", [rnd["policy_model_id"]])[0]["metrics"]
        )
        status = store.query(
            "SELECT status, status_reason FROM models WHERE id = ?", [rnd["policy_model_id"]]
        )[0]
        reward = json.loads(
            store.query("SELECT metrics FROM models WHERE id = ?", [rnd["reward_model_id"]])[0]["metrics"]
        )
        overoptimization = points(store)
    ev = policy["evaluations"][-1]
    keep = (
        "win_rate",
        "ci",
        "t_interval",
        "lc_win_rate",
        "similar_length",
        "mean_candidate",
        "mean_baseline",
        "n",
    )
    return {
        "world": "gold simulated annotators (Bradley-Terry, noise 0.2 on the gold model's logits) and a random one rank SmolLM2's samples "
        "of HH openings; the proxy reward model and DPO learn only from those rankings",
        "dpo_vs_smollm2": {
            "prompts": ev["prompts"],
            "comparisons": ev["comparisons"],
            "under the gold reward model trained on HH labels": {
                k: ev["judges"]["gold"].get(k) for k in keep
            },
            "under the proxy reward model (trained on the gold annotators' rankings)": {
                k: ev["judges"]["reward"].get(k) for k in keep
            },
            "kl_to_smollm2": ev["kl"],
            "gate": f"{status['status']}: {status['status_reason']}",
        },
        "proxy_reward_model_held_out_accuracy": reward["eval"].get("pairwise_accuracy"),
        "policy_steps": policy["train"]["steps"],
        "overoptimization": overoptimization,
        "examples": ev.get("examples", [])[:3],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from service.cli.demo_world import DEFAULT_HH

    ap.add_argument("--hh", type=Path, default=DEFAULT_HH, help="HH-RLHF pairs (JSONL, .gz or not)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    import torch

    device = (
        f"GPU ({torch.cuda.get_device_name(0)})"
        if torch.cuda.is_available()
        else f"CPU ({os.cpu_count()} cores)"
    )
    print(f"running on {device}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        first = demo(data, args.hh)
        cached = demo(data, args.hh)
        result = {
            "device": device,
            "demo_real": {
                "first_run": first,
                "cached_run": cached,
                "targets_s": {"first": 1800, "cached": 300},
            },
            "loop": loop_figures(data),
            "reward_model_on_hh": gold_on_held_out(data, args.hh),
        }
    rm = result["reward_model_on_hh"]
    print(json.dumps({k: v for k, v in rm.items() if k != "data"}, indent=1))
    print(json.dumps({k: v for k, v in result["loop"].items() if k != "examples"}, indent=1))
    print(
        f"demo --real: first run {first['wall_s']} s (target 1800), cached {cached['wall_s']} s (target 300)"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
