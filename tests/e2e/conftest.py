"""The session's one demo round (tests/support/demo_round.py), read by every whole-loop test."""

import pytest

from tests.support.demo_round import DemoRound, run_demo_round


@pytest.fixture(scope="session")
def demo_round(tmp_path_factory: pytest.TempPathFactory) -> DemoRound:
    return run_demo_round(tmp_path_factory.mktemp("demo"))
