"""The `rankloop` subcommand tree: groups (`keys`, `models`, ...) and commands, each command with
the common `--data`/`--config` flags and, when it runs a row of the command table, the flags of that
row's parameter model (service/cli/flags.py). Each command module adds its commands through it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from typing import Any

from service.cli.flags import Opt, add_model_flags, flag_values
from service.control.commands import COMMANDS
from service.core.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], None]
Subparsers = argparse._SubParsersAction  # what add_subparsers returns


class CommandTree:
    def __init__(
        self,
        root: argparse.ArgumentParser,
        common: argparse.ArgumentParser,
        data_only: argparse.ArgumentParser,
    ) -> None:
        self.common, self.data_only = common, data_only  # --data and --config; --data alone
        self.sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
        self.groups: dict[str, Subparsers] = {}

    def group(self, name: str, help: str, dest: str = "action") -> None:
        """A command with subcommands (`rankloop keys create`); commands join it by name."""
        self.groups[name] = self.sub.add_parser(name, help=help).add_subparsers(dest=dest, required=True)

    def command(
        self,
        name: str,
        fn: Handler,
        help: str,
        group: str | None = None,
        *,
        settings_flag: bool = True,
        op: str | None = None,
        opts: Mapping[str, Opt] | None = None,
        skip: Mapping[str, str] | None = None,
    ) -> argparse.ArgumentParser:
        """A command that runs `fn(args, settings)`. `op`: the command-table row it runs, whose
        parameters become its flags (`opts`: how some appear; `skip`: those it does not take from
        flags, with why). settings_flag=False: the command's own --config means
        something else (a job's config), so settings come from `rankloop --config FILE COMMAND` or
        RANKLOOP_CONFIG."""
        parent = self.groups[group] if group else self.sub
        p: argparse.ArgumentParser = parent.add_parser(
            name, parents=[self.common if settings_flag else self.data_only], help=help, description=help
        )
        p.set_defaults(fn=fn)
        if op is not None:
            add_model_flags(p, COMMANDS[op].params, opts=opts, skip=skip, op=op)
        return p


def op_params(args: argparse.Namespace, op: str) -> dict[str, Any]:
    """The parameters of the command-table row `op` given on the command line."""
    return flag_values(args, COMMANDS[op].params)
