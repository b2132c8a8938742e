"""``facenas cluster status``: what is deployed and ready, from the Kubernetes API."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from facenas.cli.common import console, print_json, user_errors
from facenas.errors import Unavailable

app = typer.Typer(help="The facenas deployment on Kubernetes.", no_args_is_help=True)


@app.command("status")
@user_errors
def status(
    namespace: Annotated[str, typer.Option(help="Namespace of the deployment.")] = "facenas",
    kubeconfig: Annotated[str | None, typer.Option(help="kubeconfig file (default: ~/.kube/config).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Rollouts, ready replicas and endpoints of every facenas service."""
    from facenas.cluster.status import cluster_status, load_apis

    try:
        apps, core = load_apis(kubeconfig)
        services = cluster_status(apps, core, namespace)
    except Exception as err:  # config, network or API errors: all mean "cannot reach the cluster"
        raise Unavailable(f"cannot read the cluster: {type(err).__name__}: {err}") from err
    if json_out:
        print_json({"namespace": namespace, "services": [s.to_dict() for s in services]})
        return
    table = Table(title=f"facenas in namespace {namespace}")
    for column in ("service", "ready/desired", "updated", "available", "rolled out", "endpoints"):
        table.add_column(column)
    for s in services:
        table.add_row(
            s.name,
            f"{s.ready}/{s.desired}",
            str(s.updated),
            str(s.available),
            "yes" if s.rolled_out else "no",
            ", ".join(s.endpoints),
        )
    console.print(table)
