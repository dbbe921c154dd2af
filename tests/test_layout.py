"""The layout's import rules, read from the source with `ast` (nothing is imported).

Layers, and what each may import of ours (arrows point one way):

    service.cli   -> service.web (to start `serve`), service.loop, service.core, annotator, reward, policy
    service.web   -> service.loop, service.core, annotator, reward
    service.loop  -> service.core, annotator, reward, policy
    annotator     -> service.core, reward.conversation (the conversation format)
    service.core  -> reward.configfile (the YAML/flags helper the trainers share)
    policy        -> reward
    reward        -> nothing of ours

Every import counts, the ones inside functions too, so no cycle can hide behind a lazy import.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("service", "annotator", "reward", "policy")
RULES: dict[str, tuple[str, ...]] = {
    "service.cli": ("service.cli", "service.web", "service.loop", "service.core", "annotator", "reward", "policy"),
    "service.web": ("service.web", "service.loop", "service.core", "annotator", "reward"),
    "service.loop": ("service.loop", "service.core", "annotator", "reward", "policy"),
    "service.core": ("service.core", "reward.configfile"),
    "annotator": ("annotator", "service.core", "reward.conversation"),
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


def imports() -> dict[str, set[tuple[str, int]]]:
    """module -> {(imported module of ours, line)}; `from pkg import mod` resolves to pkg.mod when it is one."""
    modules = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    out: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                           for a in node.names]
            else:
                continue
            out[name] |= {(t, node.lineno) for t in targets if _ours(t)}
    return out


def test_every_import_follows_the_layer_rules() -> None:
    broken = []
    for module, targets in imports().items():
        allowed = RULES[_layer(module)]
        for target, line in sorted(targets):
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                broken.append(f"{module} (line {line}) imports {target}: {_layer(module)} may import only "
                              f"{', '.join(allowed) or 'nothing of ours'}")
    assert not broken, "\n".join(broken)


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _ in ts if t != m} for m, ts in imports().items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_rules_catch_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: a reward module importing the service is reported with its line."""
    tree = ast.parse("import os\n\ndef f():\n    from service.core.store import Store\n")
    found = [(n.module, n.lineno) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert found == [("service.core.store", 4)]
    allowed = RULES[_layer("reward.train")]
    assert not any("service.core.store".startswith(a) for a in allowed)
