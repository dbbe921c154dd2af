"""Shared fixtures: offline environment, a tiny model built here, a fresh store.

The tiny model is built by the same code users run (`policy.pretrain`): a tokenizer
trained locally with `tokenizers`, a Llama with head_dim 64, a chat template that
renders system prompts, all saved with `save_pretrained`. Nothing touches the network.
"""

from __future__ import annotations

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["VLLM_NO_USAGE_STATS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
for _key in [k for k in os.environ if k.startswith("RANKLOOP_")]:
    del os.environ[_key]  # tests set their own settings


def _share_cores_between_xdist_workers() -> None:
    """Under `pytest -n N` (pytest-xdist) each worker's processes run torch on one thread per core the
    worker owns, and its vLLM engines bind their OpenMP threads to those cores only; everything else
    floats, so a worker that waits lends its core. Left alone, every process of both workers ran an
    OpenMP team as wide as the machine, the teams spun against each other, and the whole-loop tests took
    twice as long as alone."""
    worker, count = (
        os.environ.get("PYTEST_XDIST_WORKER"),
        int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")),
    )
    if not worker or count < 2 or not hasattr(os, "sched_getaffinity"):
        return
    cores = sorted(os.sched_getaffinity(0))
    index = int(worker.removeprefix("gw"))
    # More workers than cores: each still binds its engines to one core, so that no engine spans them all.
    mine = cores[index % count :: count] if len(cores) >= count else [cores[index % len(cores)]]
    os.environ["OMP_NUM_THREADS"] = str(len(mine))
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, mine))


_share_cores_between_xdist_workers()

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from service.core.store import Store  # noqa: E402

pytest_plugins = ["tests.support.browser"]  # the `browser` fixture (Debian's Chromium)


@pytest.fixture(scope="session", autouse=True)
def allowed_roots(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Jobs read checkpoints and files only inside their data directory unless allowed: tests keep the
    tiny model and their files in pytest's temporary root, so that root is allowed (not /etc)."""
    os.environ["RANKLOOP_ALLOWED_ROOTS"] = json.dumps([str(tmp_path_factory.getbasetemp())])


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~0.5M-parameter chat Llama, briefly pretrained on the generated corpus."""
    from policy.pretrain import PretrainConfig, main

    return main(
        PretrainConfig(
            output_dir=tmp_path_factory.mktemp("models") / "tiny", size="tiny", steps=40, n_transcripts=600
        )
    )


@pytest.fixture
def store(tmp_path: Path):
    with Store.open(tmp_path / "data" / "rankloop.duckdb") as s:
        yield s


@pytest.fixture(autouse=True)
def _fast_tests_start_no_vllm(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make test-fast` starts no vLLM server: a test that starts one in this process must be marked slow.
    (A server started by a `rankloop serve` child is the child's; tests/support/servicectl.py checks those.)"""
    if request.node.get_closest_marker("slow") is not None:
        return
    from service.engine import server

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"{request.node.nodeid} starts a vLLM server: mark it @pytest.mark.slow")

    monkeypatch.setattr(server, "_start", refuse)


WHOLE_LOOP = "tests/e2e/"  # one worker takes all of it: its tests share the session's demo round
# Whole-loop modules with a world of their own: scheduled first too, but on either worker.
OWN_WORLD = ("tests/e2e/test_demo_real.py",)


def scope_of(nodeid: str) -> str:
    module = nodeid.split("::")[0]
    return WHOLE_LOOP if nodeid.startswith(WHOLE_LOOP) and module not in OWN_WORLD else module


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test` runs the suite on every core (pytest-xdist). A worker takes a whole module at a time,
    so a module's fixtures are built once, and the whole-loop tests together, so the demo round is; in the
    order pytest_collection_modifyitems gives. Another `--dist` mode asked for by name is left to xdist."""
    if config.getvalue("dist") not in ("load", "loadscope"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # our order, not the largest module first

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return ByModule(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest work first: the whole-loop tests, then modules with slow tests, then the rest, each
    module kept together; under xdist the many short modules at the end even out the workers' finish."""
    rank: dict[str, int] = {}
    for item in items:
        scope = scope_of(item.nodeid)
        mine = (
            0
            if scope == WHOLE_LOOP or scope in OWN_WORLD
            else 1
            if item.get_closest_marker("slow") is not None
            else 2
        )
        rank[scope] = min(rank.get(scope, mine), mine)
    first = {scope: i for i, scope in reversed(list(enumerate(scope_of(it.nodeid) for it in items)))}
    items.sort(key=lambda it: (rank[scope_of(it.nodeid)], first[scope_of(it.nodeid)]))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The same promise for servers started by children (a `rankloop serve`, a command): every vLLM server
    writes a `vllm-*.log` under pytest's temporary root, so a fast run that left one fails."""
    if session.config.getoption("markexpr") != "not slow" or not hasattr(session.config, "_tmp_path_factory"):
        return
    logs = sorted(session.config._tmp_path_factory.getbasetemp().rglob("vllm-*.log"))
    if logs:
        print(f"\nmake test-fast started {len(logs)} vLLM server(s): {', '.join(str(p) for p in logs[:5])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
