"""`churnlens apikey`: API keys for CRM clients."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.callback()
def apikey() -> None:
    """API keys for CRM clients (the server stores only their SHA-256 digests)."""


@app.command("new")
def new(
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only 'KEY ENTRY' on one line")
    ] = False,
    scope: Annotated[
        str | None, typer.Option("--scope", help="Limit the key: 'score' (read) or 'ingest' "
                                 "(write history); default: everything")
    ] = None,
) -> None:
    """Print a fresh API key and the SHA-256 digest to put in CHURNLENS_API_KEYS."""
    from serving.auth import Scope, new_key

    if scope is not None and scope not in {s.value for s in Scope}:
        raise typer.BadParameter(f"unknown scope {scope!r}; expected score or ingest",
                                 param_hint="--scope")
    key, digest = new_key()
    entry = digest if scope is None else f"{digest}:{scope}"
    if quiet:
        typer.echo(f"{key} {entry}")
        return
    typer.echo(f"key:    {key}")
    typer.echo(f"digest: {digest}")
    typer.echo("")
    typer.echo("Give the key to the CRM client (sent as 'Authorization: Bearer <key>');")
    typer.echo("the server keeps only the digest:")
    typer.echo(f"  export CHURNLENS_API_KEYS={entry}   # comma-separate several entries")
