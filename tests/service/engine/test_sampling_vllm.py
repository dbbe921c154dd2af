"""The sampler against a real vLLM server on the tiny model: every row and its metadata,
tasks, reruns that duplicate nothing, a server that dies mid-run, and a clean stop."""

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

from reward.conversation import from_row
from service.core.registry import find_or_register
from service.core.settings import VLLMOptions
from service.core.store import Store
from service.data.prompts import add_prompts, add_system_prompts, latest_system_prompts
from service.data.tasks import build_tasks
from service.engine import sampler
from service.engine.sampler import Endpoint, SamplingError, SamplingParams, messages, sample
from service.engine.server import engine_nice, is_cpu_build, start_server

pytestmark = pytest.mark.slow
# The third prompt is a three-turn conversation: the whole of it goes to the server, after the system prompt.
PROMPTS = [
    "Tell me about cats.",
    "Describe bread.",
    [
        {"role": "user", "content": "I am planning a trip."},
        {"role": "assistant", "content": "Where to?"},
        {"role": "user", "content": "Why do people like trains?"},
    ],
]
SYSTEM = {"brief": "Answer in one short sentence.", "friendly": "Answer in a warm and friendly way."}


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = start_server(tiny_model, VLLMOptions(dtype="float32"), tmp_path_factory.mktemp("vllm-logs"))
    yield srv
    srv.stop()


@pytest.fixture
def filled(store: Store, tiny_model: Path):
    add_prompts(store, PROMPTS)
    add_system_prompts(store, SYSTEM)
    prompts = store.query("SELECT id, text, messages FROM prompts ORDER BY id")
    sps = latest_system_prompts(store, ["brief", "friendly", "none"])
    return store, prompts, sps, find_or_register(store, tiny_model)


def test_samples_prompts_x_system_prompts_x_k(server, filled, tiny_model: Path) -> None:
    from transformers import AutoTokenizer

    store, prompts, sps, model_id = filled
    params = SamplingParams(max_tokens=12, temperature=0.8)
    report = sample(
        store,
        Endpoint(model_id, server.served_name, server.base_url),
        prompts,
        sps,
        3,
        params,
        progress=False,
    )
    assert (report.requested, report.generated, report.already_stored) == (27, 27, 0)
    rows = store.query("SELECT * FROM samples ORDER BY prompt_id, system_prompt_id, sample_index")
    assert len(rows) == 27
    assert {(r["prompt_id"], r["system_prompt_id"], r["sample_index"]) for r in rows} == {
        (p["id"], s["id"], i) for p in prompts for s in sps for i in range(3)
    }
    tok = AutoTokenizer.from_pretrained(tiny_model)
    text_of = {p["id"]: from_row(p["text"], p["messages"]) for p in prompts}
    assert [len(c) for c in text_of.values()] == [1, 1, 3]
    sp_of = {s["id"]: s["text"] for s in sps}
    for r in rows:
        assert r["model_id"] == model_id
        assert json.loads(r["params"]) == params.model_dump() and r["params_hash"] == params.key()
        chat = messages(sp_of[r["system_prompt_id"]], text_of[r["prompt_id"]])
        # The token count vLLM reports is that of the whole chat through the checkpoint's template.
        assert r["prompt_tokens"] == len(
            tok.apply_chat_template(chat, add_generation_prompt=True)["input_ids"]
        )
        assert 1 <= r["completion_tokens"] <= 12
        assert r["finish_reason"] in ("stop", "length")
        assert r["finish_reason"] == "stop" or r["completion_tokens"] == 12  # "length" means the cap was hit
        assert isinstance(r["text"], str) and r["latency_ms"] > 0
    assert report.completion_tokens == sum(r["completion_tokens"] for r in rows)

    again = sample(
        store,
        Endpoint(model_id, server.served_name, server.base_url),
        prompts,
        sps,
        3,
        params,
        progress=False,
    )
    assert (again.generated, again.already_stored) == (0, 27)
    more = sample(
        store,
        Endpoint(model_id, server.served_name, server.base_url),
        prompts,
        sps,
        4,
        params,
        progress=False,
    )
    assert (more.generated, more.already_stored) == (9, 27)  # only sample_index 3 was missing

    weights = {(s["id"], model_id): 1.0 for s in sps}
    task_ids = build_tasks(store, [p["id"] for p in prompts], weights, params.key(), size=3)
    assert len(task_ids) == 12  # 12 samples per prompt, 3 per task
    arm = {r["id"]: r["system_prompt_id"] for r in store.query("SELECT id, system_prompt_id FROM samples")}
    for t in store.query("SELECT * FROM tasks"):
        assert sorted(arm[s] for s in t["sample_ids"]) == sorted(s["id"] for s in sps)  # one per arm


def test_server_dying_mid_run(server, filled, tiny_model: Path, tmp_path: Path, monkeypatch) -> None:
    store, prompts, sps, model_id = filled
    params = SamplingParams(max_tokens=96, temperature=1.0)
    doomed = start_server(tiny_model, VLLMOptions(dtype="float32"), tmp_path)
    group = [p for p in psutil.process_iter() if _pgid(p) == doomed.process.pid]
    store_batch = sampler._store_batch

    def kill_after_the_first_batch(*args, **kw) -> list[int]:
        # The API server dies (its engine is orphaned) right after the first batch is stored,
        # however fast or loaded the machine is: the rest of the 144 are still to come.
        ids = store_batch(*args, **kw)
        if doomed.process.poll() is None:
            os.kill(doomed.process.pid, signal.SIGKILL)
        return ids

    monkeypatch.setattr(sampler, "_store_batch", kill_after_the_first_batch)
    with pytest.raises(SamplingError) as e:
        # Two requests (of n = 16) at a time, so samples are stored batch by batch.
        sample(
            store,
            Endpoint(model_id, doomed.served_name, doomed.base_url),
            prompts,
            sps,
            16,
            params,
            progress=False,
            concurrency=2,
        )
    monkeypatch.setattr(sampler, "_store_batch", store_batch)
    assert "run the same command again" in str(e.value)
    stored = store.query("SELECT * FROM samples")
    assert sampler.FLUSH_EVERY <= len(stored) < 144, f"{len(stored)} samples stored"
    assert all(r["completion_tokens"] >= 1 and r["finish_reason"] in ("stop", "length") for r in stored)
    doomed.stop()
    assert [p for p in group if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []

    rerun = sample(
        store,
        Endpoint(model_id, server.served_name, server.base_url),
        prompts,
        sps,
        16,
        params,
        progress=False,
    )
    assert rerun.already_stored == len(stored) and rerun.generated == 144 - len(stored)
    assert store.scalar("SELECT count(*) FROM samples") == 144
    assert (
        store.scalar("SELECT count(DISTINCT (prompt_id, system_prompt_id, sample_index)) FROM samples") == 144
    )


def _pgid(p: psutil.Process) -> int | None:
    try:
        return os.getpgid(p.pid)
    except (ProcessLookupError, psutil.Error):
        return None


def test_engine_threads_yield_to_http(server) -> None:
    """On CPU the engine's threads (which spin on every core) run at niceness 10, its HTTP frontend at
    the niceness it was started with, so requests and streamed tokens are not kept waiting for a core."""
    started = os.getpriority(os.PRIO_PROCESS, 0)
    frontend = psutil.Process(server.process.pid)
    engines = frontend.children(recursive=True)
    assert engines, "the server should have an engine process"
    niceness = {os.getpriority(os.PRIO_PROCESS, t.id) for p in engines for t in p.threads()}
    assert niceness == {max(engine_nice(VLLMOptions()), started)}, niceness
    assert engine_nice(VLLMOptions()) == (10 if is_cpu_build() else 0)
    assert os.getpriority(os.PRIO_PROCESS, frontend.pid) == started


def test_stop_leaves_no_engine_or_worker(server) -> None:
    """Runs last in this module: it stops the module's server."""
    members = [p for p in psutil.process_iter() if _pgid(p) == server.process.pid]
    names = {p.name() for p in members}
    assert any(n.startswith("VLLM::EngineCore") for n in names), names
    server.stop()
    assert not server.alive()
    assert [p for p in members if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    server.stop()  # stopping twice is harmless
