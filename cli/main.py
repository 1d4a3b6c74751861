"""The ``progress`` command line.

Each area registers its own commands (``cli/*.py`` define ``register(app)``), so the
CLI is one entry point whose ``--help`` lists every stage a user can run by hand. Errors derived from
:class:`~progress_core.errors.ProgressError` print as one line and exit with status 1.
"""

from __future__ import annotations

import sys

import typer

from progress_core.errors import ProgressError

app = typer.Typer(
    name="progress",
    help=(
        "progress-flows: PROGRESS learning-progress data selection for visual instruction tuning.\n\n"
        "Stages can be run one by one (prepare, manifest, features, cluster, warmup, select, train, probe)"
        " or all together as a resumable Prefect flow (run)."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """progress-flows command line."""


@app.command()
def version() -> None:
    """Print the installed progress-flows version."""
    from importlib.metadata import version as _v

    typer.echo(_v("progress-flows"))


def _register_all() -> None:
    from cli import compare, data, run, stages, training

    for module in (data, stages, training, run, compare):
        module.register(app)


_register_all()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning :class:`ProgressError` into a one-line message."""
    try:
        app(args=argv, standalone_mode=False)
    except ProgressError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 1
    except SystemExit as exc:  # typer/click exits
        return int(exc.code or 0)
    except Exception as exc:  # click usage errors
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            typer.echo("aborted", err=True)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
