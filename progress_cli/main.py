"""The ``progress`` command line.

Each area registers its own commands (``progress_cli/*.py`` define ``register(app)``), so the
CLI is one entry point whose ``--help`` lists every stage a user can run by hand. Every error prints as
one line per problem (``error: ...``) and exits with status 1; the traceback is shown only with ``--debug``
(anywhere on the command line) or ``PROGRESS_DEBUG=1``.
"""

from __future__ import annotations

import os
import sys
import threading
import traceback

import typer

from progress_cli.interrupts import RunInterrupted
from progress_cli.usage import CommandGroup, usage_failure
from progress_core.environment import apply_defaults
from progress_core.errors import ProgressError

DEBUG_ENV = "PROGRESS_DEBUG"


app = typer.Typer(
    name="progress",
    cls=CommandGroup,
    help=(
        "progress-flows: PROGRESS learning-progress data selection for visual instruction tuning.\n\n"
        "Stages can be run one by one (prepare, manifest, features, cluster, warmup, select, train, probe)"
        " or all together as a resumable Prefect flow (run).\n\n"
        "Errors print as one line each; add --debug anywhere for the full traceback."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(
        False, "--debug", metavar="", help="Show the full traceback of an error (also PROGRESS_DEBUG=1)."
    ),
) -> None:
    """progress-flows command line."""


@app.command()
def version() -> None:
    """Print the installed progress-flows version."""
    from importlib.metadata import version as _v

    typer.echo(_v("progress-flows"))


def _register_all() -> None:
    from progress_cli import compare, data, run, stages, training

    for module in (data, stages, training, run, compare):
        module.register(app)


_register_all()


def debug_enabled() -> bool:
    """True when tracebacks were asked for (``--debug`` or ``PROGRESS_DEBUG=1``)."""
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def _error(message: str) -> None:
    for line in str(message).splitlines() or [""]:
        typer.secho(f"error: {line}", fg=typer.colors.RED, err=True)


def _exit_without_joining(code: int) -> None:
    """End the process now when stages abandoned by an interrupt still run in threads.

    Python joins every worker thread at exit, so a command interrupted while feature shards run would wait
    for each shard to finish; their outputs are atomic (docs/architecture.md#stage-contract), so the process
    ends as a kill would, after its error line.
    """
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI; every error becomes one line per problem and exit status 1."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args = [a for a in args if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"
    apply_defaults()
    try:
        returned = app(args=args, standalone_mode=False)
    except ProgressError as exc:
        if debug_enabled():
            traceback.print_exc()
        _error(str(exc))
        if argv is None and isinstance(exc, RunInterrupted):
            _exit_without_joining(exc.exit_code)
        return getattr(exc, "exit_code", 1)
    except SystemExit as exc:  # typer/click exits
        return int(exc.code or 0) if isinstance(exc.code, int) or exc.code is None else 1
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        return 130
    except typer.TyperException as exc:
        return usage_failure(exc, _error)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            return 1
        if debug_enabled():
            traceback.print_exc()
        first = (str(exc).strip().splitlines() or [""])[0]
        hint = "" if debug_enabled() else " (add --debug for the traceback)"
        _error(f"{type(exc).__name__}: {first}{hint}")
        return 1
    if returned == 130:
        _error("interrupted")
    return returned if isinstance(returned, int) and not isinstance(returned, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
