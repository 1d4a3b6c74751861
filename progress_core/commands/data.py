"""CLI commands of this area; see progress_core/cli.py."""
import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the progress app."""
