"""A command line the CLI cannot parse gets one line saying what to type instead, never an exception's class
name: no command, an unknown command (Click names the closest), a missing or bad option (with its ``--help``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from typer.core import TyperGroup


def _command_path(ctx: Any) -> str:
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(["progress", *reversed(names)])


def usage_failure(exc: Exception, error: Callable[[str], None]) -> int:
    """Print one ``error:`` line for a Typer/Click usage problem and return its exit status (2 for usage)."""
    ctx = getattr(exc, "ctx", None)
    code = int(getattr(exc, "exit_code", 2) or 2)
    if type(exc).__name__ == "NoArgsIsHelpError":
        command = _command_path(ctx)
        error(f"no command given: pick one of the commands above (`{command} COMMAND --help` shows its options)")
        return code
    format_message = getattr(exc, "format_message", None)
    message = (format_message() if callable(format_message) else str(exc)) or type(exc).__name__
    error(f"{message} (see `{_command_path(ctx)} --help`)")
    return code


def _as_flag(option):
    if option is not None:
        option.metavar = ""
    return option


class CommandGroup(TyperGroup):
    """Every command group of the CLI: ``--help`` shown as a flag everywhere, not as a ``<bool>`` value to give."""

    def get_help_option(self, ctx):
        return _as_flag(super().get_help_option(ctx))

    def get_command(self, ctx, cmd_name):
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _as_flag(command.get_help_option(ctx))
        return command
