"""The ``rankstack`` command: thin commands over the library. Data on stdout, logs on stderr.

One module per group of commands; each registers its commands on the shared Typer ``app``.
"""

from __future__ import annotations

import sys

from rich.markup import escape

from rankstack._console import stderr
from rankstack.cli import adapt_commands, live_commands, search_commands, serve_commands  # noqa: F401 - registers commands
from rankstack.cli._app import app
from rankstack.cli.train_commands import train_app
from rankstack.errors import RankstackError, exit_code_for

app.add_typer(train_app, name="train")

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except RankstackError as error:
        stderr.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        sys.exit(exit_code_for(error))
    except KeyboardInterrupt:
        stderr.print("interrupted; nothing half-written was kept")
        sys.exit(130)
