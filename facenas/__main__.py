"""``python -m facenas`` runs the CLI."""

from facenas.cli.main import app

app()
