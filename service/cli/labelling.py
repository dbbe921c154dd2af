"""`rankloop guidelines`, `rankloop quiz` and `rankloop review`: what annotators are told, who has
qualified, and contested tasks (annotator/guidelines.py, quiz.py, review.py).

rankloop guidelines set FILE [--batch NAME] | list [--batch NAME]
rankloop quiz results [--name NAME]
rankloop review contested [--resolved] | resolve TASK_ID --reviewer NAME --ranks 1,3,2 --rationale TEXT
"""

from __future__ import annotations

import argparse

from service.cli.annotate import comma_ranks
from service.cli.client import connect, show_table
from service.cli.flags import POSITIONAL, Opt
from service.cli.tree import CommandTree, op_params
from service.core.settings import Settings


def cmd_guideline_set(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        g = c.call("guidelines.set", **op_params(args, "guidelines.set"))
    scope = f"batch {g['batch']}" if g["batch"] else "the project"
    print(f"guideline version {g['version']} for {scope} stored; annotators see it from their next task")


def cmd_guideline_list(args: argparse.Namespace, settings: Settings) -> None:
    show_table(
        settings,
        "guidelines.list",
        ["batch", "version", "created_at", "text"],
        **op_params(args, "guidelines.list"),
    )


def cmd_quiz(args: argparse.Namespace, settings: Settings) -> None:
    show_table(
        settings,
        "quiz.results",
        ["name", "attempt", "answered", "score", "passed", "disagreed_tasks", "last_answer_at"],
        **op_params(args, "quiz.results"),
    )


def cmd_contested(args: argparse.Namespace, settings: Settings) -> None:
    show_table(
        settings,
        "review.contested",
        ["task_id", "batch", "rankings", "reviewer", "final_ranks", "resolved_at", "prompt"],
        **op_params(args, "review.contested"),
    )


def cmd_resolve(args: argparse.Namespace, settings: Settings) -> None:
    with connect(settings) as c:
        r = c.call("review.resolve", **op_params(args, "review.resolve"))
    print(f"task {r['task_id']} resolved: final ranks {r['ranks']}")


def add_parsers(tree: CommandTree) -> None:
    tree.group("guidelines", "versioned annotation guidelines, shown above every task")
    tree.command(
        "set",
        cmd_guideline_set,
        "store a new guideline version (the project's or a batch's)",
        "guidelines",
        op="guidelines.set",
        opts={"file": POSITIONAL},
    )
    tree.command("list", cmd_guideline_list, "every guideline version", "guidelines", op="guidelines.list")
    tree.group("quiz", "the qualification quiz new annotators take (annotation.quiz_size)")
    tree.command("results", cmd_quiz, "each account's quiz attempts and scores", "quiz", op="quiz.results")
    tree.group("review", "contested tasks: rankers kept disagreeing up to annotation.overlap_cap")
    tree.command("contested", cmd_contested, "contested tasks", "review", op="review.contested")
    tree.command(
        "resolve",
        cmd_resolve,
        "record a reviewer's final ranking of a contested task",
        "review",
        op="review.resolve",
        opts={
            "task_id": POSITIONAL,
            "ranks": Opt(type=str, repeat=False, convert=comma_ranks),
            "strengths": Opt(flag="--strength", metavar="STRENGTH", repeat=True),
        },
    )
