"""`python -m service.engine.remote_serve --announce FILE --model DIR --served-name NAME --options JSON`:
a vLLM server on a Ray worker for a sampling job (service/engine/remote.py submits it). It picks a free
port on the worker, writes where it listens to FILE (on storage the service sees too), then becomes the
server (exec), so stopping the Ray job stops the server."""

from __future__ import annotations

import argparse
import json
import os
import socket
from pathlib import Path

from service.core.paths import write_atomic
from service.core.settings import VLLMOptions
from service.engine.server import engine_env, free_port, server_command, worker_in_engine_core


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--announce", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--served-name", required=True)
    ap.add_argument("--options", required=True, help="the vLLM options as JSON")
    args = ap.parse_args()
    opts = VLLMOptions.model_validate_json(args.options)
    port = free_port("0.0.0.0")
    # The address other machines reach this worker at (the loopback one on a one-machine cluster).
    host = socket.gethostbyname(socket.gethostname())
    env = engine_env(opts)
    env.pop("VLLM_SERVER_DEV_MODE", None)
    if worker_in_engine_core(opts):
        env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    write_atomic(args.announce, json.dumps({"host": host, "port": port}).encode())
    cmd = server_command(args.model, args.served_name, "0.0.0.0", port, opts)
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
