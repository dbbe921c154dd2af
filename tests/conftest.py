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

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from service.core.store import Store  # noqa: E402


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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The same promise for servers started by children (a `rankloop serve`, a command): every vLLM server
    writes a `vllm-*.log` under pytest's temporary root, so a fast run that left one fails."""
    if session.config.getoption("markexpr") != "not slow" or not hasattr(session.config, "_tmp_path_factory"):
        return
    logs = sorted(session.config._tmp_path_factory.getbasetemp().rglob("vllm-*.log"))
    if logs:
        print(f"\nmake test-fast started {len(logs)} vLLM server(s): {', '.join(str(p) for p in logs[:5])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
