"""How much better, and better at what: preference strength and attribute ratings (pure; no torch).

Strength. A ranking may say, for each pair of adjacent rank levels, how much the better level beats
the next one, in Llama 2's four levels. In the pairwise loss a strength is a margin m (Llama 2's
"small" margins, Touvron et al. 2023, table 27):

    significantly 1,  clearly 2/3,  slightly 1/3,  negligibly 0

and a pair that spans several levels gets the sum of the margins between them (scores are additive:
A > B by m1 and B > C by m2 puts A above C by m1 + m2). In the listwise (Plackett-Luce) loss each
level's stage is weighted by 1 + m of its strength to the next level, so an unrated stage weighs 1,
as before strengths existed, and a "significantly" stage twice as much.

Attributes. Each candidate may be rated 0-4 on a rubric (HelpSteer2's attributes by default); the
ratings are stored, exported and may train extra reward heads (reward/listwise.py).
"""

from __future__ import annotations

STRENGTHS = {"significantly": 1.0, "clearly": 2 / 3, "slightly": 1 / 3, "negligibly": 0.0}
DEFAULT_RUBRIC = ("helpfulness", "correctness", "coherence", "verbosity", "harmlessness")
RATING_MAX = 4  # attribute ratings are 0..RATING_MAX


def levels(ranks: list[int]) -> int:
    """How many distinct rank levels a (dense) ranking has."""
    return len(set(ranks))


def pair_margin(strengths: list[str] | None, better_rank: int, worse_rank: int) -> float:
    """The margin between a candidate at rank level `better_rank` and one at `worse_rank` (dense ranks,
    better < worse): the sum of the strengths between them; 0 when the ranking gives none."""
    if not strengths:
        return 0.0
    return sum(STRENGTHS[s] for s in strengths[better_rank - 1 : worse_rank - 1])


def stage_weights(ranks: list[int], strengths: list[str] | None) -> list[float]:
    """The Plackett-Luce weight of each candidate's stage: 1 + the margin from its level to the next
    one (1 for the last level and for rankings without strengths)."""
    if not strengths:
        return [1.0] * len(ranks)
    return [1.0 + (STRENGTHS[strengths[r - 1]] if r <= len(strengths) else 0.0) for r in ranks]
