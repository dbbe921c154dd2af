"""Reward training: listwise Plackett-Luce vs TRL pairwise on the same snapshot, same wall time.

Builds a tiny pretrained model and a snapshot of rankings (K = 4) from simulated
annotators with a known preference, then trains each mode for the same wall time
(`--seconds`) with the same number of sequences per step (8 rankings = 32 responses for
listwise; 16 pairs = 32 responses for pairwise). Prints rankings/s of training (epochs
covered x training rankings / seconds), held-out pairwise accuracy and agreement with the
hidden preference for each, and the speed ratio listwise / pairwise. Listwise scores each
response once per ranking (4 forward passes); pairwise scores both sides of all 6 pairs (12).

    python -m bench.reward [--seconds 30] [--prompts 200] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# This file is named like the `reward` package: take the script's own folder off the path.
from policy.config import PretrainConfig
from policy.pretrain import main as pretrain
from reward.config import RewardTrainConfig
from reward.train import main as train
from service.core.store import Store
from service.data.snapshots import SnapshotFilters, create_snapshot
from tests.support.seeding import seed_rankings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30, help="training wall time per mode")
    ap.add_argument("--prompts", type=int, default=200, help="prompts (x3 tasks each, one ranking per task)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        base = pretrain(PretrainConfig(output_dir=work / "base", size="tiny", steps=100, n_transcripts=1500))
        with Store.open(work / "data" / "rankloop.duckdb") as store:
            seed_rankings(store, n_prompts=args.prompts, annotators=3, noise=0.3)
            snap = create_snapshot(store, work / "data", SnapshotFilters())
        print(
            f"snapshot {snap.id}: {snap.manifest['counts']['train_rankings']} train / "
            f"{snap.manifest['counts']['eval_rankings']} eval rankings of 4 candidates"
        )
        results = {}
        for mode, batch in [("listwise", 8), ("pairwise", 16)]:
            cfg = RewardTrainConfig(
                snapshot=snap.path.parent,
                base_model=base,
                output_dir=work / mode,
                mode=mode,
                epochs=1000,
                max_seconds=args.seconds,
                batch_size=batch,
                logging_steps=20,
            )
            m = json.loads((train(cfg) / "metrics.json").read_text())
            results[mode] = {
                "rankings_per_s": m["train"]["rankings_per_s"],
                "seconds": m["train"]["seconds"],
                "epochs": m["train"]["epochs"],
                "accuracy": m["eval"]["pairwise_accuracy"],
                "vs_hidden": m["eval"]["hidden"]["model_vs_hidden"],
                "noise_ceiling": m["eval"]["hidden"]["labels_vs_hidden"],
            }
    for mode, r in results.items():
        print(
            f"{mode:9} {r['rankings_per_s']:7.1f} rankings/s ({r['epochs']:.1f} epochs in {r['seconds']:.1f} s); "
            f"held-out accuracy {r['accuracy']:.4f}, vs hidden preference {r['vs_hidden']:.4f} "
            f"(labels vs hidden: {r['noise_ceiling']:.4f})"
        )
    ratio = results["listwise"]["rankings_per_s"] / results["pairwise"]["rankings_per_s"]
    print(f"listwise / pairwise speed: {ratio:.2f}x per ranking")
    if args.json:
        args.json.write_text(
            json.dumps({"modes": results, "speed_ratio": ratio, "seconds": args.seconds}, indent=2)
        )


if __name__ == "__main__":
    main()
