"""`churnlens serve`: the scoring API under uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes (each loads the model)")]
    = 1,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve the scoring API (settings from CHURNLENS_* environment variables)."""
    import uvicorn

    from models.loading import ModelNotFoundError, require_registry
    from serving.settings import SettingsError, get_settings

    try:
        settings = get_settings()  # fail here, naming the setting, rather than in every worker
        require_registry(settings.model_uri)  # an empty mlflow.db here would serve nothing
    except (SettingsError, ModelNotFoundError) as error:
        typer.secho(f"cannot start: {error}", err=True, fg=typer.colors.RED)
        raise typer.Exit(code=2) from None
    uvicorn.run("serving.app:create_app", factory=True, host=host, port=port, workers=workers,
                log_level=log_level, access_log=False)
