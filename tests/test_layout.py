"""The layout's import rules, read from the source with `ast` (nothing is imported). This file is the
one statement of the layers; the README's architecture section points here.

Layers, and what each may import of ours besides itself (arrows point one way, down the list):

    service.cli      -> service.web (to start `serve`), service.control, service.jobs, service.engine,
                        service.data, service.core, annotator, the light trainer modules, policy.pretrain,
                        reward.train
    service.web      -> service.gateway, service.control, service.jobs, service.engine, service.report,
                        service.core, annotator, the light reward modules
    service.control  -> service.jobs, service.report, service.gateway, service.engine, service.data,
                        service.core, annotator, the light reward modules, reward.score
    service.jobs     -> service.engine, service.data, service.core, annotator, the light trainer modules
                        (configs, checkpoint checks, data formats: no torch), reward.evaluate
    service.sdk      -> service.cli.client (its way to the admin API), service.control.commands, service.core
    service.report   -> service.data, service.gateway.deploy_records, service.core, annotator
    service.gateway  -> service.engine, service.data, service.core, the light reward modules (never annotator)
    service.engine   -> service.core, the light reward modules
    service.data     -> service.core, annotator, the light reward modules
    annotator        -> service.core, reward.conversation (the conversation format), reward.strength
                        (preference strengths and the rubric)
    service.core     -> reward.configfile (the YAML/flags helper the trainers share), reward.strength
    policy           -> reward
    reward           -> nothing of ours

Every import counts, the ones inside functions too, so no cycle can hide behind a lazy import.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "annotator", "reward", "policy")
# The trainers' modules that import no torch (tests/reward/test_config_light.py checks that): the only parts
# of reward/ and policy/ the service reads, besides the scorer and the reward gate's evaluation.
REWARD_LIGHT = (
    "reward.config",
    "reward.checkpoint",
    "reward.configfile",
    "reward.conversation",
    "reward.data",
    "reward.snapshot_format",
    "reward.strength",
    "reward.objectives",
)
POLICY_LIGHT = ("policy.config", "policy.data", "policy.corpus", "policy.stats", "policy.packaged")
RULES: dict[str, tuple[str, ...]] = {
    # policy.pretrain: `rankloop demo` builds the tiny model in its own process; reward.train: `demo --real`
    # fits its world's gold reward model the same way
    "service.cli": (
        "service.cli",
        "service.web",
        "service.control",
        "service.jobs",
        "service.engine",
        "service.data",
        "service.core",
        "annotator",
        *REWARD_LIGHT,
        *POLICY_LIGHT,
        "policy.pretrain",
        "reward.train",
    ),
    "service.web": (
        "service.web",
        "service.gateway",
        "service.control",
        "service.jobs",
        "service.engine",
        "service.report",
        "service.core",
        "annotator",
        *REWARD_LIGHT,
    ),
    # reward.score: the active reward model scores candidates in the service (active learning, the judge)
    "service.control": (
        "service.control",
        "service.jobs",
        "service.report",
        "service.gateway",
        "service.engine",
        "service.data",
        "service.core",
        "annotator",
        *REWARD_LIGHT,
        "reward.score",
        "policy.packaged",  # which packaged models exist (it converts them in a child process)
    ),
    # reward.evaluate: the reward gate compares a candidate with the active model on held-out rankings
    "service.jobs": (
        "service.jobs",
        "service.engine",
        "service.data",
        "service.core",
        "annotator",
        *REWARD_LIGHT,
        *POLICY_LIGHT,
        "reward.evaluate",
    ),
    "service.report": (
        "service.report",
        "service.data",
        "service.gateway.deploy_records",
        "service.core",
        "annotator",
    ),
    # The Python client: the CLI's own way to the admin API, and the command table it is generated from.
    "service.sdk": ("service.sdk", "service.cli.client", "service.control.commands", "service.core"),
    "service.gateway": ("service.gateway", "service.engine", "service.data", "service.core", *REWARD_LIGHT),
    "service.engine": ("service.engine", "service.core", *REWARD_LIGHT),
    "service.data": ("service.data", "service.core", "annotator", *REWARD_LIGHT),
    "service.core": ("service.core", "reward.configfile", "reward.strength"),
    "annotator": ("annotator", "service.core", "reward.conversation", "reward.strength"),
    "policy": ("policy", "reward"),
    "reward": ("reward",),
    "service": (),  # the package's own __init__
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] in ("__init__", "__main__"):
        parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(parts)


def _layer(module: str) -> str:
    return max((layer for layer in RULES if module == layer or module.startswith(layer + ".")), key=len)


def _ours(name: str) -> bool:
    return name.split(".")[0] in PACKAGES


def imports(sources: dict[str, str] | None = None) -> dict[str, set[tuple[str, int]]]:
    """module -> {(imported module of ours, line)} for the repository (or the given module sources);
    `from pkg import mod` resolves to pkg.mod when it is a module."""
    if sources is None:
        sources = {_module_name(p): p.read_text() for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    out: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for name, source in sources.items():
        for node in ast.walk(ast.parse(source, name)):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [
                    f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in sources else node.module
                    for a in node.names
                ]
            else:
                continue
            out[name] |= {(t, node.lineno) for t in targets if _ours(t)}
    return out


def broken_rules(found: dict[str, set[tuple[str, int]]]) -> list[str]:
    broken = []
    for module, targets in found.items():
        allowed = RULES[_layer(module)]
        for target, line in sorted(targets):
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                broken.append(
                    f"{module} (line {line}) imports {target}: {_layer(module)} may import only "
                    f"{', '.join(allowed) or 'nothing of ours'}"
                )
    return broken


def test_every_import_follows_the_layer_rules() -> None:
    broken = broken_rules(imports())
    assert not broken, "\n".join(broken)


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _ in ts if t != m} for m, ts in imports().items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt) :] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_rules_catch_a_wrong_import() -> None:
    """The checker itself: a lazy import of the service from reward/, the annotator from the gateway, a
    trainer (torch) from a job kind, and the web layer from the control plane (upward)."""
    found = imports(
        {
            "reward.bad": "import os\n\ndef f():\n    from service.core.store import Store\n",
            "service.gateway.bad": "from annotator import queue\n",
            "service.jobs.bad": "from policy import sft\n",
            "service.control.bad": "from service.web.app import create_app\n",
            "annotator": "",
            "annotator.queue": "",
            "policy.sft": "",
            "service.web.app": "",
        }
    )
    broken = broken_rules(found)
    assert [line.split(": ")[0] for line in broken] == [
        "reward.bad (line 4) imports service.core.store",
        "service.gateway.bad (line 1) imports annotator.queue",
        "service.jobs.bad (line 1) imports policy.sft",
        "service.control.bad (line 1) imports service.web.app",
    ]
    assert broken[0].endswith("reward may import only reward")
    assert (
        "service.gateway may import only service.gateway, service.engine, service.data, service.core, "
        in broken[1]
    )


# -- size: no package folder holds more than a fifth of the code ----------------------------------------

MAX_SHARE = 0.20


def folder_lines() -> dict[str, int]:
    """Lines of code per package folder (its own modules, not its subpackages'), over the four packages."""
    lines: dict[str, int] = defaultdict(int)
    for pkg in PACKAGES:
        for p in (REPO / pkg).rglob("*.py"):
            lines[str(p.parent.relative_to(REPO))] += len(p.read_text().splitlines())
    return dict(lines)


def oversized(lines: dict[str, int]) -> list[str]:
    total = sum(lines.values())
    return [
        f"{d} holds {n / total:.0%} of the code's {total} lines (at most {MAX_SHARE:.0%})"
        for d, n in sorted(lines.items())
        if n > MAX_SHARE * total
    ]


def test_no_folder_holds_more_than_a_fifth_of_the_code() -> None:
    assert not oversized(folder_lines())


def test_the_size_rule_catches_a_catch_all() -> None:
    assert oversized({"service/a": 15, "service/b": 85}) == [
        "service/b holds 85% of the code's 100 lines (at most 20%)"
    ]


# -- typed seams: no `Any` carries a service object across a layer ---------------------------------------

# Names that hold service objects (a store, the app's state, the control-plane context, the gateway, ...).
SERVICE_OBJECTS = {
    "state",
    "ctx",
    "context",
    "gateway",
    "store",
    "app",
    "runner",
    "jobs",
    "engines",
    "scorers",
    "serving",
    "services",
    "deployer",
    "supervisor",
    "settings",
    "queue",
    "book",
}


def untyped_seams(sources: dict[str, str] | None = None) -> list[str]:
    """Class attributes annotated plain `Any`, and parameters named for a service object annotated `Any`."""
    if sources is None:
        sources = {_module_name(p): p.read_text() for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    found = []
    for name, source in sources.items():
        for node in ast.walk(ast.parse(source, name)):
            if isinstance(node, ast.ClassDef):
                for stmt in node.body:
                    if isinstance(stmt, ast.AnnAssign) and ast.unparse(stmt.annotation) in (
                        "Any",
                        "Any | None",
                    ):
                        found.append(f"{name}: {node.name}.{ast.unparse(stmt.target)} is typed Any")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]:
                    if (
                        arg.arg in SERVICE_OBJECTS
                        and arg.annotation is not None
                        and ast.unparse(arg.annotation) in ("Any", "Any | None")
                    ):
                        found.append(f"{name}: {node.name}({arg.arg}) is typed Any")
    return found


def test_no_service_object_crosses_a_layer_as_any() -> None:
    seams = untyped_seams()
    assert not seams, "\n".join(seams)


def test_the_seam_rule_catches_any() -> None:
    found = untyped_seams(
        {
            "service.x": "from typing import Any\nclass C:\n    gateway: Any = None\n"
            "def f(state: Any, body: Any) -> None: ...\n"
        }
    )
    assert found == ["service.x: C.gateway is typed Any", "service.x: f(state) is typed Any"]
