"""vLLM server start-up failures say why; stop leaves no process behind."""

import json
import shutil
import socket
from pathlib import Path

import pytest

from service.core.settings import VLLMOptions
from service.engine.server import EngineStartError, diagnose, start_server
from tests.support.procs import vllm_processes


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(EngineStartError, match="does not exist"):
        start_server(tmp_path / "nope", VLLMOptions(), tmp_path)


def test_file_instead_of_directory(tmp_path: Path) -> None:
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(EngineStartError, match="is a file"):
        start_server(f, VLLMOptions(), tmp_path)


def test_config_without_architectures(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(EngineStartError, match="names no architectures"):
        start_server(tmp_path, VLLMOptions(), tmp_path)


def test_port_in_use(tiny_model: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(EngineStartError, match=f"port {port} on 127.0.0.1 is already in use"):
            start_server(tiny_model, VLLMOptions(), tmp_path, port=port)


def test_diagnose_reads_error_lines() -> None:
    log = "INFO loading safetensors index\nValueError: Model architectures ['Foo'] are not supported for now."
    assert diagnose(log) == "vLLM does not support this model's architecture"
    assert (
        diagnose("OSError: [Errno 98] Address already in use")
        == "the port is already in use by another program"
    )


@pytest.mark.slow
def test_unsupported_architecture_fails_with_reason(tiny_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "weird"
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["architectures"] = ["NoSuchModelForCausalLM"]
    (model / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EngineStartError) as e:
        start_server(model, VLLMOptions(), tmp_path / "logs")
    msg = str(e.value)
    assert "does not support" in msg and "NoSuchModelForCausalLM" in msg  # the reason and the log tail


@pytest.mark.slow
def test_unloadable_weights_fail_with_reason(tiny_model: Path, tmp_path: Path) -> None:
    model = tmp_path / "broken"
    shutil.copytree(tiny_model, model)
    (model / "model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(EngineStartError) as e:
        start_server(model, VLLMOptions(), tmp_path / "logs")
    assert "failed to start" in str(e.value) and "Last lines of" in str(e.value)
    assert vllm_processes(tmp_path / "logs") == set(), "the failed server left an engine or worker behind"
