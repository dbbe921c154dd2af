"""What the Rank tab reads from its form and says back, without Gradio: strengths per rank level from
the per-candidate choices, attribute ratings, and the texts for guidelines and quiz results."""

from __future__ import annotations

from collections.abc import Sequence

from annotator.ranking import RankingError, normalize_ranks
from annotator.render import escape_html


def strengths_from(ranks: list[int], chosen: Sequence[str | None]) -> list[str] | None:
    """The ranking's strengths (one per pair of adjacent rank levels) from each candidate's "better
    than the next level by" choice: candidates of one level must agree, the last level has none, and
    either every other level has one or none has."""
    dense = normalize_ranks(ranks, len(ranks))
    last = max(dense)
    by_level: dict[int, set[str]] = {}
    for i, (rank, strength) in enumerate(zip(dense, chosen, strict=True)):
        if not strength:
            continue
        if rank == last:
            raise RankingError(
                f"candidate {i + 1} is ranked last, so there is no next level for it to beat; "
                "leave its strength empty"
            )
        by_level.setdefault(rank, set()).add(strength)
    if not by_level:
        return None
    mixed = [lvl for lvl, s in by_level.items() if len(s) > 1]
    if mixed:
        raise RankingError(f"the candidates tied at rank {mixed[0]} were given different strengths; give one")
    missing = [lvl for lvl in range(1, last) if lvl not in by_level]
    if missing:
        raise RankingError(
            f"give a strength for every rank level but the last, or for none: rank {missing[0]} has none"
        )
    return [next(iter(by_level[lvl])) for lvl in range(1, last)]


def attributes_from(rubric: Sequence[str], ratings: Sequence[Sequence[int | None]]) -> list[dict] | None:
    """Per-candidate ratings (`ratings[i][j]`: candidate i on rubric[j], None when not rated); None
    when nothing was rated."""
    out = [{name: int(v) for name, v in zip(rubric, row, strict=True) if v is not None} for row in ratings]
    return out if any(out) else None


def guidelines_md(g: dict | None) -> str:
    if g is None:
        return ""
    scope = f" for batch {g['batch']}" if g.get("batch") else ""
    return f"**Guidelines, version {g['version']}{scope}**\n\n{escape_html(g['text'])}"


def quiz_header(quiz: dict) -> str:
    return (
        f"### Qualification quiz: question {quiz['question']} of {quiz['of']} (attempt {quiz['attempt']})\n\n"
        "Rank as the guidelines say; real tasks follow once you pass."
    )


def quiz_result_md(quiz: dict) -> str:
    """What an annotator is told after a quiz answer: progress, or the attempt's result and where
    their answers differed from the reference rankings."""
    if not quiz.get("complete"):
        return f"Quiz answer stored ({quiz['answered']} of {quiz['of']})."
    head = (
        f"✅ You passed the qualification quiz: score {quiz['score']:.2f} (pass mark {quiz['pass_mark']:.2f})."
        if quiz["passed"]
        else f"❌ Quiz attempt {quiz['attempt']}: score {quiz['score']:.2f}, below the pass mark "
        f"{quiz['pass_mark']:.2f}. Read the guidelines again and retake it."
    )
    lines = [
        f"- *{escape_html(d['prompt'][:80])}*: your ranking {d['your_ranks']} agrees with the reference on "
        f"{d['agreement']:.0%} of the pairs"
        for d in quiz["disagreements"]
    ]
    return head + ("\n\nWhere you differed from the reference:\n" + "\n".join(lines) if lines else "")
