"""Wall time of `rankloop demo --no-serve`, by stage: a first run on an empty data directory
(pretraining included, the install not), then a second run that reuses what the first made.

Targets on 2 cores: under 10 minutes first, under 5 minutes cached.

    python -m bench.demo [--small] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(data: Path, flags: list[str], env: dict[str, str] | None = None) -> dict:
    """`rankloop demo --no-serve FLAGS` on `data`: wall time, its stages and the end of its output
    (bench/real.py times `demo --real` with it)."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "service.cli", "--data", str(data), "demo", "--no-serve", "--port", "0"]
    done = subprocess.run(
        cmd + flags,
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"rankloop demo failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    stages = json.loads((data / "demo-stages.json").read_text())
    (data / "demo-stages.json").unlink()  # the next run writes its own
    return {"wall_s": round(wall, 1), "stages_s": stages, "output_tail": done.stdout[-3000:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="time `rankloop demo --small` instead")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        flags = ["--small"] if args.small else []
        first, cached = run(data, flags), run(data, flags)
    names = list(dict.fromkeys([*first["stages_s"], *cached["stages_s"]]))
    print(f"{'stage':60} {'first':>8} {'cached':>8}")
    for name in names:
        a, b = first["stages_s"].get(name), cached["stages_s"].get(name)
        print(f"{name:60} {'' if a is None else f'{a:7.1f}s':>8} {'' if b is None else f'{b:7.1f}s':>8}")
    print(f"{'whole command (wall)':60} {first['wall_s']:7.1f}s {cached['wall_s']:7.1f}s")
    print(
        f"targets: first run under 600 s ({first['wall_s'] / 600:.2f} of it), cached under 300 s "
        f"({cached['wall_s'] / 300:.2f} of it)"
    )
    print("\nlast lines of the first run:\n" + first["output_tail"])
    if args.json:
        args.json.write_text(json.dumps({"first": first, "cached": cached, "small": args.small}, indent=2))


if __name__ == "__main__":
    main()
