"""`rankloop gateway --control URL`: a stateless /v1 gateway replica of the service at URL.

    rankloop keys create gw --scope admin          # its control key, once
    RANKLOOP_CONTROL_KEY=rk-... rankloop gateway --control http://service:8000 --port 8101 --spool /var/lib/gw1

Run N of them behind a load balancer (examples/gateway/nginx.conf); each needs its own --spool.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from service.cli.tree import CommandTree
from service.core.errors import UserError
from service.core.settings import Settings


def cmd_gateway(args: argparse.Namespace, settings: Settings) -> None:
    from service.web.gateway_replica import run_gateway  # the web layer only loads to serve

    if args.control_key_file:
        try:
            key = Path(args.control_key_file).read_text().strip()
        except OSError as e:
            raise UserError(f"cannot read --control-key-file {args.control_key_file}: {e.strerror}") from None
    else:
        key = os.environ.get("RANKLOOP_CONTROL_KEY", "").strip()
    if not key:
        raise UserError(
            "the gateway needs the service's admin key or an admin-scope API key (`rankloop keys create NAME "
            "--scope admin`) in $RANKLOOP_CONTROL_KEY or --control-key-file FILE"
        )
    if not args.control.startswith(("http://", "https://")):
        raise UserError(f"--control {args.control!r}: give the service's URL, e.g. http://127.0.0.1:8000")
    run_gateway(
        args.control,
        key,
        args.host,
        args.port,
        Path(args.spool),
        args.log_format or settings.log_format,
        args.metrics_public,
    )


def add_parsers(tree: CommandTree) -> None:
    p = tree.command(
        "gateway",
        cmd_gateway,
        "run the /v1 gateway alone, as a stateless replica of a running service (`--control URL`)",
    )
    p.add_argument("--control", required=True, metavar="URL", help="the running service (`rankloop serve`)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8100, help="port to listen on (0: any free one; default 8100)")
    p.add_argument(
        "--spool",
        default="rankloop-gateway",
        metavar="DIR",
        help="where traffic waits until the service has stored it; one per replica (default ./rankloop-gateway)",
    )
    p.add_argument(
        "--control-key-file", metavar="FILE", help="file holding the control key (else $RANKLOOP_CONTROL_KEY)"
    )
    p.add_argument(
        "--log-format", choices=["text", "json"], help="log lines as text or JSON (default: settings)"
    )
    p.add_argument("--metrics-public", action="store_true", help="serve /metrics without a key")
