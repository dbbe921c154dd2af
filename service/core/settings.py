"""rankloop's settings: data directory, vLLM server options, ports and keys.

One pydantic model, filled from (lowest to highest precedence) its defaults, a YAML
file (`--config FILE` or `$RANKLOOP_CONFIG`), environment variables and CLI flags.
Environment variables are `RANKLOOP_<FIELD>`, nested with `__`
(`RANKLOOP_VLLM__DTYPE=float32`); `RANKLOOP_DATA` is the data directory.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reward.configfile import ConfigError, format_errors, read_yaml
from reward.strength import DEFAULT_RUBRIC
from service.core.paths import DataPaths

ENV_PREFIX = "RANKLOOP_"
# Variables of ours that are not settings: the settings file, and a gateway replica's control key.
NOT_SETTINGS = ("CONFIG", "CONTROL_KEY")


def _split(value: Any, splitter) -> Any:
    return splitter(value) if isinstance(value, str) else value


class VLLMOptions(BaseModel):
    """How rankloop starts vLLM OpenAI-compatible servers."""

    model_config = ConfigDict(extra="forbid")

    dtype: str = Field("auto", description="weight dtype: auto, float32, bfloat16, float16")
    max_model_len: int | None = Field(None, ge=16, description="context length (default: the model's)")
    enforce_eager: bool = Field(True, description="skip torch.compile: ~20 s start instead of ~50 s on CPU")
    kv_cache_gib: float = Field(1.0, gt=0, description="KV-cache size in GiB (CPU: VLLM_CPU_KVCACHE_SPACE)")
    # vLLM's CPU server defaults to half the offline engine's batch (128 sequences, 2048 tokens);
    # sampling is batch work, and the offline sizes measured ~30% more tokens/s here.
    max_num_seqs: int | None = Field(
        256, ge=1, description="most sequences per engine step (None: vLLM's default)"
    )
    max_num_batched_tokens: int | None = Field(
        4096, ge=16, description="most tokens per engine step (None: vLLM's)"
    )
    block_size: int | None = Field(
        None,
        ge=1,
        description="tokens per KV-cache block; prefix caching reuses whole blocks (None: vLLM's, 128 on CPU)",
    )
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="GPU only: memory fraction")
    tensor_parallel_size: int | None = Field(
        None, ge=1, description="GPUs one server splits the model across"
    )
    cpu_reserved_cores: int | None = Field(
        None,
        ge=0,
        description="CPU only: cores vLLM keeps for its HTTP frontend "
        "(default: 0 on machines with 4 cores or fewer, where giving the engine every core is faster; else vLLM's)",
    )
    engine_nice: int | None = Field(
        None,
        ge=0,
        le=19,
        description="CPU only: niceness of the engine's threads, which spin on every core, so "
        "HTTP (the gateway, the annotator app, vLLM's own frontend) runs first (default: 10 with the CPU build of "
        "vLLM, else 0 = left as started)",
    )
    engine_start: Literal["fork", "spawn"] = Field(
        "fork",
        description="CPU, one worker: how a server starts its engine core: fork (~11 s sooner, "
        "bench/engine_start.py) or spawn (vLLM's choice; always used on GPUs)",
    )
    warm_start: bool = Field(
        True,
        description="CPU build: fork servers from a launcher that has imported vLLM once (~10 s sooner "
        "after the first, bench/engine_start.py) instead of starting each as a new Python process",
    )
    seed: int = Field(0, description="engine-level seed (a per-request seed crashes the CPU engine)")
    startup_timeout_s: float = Field(300.0, gt=0, description="how long to wait for /health")
    extra_args: list[str] = Field(
        default_factory=list, description="more api_server flags, as a list or one string"
    )

    @field_validator("extra_args", mode="before")
    @classmethod
    def _shell_words(cls, v: Any) -> Any:
        return _split(v, shlex.split)


class GatewayOptions(BaseModel):
    """The OpenAI-compatible gateway (/v1)."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(1024, ge=1, description="most tokens a request may ask for (and the default)")
    max_n: int = Field(8, ge=1, le=128, description="most choices per request")
    max_body_kib: int = Field(1024, ge=1, description="largest /v1 request body")
    log_traffic: bool = Field(
        False, description="store every request and response (else only keys that opt in)"
    )
    retention_days: float = Field(30.0, gt=0, description="days logged traffic is kept")
    drain_timeout_s: float = Field(
        120.0, gt=0, description="how long a replaced server may finish its requests"
    )
    traffic_to_annotation: bool = Field(
        True,
        description="served traffic may become prompts (`prompts from-traffic`) and votes rankings; "
        "personal data is taken out first (false: neither, ever)",
    )
    replica_host: str = Field(
        "127.0.0.1",
        description="address the service's own vLLM servers listen on and are reached at; this host's "
        "address lets `rankloop gateway` replicas on other hosts reach them (each keeps its own key)",
    )
    phone_regions: list[str] = Field(
        ["US"],
        description="regions whose national phone formats are found and removed from traffic "
        "(numbers with a country code are found whatever the region)",
    )

    @field_validator("replica_host")
    @classmethod
    def _reachable(cls, v: str) -> str:
        if v in ("0.0.0.0", "::", "") or ":" in v:
            raise ValueError(
                f"{v!r}: give the one IPv4 address or name other hosts reach this one at (e.g. 10.0.0.5); "
                "the servers listen there and replicas are told it"
            )
        return v

    @field_validator("phone_regions")
    @classmethod
    def _known_regions(cls, v: list[str]) -> list[str]:
        import phonenumbers

        bad = [r for r in v if r not in phonenumbers.SUPPORTED_REGIONS]
        if bad:
            raise ValueError(f"unknown region(s) {', '.join(bad)}: use ISO 3166 codes such as US, GB, DE, IN")
        return v


class AnnotationOptions(BaseModel):
    """How the annotator queue hands out tasks."""

    model_config = ConfigDict(extra="forbid")

    lease_s: float = Field(
        600.0, gt=0, description="how long a handed-out task stays reserved for its annotator"
    )
    gold_rate: float = Field(
        0.1, ge=0, le=1, description="share of tasks served from the gold set, when it has any"
    )
    show_sources: bool = Field(
        False, description="show annotators which system prompt and model wrote each candidate"
    )
    judges_count: bool = Field(
        False,
        description="model judges' rankings count toward a task's required rankings "
        "(else judges rank every task beside people, and people's overlap is unchanged)",
    )
    rubric: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RUBRIC),
        max_length=12,
        description="attributes an annotator may rate each candidate on, 0-4 (HelpSteer2's by default)",
    )
    quiz_size: int = Field(
        0,
        ge=0,
        description="gold tasks a new annotator must answer before real tasks (0: no qualification quiz)",
    )
    quiz_pass: float = Field(
        0.8, ge=0, le=1, description="mean pairwise agreement with gold that passes the quiz"
    )
    overlap_tau: float | None = Field(
        None,
        ge=-1,
        le=1,
        description="ask for one more ranking while a task's rankers' mean Kendall tau is below this "
        "(none: every task gets its required rankings, no more)",
    )
    overlap_cap: int = Field(
        5, ge=2, description="most rankings a contested task gets; past it the task goes to a reviewer"
    )

    @field_validator("rubric")
    @classmethod
    def _attribute_names(cls, v: list[str]) -> list[str]:
        bad = [a for a in v if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", a)]
        if bad or len(set(v)) != len(v):
            raise ValueError(
                f"rubric attributes must be distinct lower-case names (letters, digits, _); got {v}"
            )
        return v


class LaunchOptions(BaseModel):
    """Where a job's work runs (the `jobs` settings; a job may override them): on this machine
    (`local`), a trainer as N processes under `accelerate launch` (`accelerate`), or a trainer or a
    sampling job's vLLM server as a job on a Ray cluster (`ray`, Ray's Jobs API), reading its inputs
    from and writing its outputs to storage both sides see."""

    model_config = ConfigDict(extra="forbid")

    launcher: Literal["local", "accelerate", "ray"] = Field(
        "local", description="local, accelerate (N processes here) or ray (a job on a Ray cluster)"
    )
    num_processes: int = Field(2, ge=1, le=64, description="accelerate: processes (one per GPU)")
    accelerate_config: Path | None = Field(None, description="accelerate: its config file (default: none)")
    ray_address: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+(:[0-9]{1,5})?/?$",
        description="ray: the cluster's dashboard address, e.g. http://head:8265",
    )
    gpus: float = Field(0, ge=0, description="ray: GPUs the job's process (trainer or vLLM server) asks for")
    cpus: float = Field(1, ge=0, description="ray: CPUs the job's process asks for")
    memory_gib: float | None = Field(None, gt=0, description="ray: memory the job's process asks for, GiB")
    storage_root: Path | None = Field(
        None,
        description="ray: a directory both the service and the workers see at this path; a job's snapshot, "
        "base checkpoint, output and exchange files must lie in it (default: the data directory)",
    )
    python: str | None = Field(
        None, description="ray: the Python that runs the job's process on a worker (default: this one's path)"
    )


class BackupOptions(BaseModel):
    """Scheduled backups while the service runs (`rankloop backup` makes one at any time)."""

    model_config = ConfigDict(extra="forbid")

    every_h: float | None = Field(None, gt=0, description="hours between scheduled backups (none: off)")
    keep: int = Field(7, ge=1, description="scheduled backups kept (the oldest are deleted)")
    dir: Path | None = Field(None, description="where scheduled backups go (default <data>/backups)")


class MetricsOptions(BaseModel):
    """Prometheus metrics (`GET /metrics`) and logs."""

    model_config = ConfigDict(extra="forbid")

    public: bool = Field(False, description="/metrics answers without the admin key")
    listen: str | None = Field(
        None,
        pattern=r"^[^\s:]*:[0-9]{1,5}$",
        description="also serve the metrics, with no key, on this HOST:PORT (a private scrape address)",
    )


class Settings(BaseModel):
    """Everything `rankloop` needs to know about where it runs."""

    model_config = ConfigDict(extra="forbid")

    data_dir: Path = Field(Path("rankloop-data"), description="data directory (--data, $RANKLOOP_DATA)")
    host: str = Field("127.0.0.1", description="address `rankloop serve` listens on")
    port: int = Field(8000, ge=0, le=65535, description="port of `rankloop serve`")
    api_keys: list[str] = Field(
        default_factory=list, description="keys accepted on /v1/* (comma-separated in env)"
    )
    admin_key: str | None = Field(
        None,
        min_length=32,
        description="key for /admin/* (at least 32 characters; default: generated into <data>/admin.key)",
    )
    max_upload_mib: int = Field(
        256, ge=1, description="largest file the admin API accepts (prompts, imports)"
    )
    max_body_kib: int = Field(
        256, ge=1, description="largest request body anywhere else (rankings, logins, params)"
    )
    session_ttl_h: float = Field(
        12.0, gt=0, description="hours a login (API token or app session) stays valid"
    )
    allowed_roots: list[Path] = Field(
        default_factory=list,
        description="directories outside the data "
        "directory that jobs may read checkpoints and files from and write into",
    )
    vllm: VLLMOptions = Field(default_factory=VLLMOptions)
    gateway: GatewayOptions = Field(default_factory=GatewayOptions)
    annotation: AnnotationOptions = Field(default_factory=AnnotationOptions)
    metrics: MetricsOptions = Field(default_factory=MetricsOptions)
    backup: BackupOptions = Field(default_factory=BackupOptions)
    jobs: LaunchOptions = Field(default_factory=LaunchOptions)
    log_format: Literal["text", "json"] = Field(
        "text", description="the service's logs on stderr: text, or JSON lines with request and trace ids"
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        return _split(v, lambda s: [k.strip() for k in s.split(",") if k.strip()])

    @property
    def paths(self) -> DataPaths:
        """Every path under the data directory."""
        return DataPaths(self.data_dir)


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


def env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    """`RANKLOOP_VLLM__DTYPE=x` -> {"vllm": {"dtype": "x"}}; `RANKLOOP_DATA` -> data_dir."""
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key[len(ENV_PREFIX) :] in NOT_SETTINGS:
            continue
        path = key[len(ENV_PREFIX) :].lower().split("__")
        if path == ["data"]:
            path = ["data_dir"]
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _list_value(key, value) if value.lstrip().startswith("[") else value
    return out


def _list_value(key: str, value: str) -> Any:
    """A list setting from the environment is JSON: RANKLOOP_ALLOWED_ROOTS='["/models", "/data"]'."""
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{key}: a list is written as JSON, e.g. '[\"/models\"]' ({e})") from None


def load_settings(
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Defaults < YAML file < environment < `overrides` (CLI flags; None values are ignored)."""
    environ = os.environ if environ is None else environ
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    data = read_yaml(config_file) if config_file else {}
    data = _deep_merge(data, env_values(environ))
    data = _deep_merge(data, {k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return Settings.model_validate(data)
    except ValidationError as e:
        raise ConfigError(
            format_errors(e, f"settings from {config_file or 'defaults'}, env and flags")
        ) from None
