"""The Typer application, its global options and the options several commands share."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Annotated

import typer

from rankstack._console import stderr, stdout
from rankstack._version import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Multi-stage text ranking: index, search, run and evaluate pipelines.")
logger = logging.getLogger("rankstack")

PipelineOption = Annotated[str, typer.Option("--pipeline", "-p", help="Pipeline string, e.g. 'bm25%100'.")]
RayOption = Annotated[str | None, typer.Option("--ray", help="Run on Ray: a cluster address (host:port) or 'local' "
                                               "to start a local instance for this command.")]
RayWorkersOption = Annotated[int | None, typer.Option("--ray-workers", min=1,
                                                      help="Ray actors (default: one per CPU).")]


@contextlib.contextmanager
def maybe_ray(address: str | None, workers: int | None):  # noqa: ANN202
    """Inside: encoding and query runs go to Ray when ``address`` is given; otherwise nothing changes."""
    if not address:
        yield False
        return
    from rankstack.distributed.ray_backend import RayShardEncoder, ray_session
    from rankstack.index.dense import remote_shard_encoding

    with ray_session(address), remote_shard_encoding(lambda config: RayShardEncoder(config, workers)):
        stderr.print(f"running on Ray ({address})")
        yield True


def _version(value: bool) -> None:
    if value:
        stdout.print(f"rankstack {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details to stderr.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
