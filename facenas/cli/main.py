"""``facenas``: architectures, data, latency, training and the demo from the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from facenas.cli import arch as arch_cmd
from facenas.cli import cluster as cluster_cmd
from facenas.cli import data as data_cmd
from facenas.cli import run as run_cmd
from facenas.cli import search as search_cmd

app = typer.Typer(
    name="facenas",
    help="Hardware-aware multi-objective NAS for face segmentation (Archai's hgnet space).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(arch_cmd.app, name="arch")
app.add_typer(data_cmd.app, name="data")
app.add_typer(search_cmd.app, name="search")
app.add_typer(cluster_cmd.app, name="cluster")
app.command("latency")(run_cmd.latency)
app.command("train")(run_cmd.train)
app.command("demo")(run_cmd.demo)


@app.callback()
def _main(
    log_level: Annotated[str, typer.Option(help="Log level for facenas loggers.")] = "WARNING",
) -> None:
    from facenas.logs import configure_logging

    configure_logging(log_level)


__all__ = ["Path", "app"]
