"""Gold scores for gold simulated annotators (`Profile.gold_model`): a reward model trained on real
human labels judges each task's candidates, as the gold model of Gao et al. 2022 and AlpacaFarm.

It scores in the process that runs the simulated annotators (the CLI's, like a reward-model judge),
never in the service. Each task is scored once per gold model, whichever annotators rank it, and
scoring is serialized: torch already uses every core for one batch.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from reward.checkpoint import require_model_dir
from service.core.errors import UserError


def check_gold_model(model_dir: str | Path) -> None:
    """A gold model is a reward model directory; a UserError naming what is wrong otherwise."""
    require_model_dir(
        model_dir,
        "gold model",
        "a gold annotator's model must stay where it was trained (its profile names it)",
        UserError,
    )
    architectures = json.loads((Path(model_dir) / "config.json").read_text()).get("architectures") or []
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise UserError(
            f"gold model {model_dir} is not a reward model ({', '.join(architectures) or 'no architecture'}); "
            "give a directory `rankloop train reward` wrote"
        )


class GoldScores:
    """`(model_dir, task) -> a score per candidate`, the `gold` argument of `annotator.simulate_run.run`."""

    def __init__(self, max_length: int | None = None):
        self.max_length = max_length  # None: as the gold model was trained
        self._scorers: dict[str, Any] = {}
        self._scores: dict[tuple[str, int], list[float]] = {}
        self._lock = threading.Lock()

    def scorer(self, model_dir: str) -> Any:
        if model_dir not in self._scorers:
            check_gold_model(model_dir)
            from reward.score import RewardScorer  # torch only where gold annotators run

            self._scorers[model_dir] = RewardScorer(Path(model_dir), max_length=self.max_length)
        return self._scorers[model_dir]

    def __call__(self, model_dir: str, task: dict) -> list[float]:
        key = (model_dir, task["task_id"])
        with self._lock:
            if key not in self._scores:
                self._scores[key] = self.scorer(model_dir).score(
                    task["messages"], [c["text"] for c in task["candidates"]]
                )
            return self._scores[key]
