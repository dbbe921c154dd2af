"""The gateway's own cost, measured where it can be: `python -m bench.serve --upstream stub`.

A stub OpenAI-compatible server (bench/stub_upstream.py) streams prepared chunks at a fixed rate per
stream and computes nothing. In one run, at each level of concurrent streaming clients, the same
requests go four ways: straight to the stub, through nginx (Debian's, `proxy_buffering off`, a C
reverse proxy as the baseline), through `rankloop serve`'s gateway (the stub deployed as an
`--endpoint`), and through N `rankloop gateway --control` replicas behind a second nginx (`replicas`).
Reported per way: completion tokens/s and its ratio to direct, time to first token p50/p99 and what
each way adds to direct's, and CPU milliseconds per 1,000 tokens of each process (clients, stub,
nginx, gateway, the replicas together, the replicas' nginx). Every level twice (`--arrivals`): with
every client starting at once (a burst of arrivals each round: the worst case, where a Python
process's ~1 ms per request queues up) and with arrivals spread evenly over one request's length (as
independent users arrive; the same number of streams open at once). Needs nginx on PATH
(`apt-get install nginx-light`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from bench.serve import combine, level, measured
from service.core.registry import register_model
from service.core.store import Store
from tests.support.servicectl import admin_headers, running_service, start_gateway

NGINX = """worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  upstream stub {{ {servers} keepalive 1024; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://stub;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""
WAYS = ("direct", "nginx", "gateway", "replicas")
# burst: every client starts at once, 2 requests each (each round a burst of arrivals, the worst case);
# spread: client j starts at j/clients of one request's length, 4 requests each (arrivals spread
# evenly, as independent users' are; time to first token from the 3 sent once all stream)
ARRIVALS = {"burst": ("burst",), "spread": ("spread",), "both": ("burst", "spread")}


def compare(procs: dict, bases: dict, clients: int, arrivals: str, args: argparse.Namespace) -> dict:
    """One level: every way measured `args.repeat` times, interleaved (so drift on this noisy VM hits
    every way), with each way's ratio to direct and the time to first token it adds."""
    spread = arrivals == "spread"
    n = 4 * clients if spread else max(8, 2 * clients)  # every stream starts and ends more than once
    ramp_s = args.tokens / args.rate if spread else 0.0
    runs: dict[str, list[dict]] = {w: [] for w in WAYS}
    for _ in range(args.repeat):
        for way in WAYS:
            base, k, model = bases[way]
            runs[way].append(
                measured(procs, level(base, k, model, clients, n, args.tokens, 0.0, 0, ramp_s=ramp_s))
            )
    row: dict = {"clients": clients, **{w: combine(runs[w]) for w in WAYS}}
    for way in ("nginx", "gateway", "replicas"):
        row[f"{way}_ratio"] = row[way]["tokens_per_s"] / row["direct"]["tokens_per_s"]
        for q in ("p50", "p99"):
            row[f"{way}_ttft_{q}_added_ms"] = row[way][f"ttft_{q}_ms"] - row["direct"][f"ttft_{q}_ms"]
    return row


def summary(row: dict, arrivals: str, replicas: int) -> str:
    cpu = {w: row[w]["cpu_ms_per_1k_tokens"] for w in WAYS}
    return (
        f"{row['clients']:4d} streams ({arrivals}): nginx {row['nginx_ratio']:.3f}x, gateway "
        f"{row['gateway_ratio']:.3f}x direct; TTFT added p50/p99: nginx {row['nginx_ttft_p50_added_ms']:+.1f}/"
        f"{row['nginx_ttft_p99_added_ms']:+.1f} ms, gateway {row['gateway_ttft_p50_added_ms']:+.1f}/"
        f"{row['gateway_ttft_p99_added_ms']:+.1f} ms; CPU ms/1k tokens: nginx {cpu['nginx']['nginx']:.0f}, "
        f"gateway {cpu['gateway']['gateway']:.0f}; {replicas} replicas {row['replicas_ratio']:.3f}x, TTFT "
        f"added {row['replicas_ttft_p50_added_ms']:+.1f}/{row['replicas_ttft_p99_added_ms']:+.1f} ms, CPU "
        f"ms/1k tokens {cpu['replicas']['replicas']:.0f} (+ their nginx {cpu['replicas']['replicas_nginx']:.0f})"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer {url}")


def run(args: argparse.Namespace) -> dict:
    nginx_bin = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx_bin).exists():
        sys.exit("bench.serve --upstream stub needs nginx: apt-get install nginx-light")
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        stub_port, nginx_port = free_port(), free_port()
        stub = subprocess.Popen(
            [sys.executable, "-m", "bench.stub_upstream", "--port", str(stub_port), "--rate", str(args.rate)]
        )
        servers = f"server 127.0.0.1:{stub_port};"
        (Path(tmp) / "nginx.conf").write_text(NGINX.format(tmp=tmp, servers=servers, port=nginx_port))
        nginx = subprocess.Popen([nginx_bin, "-c", f"{tmp}/nginx.conf", "-p", tmp, "-g", "daemon off;"])
        gateways: list[subprocess.Popen] = []
        front: subprocess.Popen | None = None
        try:
            wait_for(f"http://127.0.0.1:{stub_port}/health", stub, "the stub")
            wait_for(f"http://127.0.0.1:{nginx_port}/health", nginx, "nginx")
            data = Path(tmp) / "data"
            (Path(tmp) / "stub-model").mkdir()
            with Store.open(data / "rankloop.duckdb") as store:
                model_id = register_model(
                    store, "policy", Path(tmp) / "stub-model", name="stub", status="active"
                )
            with running_service(data) as url:
                admin = admin_headers(data)
                key = httpx.post(f"{url}/admin/keys", headers=admin, json={"name": "bench"}).json()["key"]
                deploy = {
                    "model_id": model_id,
                    "endpoint": f"http://127.0.0.1:{stub_port}",
                    "endpoint_key": "x",
                }
                httpx.post(f"{url}/admin/deploy", headers=admin, timeout=60, json=deploy).raise_for_status()
                gateway = psutil.Process(json.loads((data / "service.json").read_text())["pid"])
                control = httpx.post(
                    f"{url}/admin/keys", headers=admin, json={"name": "replicas", "scope": "admin"}
                ).json()["key"]
                replica_urls = []
                for i in range(args.replicas):
                    proc, replica_url = start_gateway(url, control, Path(tmp) / f"gw{i}")
                    gateways.append(proc)
                    replica_urls.append(replica_url.removeprefix("http://"))
                front_port, front_dir = free_port(), Path(tmp) / "front"
                front_dir.mkdir()
                servers = " ".join(f"server {u};" for u in replica_urls)
                (front_dir / "nginx.conf").write_text(
                    NGINX.format(tmp=front_dir, servers="least_conn; " + servers, port=front_port)
                )
                front = subprocess.Popen(
                    [nginx_bin, "-c", f"{front_dir}/nginx.conf", "-p", str(front_dir), "-g", "daemon off;"]
                )
                wait_for(f"http://127.0.0.1:{front_port}/health", front, "the replicas' nginx")
                procs = {
                    "bench_clients": [psutil.Process()],
                    "stub": [psutil.Process(stub.pid)],
                    "nginx": [psutil.Process(nginx.pid), *psutil.Process(nginx.pid).children()],
                    "gateway": [gateway],
                    "replicas": [psutil.Process(g.pid) for g in gateways],
                    "replicas_nginx": [psutil.Process(front.pid), *psutil.Process(front.pid).children()],
                }
                bases = {
                    "direct": (f"http://127.0.0.1:{stub_port}/v1", "x", "stub"),
                    "nginx": (f"http://127.0.0.1:{nginx_port}/v1", "x", "stub"),
                    "gateway": (f"{url}/v1", key, "current"),
                    "replicas": (f"http://127.0.0.1:{front_port}/v1", key, "current"),
                }
                for arrivals in ARRIVALS[args.arrivals]:
                    for clients in args.levels:
                        row = compare(procs, bases, clients, arrivals, args)
                        results.setdefault(arrivals, []).append(row)
                        print(summary(row, arrivals, args.replicas), flush=True)
        finally:
            for proc in [*gateways, *([front] if front else [])]:
                proc.terminate()
                proc.wait(15)
            nginx.terminate()
            stub.terminate()
            nginx.wait(10)
            stub.wait(10)
    return {
        "upstream": f"stub, {args.rate:g} tokens/s per stream, {args.tokens} tokens per request",
        "replicas": args.replicas,
        "machine": f"{psutil.cpu_count()} cores",
        "levels": results.get("burst", []),
        # the same levels with arrivals spread over one request's length (bench.serve.level's ramp_s)
        "spread_levels": results.get("spread", []),
    }
