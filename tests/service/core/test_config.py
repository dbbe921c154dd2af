"""Settings precedence (defaults < YAML < env < flags) and field-level errors."""

from pathlib import Path

import pytest

from reward.configfile import ConfigError
from service.core.settings import load_settings


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s.data_dir == Path("rankloop-data")
    assert s.paths.db == Path("rankloop-data/rankloop.duckdb")
    assert s.vllm.enforce_eager is True and s.port == 8000


def test_yaml_then_env_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "rankloop.yaml"
    cfg.write_text("data_dir: /from/yaml\nport: 9001\nvllm:\n  dtype: float32\n  kv_cache_gib: 2\n")
    s = load_settings(cfg, environ={})
    assert (s.data_dir, s.port, s.vllm.dtype, s.vllm.kv_cache_gib) == (
        Path("/from/yaml"),
        9001,
        "float32",
        2.0,
    )

    env = {"RANKLOOP_DATA": "/from/env", "RANKLOOP_VLLM__DTYPE": "bfloat16", "RANKLOOP_API_KEYS": "a, b"}
    s = load_settings(cfg, environ=env)
    assert (s.data_dir, s.port, s.vllm.dtype, s.api_keys) == (Path("/from/env"), 9001, "bfloat16", ["a", "b"])
    assert s.vllm.kv_cache_gib == 2.0  # nested merge keeps the file's other vLLM fields

    s = load_settings(
        cfg, overrides={"data_dir": "/from/flag", "port": None, "vllm": {"dtype": "float16"}}, environ=env
    )
    assert (s.data_dir, s.port, s.vllm.dtype) == (Path("/from/flag"), 9001, "float16")


def test_config_file_from_env(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("vllm:\n  extra_args: --max-num-seqs 8 --block-size 16\n")
    s = load_settings(environ={"RANKLOOP_CONFIG": str(cfg)})
    assert s.vllm.extra_args == ["--max-num-seqs", "8", "--block-size", "16"]


@pytest.mark.parametrize(
    "text, field",
    [
        ("port: -1\n", "port"),
        ("vllm:\n  kv_cache_gib: 0\n", "vllm.kv_cache_gib"),
        ("no_such_field: 1\n", "no_such_field"),
        ("vllm:\n  enforce_eager: maybe\n", "vllm.enforce_eager"),
        ("gateway:\n  replica_host: 0.0.0.0\n", "gateway.replica_host"),  # an address others can reach
    ],
)
def test_bad_values_name_the_field(tmp_path: Path, text: str, field: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_settings(cfg, environ={})
    assert f"{field}:" in str(e.value)


def test_bad_env_names_the_field() -> None:
    with pytest.raises(ConfigError, match="port"):
        load_settings(environ={"RANKLOOP_PORT": "eighty"})
    # A gateway replica's control key is ours but not a setting.
    assert load_settings(environ={"RANKLOOP_CONTROL_KEY": "rk-x"}).port == 8000


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(bad, environ={})


def test_list_settings_from_env_are_json() -> None:
    s = load_settings(environ={"RANKLOOP_ALLOWED_ROOTS": '["/models", "/scratch"]'})
    assert s.allowed_roots == [Path("/models"), Path("/scratch")]
    with pytest.raises(ConfigError, match=r"RANKLOOP_ALLOWED_ROOTS: a list is written as JSON"):
        load_settings(environ={"RANKLOOP_ALLOWED_ROOTS": "[/models"})
