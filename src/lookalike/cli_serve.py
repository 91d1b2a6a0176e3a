"""``lookalike serve``: the HTTP API and web page for one collection.

Registered on the main Typer app by :func:`register` (``cli._register_extensions``).
A thin shell over :func:`lookalike.server.create_app` run by uvicorn; needs the
``server`` extra (fastapi, uvicorn, python-multipart), imported only when the command runs.
"""
from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

err_console = Console(stderr=True)


def serve(
    collection: Path = typer.Argument(..., help="Collection directory (built with `lookalike index`)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0 for every one)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    workers: int = typer.Option(2, "--workers", "-w", help="Search threads (each holds its own index copy)."),
    max_upload_mb: float = typer.Option(20.0, "--max-upload-mb", help="Largest query upload accepted (MiB)."),
) -> None:
    """Serve a collection: JSON API at /api (docs at /docs) and a search page at /."""
    from .errors import MissingDependencyError
    from .server import create_app

    try:
        import uvicorn
    except ModuleNotFoundError:
        raise MissingDependencyError("uvicorn", "server") from None
    app = create_app(collection, workers=workers, max_upload_bytes=int(max_upload_mb * 2**20))
    err_console.print(f"serving [bold]{collection}[/] at http://{host}:{port}/  (API docs: /docs; Ctrl+C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
