"""The ``lookalike`` command line: a thin shell over the Python API (Typer + rich)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import LookalikeError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Similar-image search: index folders, search them, measure how well.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)  # one-line errors even when captured
STATE = {"debug": False}


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    STATE["debug"] = debug


def _print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _open_or_create(db: Path, descriptors: List[str], index: str):
    from .collection import MANIFEST, Collection

    if (db / MANIFEST).exists():
        coll = Collection.open(db)
        missing = [s for s in descriptors if s not in
                   {e["spec"] for e in coll.manifest["descriptors"].values()}]
        if descriptors and missing and descriptors != ["__default__"]:
            raise LookalikeError(f"{db} was built with descriptors "
                                 f"{[e['spec'] for e in coll.manifest['descriptors'].values()]}; "
                                 f"cannot add {missing} to it here (create a new collection)")
        return coll
    from .defaults import default_descriptors

    specs = default_descriptors() if descriptors in ([], ["__default__"]) else descriptors
    return Collection.create(db, descriptors=specs, index=index)


@app.command()
def index(
    folder: List[Path] = typer.Argument(..., help="Image folders or files to add."),
    db: Path = typer.Option(..., "--db", help="Collection directory (created if missing)."),
    descriptor: List[str] = typer.Option([], "--descriptor", "-d",
                                         help="Descriptor spec, repeatable (default: see `lookalike descriptors`)."),
    index_spec: str = typer.Option("auto", "--index", help="Index spec: auto, flat, hnsw, ivf, ivfpq, faiss:..."),
    workers: int = typer.Option(max(1, os.cpu_count() or 1), "--workers", "-w", help="Extraction processes."),
    batch_size: int = typer.Option(64, "--batch-size"),
    fit_sample: int = typer.Option(1000, "--fit-sample", help="Images sampled to fit learned descriptors."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: index only shard i of n (0-based)."),
) -> None:
    """Add image files to a collection (incremental: unchanged files are skipped)."""
    shard_pair = None
    if shard is not None:
        try:
            i, n = (int(v) for v in shard.split("/"))
        except ValueError:
            raise LookalikeError(f"--shard {shard!r}: expected i/n, e.g. 0/4") from None
        if not 0 <= i < n:
            raise LookalikeError(f"--shard {shard!r}: need 0 <= i < n")
        shard_pair = (i, n)
    coll = _open_or_create(db, descriptor, index_spec)
    with coll:
        report = coll.add(folder, workers=workers, batch_size=batch_size, fit_sample=fit_sample,
                          progress=progress and not json_out and sys.stderr.isatty(), shard=shard_pair)
        if json_out:
            _print_json(report.to_dict())
            return
        console.print(f"[bold]{db}[/]: added {report.added}, updated {report.updated}, "
                      f"unchanged {report.unchanged}, failed {len(report.failed)} "
                      f"in {report.seconds:.1f}s; {len(coll)} items")
        for path, reason in report.failed[:20]:
            err_console.print(f"[yellow]skipped[/] {path}: {reason}")
        if len(report.failed) > 20:
            err_console.print(f"... and {len(report.failed) - 20} more (see `lookalike info --failures`)")


@app.command()
def search(
    db: Path = typer.Argument(..., help="Collection directory."),
    images: List[Path] = typer.Argument(..., help="Query image files."),
    k: int = typer.Option(10, "-k", help="Hits per query."),
    where: List[str] = typer.Option([], "--where", help="Metadata filter, e.g. 'width>200', 'tag=cat'."),
    descriptor: Optional[str] = typer.Option(None, "--descriptor", "-d", help="Stored descriptor key."),
    nprobe: Optional[int] = typer.Option(None, "--nprobe"),
    ef_search: Optional[int] = typer.Option(None, "--ef-search"),
    json_out: bool = typer.Option(False, "--json", help="Print JSON: [{query, results: [...]}]."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write an HTML page of the results."),
) -> None:
    """Find the items most similar to each query image."""
    from .collection import Collection

    knobs = {k_: v for k_, v in (("nprobe", nprobe), ("efSearch", ef_search)) if v is not None}
    with Collection.open(db) as coll:
        results = coll.search([str(p) for p in images], k=k, descriptor=descriptor,
                              where=where or None, **knobs)
    if html_out:
        from .html import search_results_page, write_page

        write_page(html_out, search_results_page(results, [str(p) for p in images]))
    if json_out:
        _print_json([r.to_dict() for r in results])
        return
    for result in results:
        table = Table(title=f"query: {result.query}", title_justify="left")
        table.add_column("#", justify="right")
        table.add_column("distance", justify="right")
        table.add_column("id", justify="right")
        table.add_column("path")
        for rank, hit in enumerate(result.hits, 1):
            table.add_row(str(rank), f"{hit.distance:.4f}", str(hit.id), hit.path)
        console.print(table)
    if html_out:
        console.print(f"wrote {html_out}")


@app.command()
def info(db: Path = typer.Argument(..., help="Collection directory."),
         failures: bool = typer.Option(False, "--failures", help="List files that failed and why."),
         json_out: bool = typer.Option(False, "--json")) -> None:
    """Show what a collection holds."""
    from .collection import Collection

    with Collection.open(db) as coll:
        facts = coll.info()
        if failures:
            facts["failures"] = [{"path": p, "reason": r} for p, r in coll.failures()]
    if json_out:
        _print_json(facts)
        return
    console.print(f"[bold]{facts['path']}[/]  items: {facts['items']}  errors: {facts['errors']}  "
                  f"disk: {facts['disk_bytes'] / 1e6:.1f} MB")
    for key, d in facts["descriptors"].items():
        idx = d["index_in_use"]
        console.print(f"  {key}: {d['spec']}  dim={d['dim']} metric={d['metric']} vectors={d['vectors']}  "
                      f"index={idx['spec']} (asked: {d['index']}) {idx['auto_reason']}")
    for item in facts.get("failures", []):
        console.print(f"  [yellow]failed[/] {item['path']}: {item['reason']}")


@app.command()
def remove(db: Path = typer.Argument(...), paths: List[Path] = typer.Argument(...)) -> None:
    """Remove files from a collection (the files themselves are not touched)."""
    from .collection import Collection

    with Collection.open(db) as coll:
        n = coll.remove([str(p) for p in paths])
    console.print(f"removed {n} items")


@app.command()
def sync(db: Path = typer.Argument(...)) -> None:
    """Drop items whose files are gone."""
    from .collection import Collection

    with Collection.open(db) as coll:
        n = coll.sync()
    console.print(f"dropped {n} items whose files are gone")


@app.command()
def descriptors(json_out: bool = typer.Option(False, "--json")) -> None:
    """List every registered descriptor family with its default spec, dim and metric."""
    from .descriptors import registered_descriptors

    rows = []
    for name, cls in registered_descriptors().items():
        try:
            d = cls()
            dim, metric = d.dim, d.metric
        except Exception as exc:  # a family whose dim needs fitting or a model file
            dim, metric = f"({type(exc).__name__})", "?"
        rows.append({"name": name, "spec": cls().spec if dim != "?" else name, "dim": dim, "metric": metric,
                     "requires_fit": cls.requires_fit if isinstance(cls.requires_fit, bool) else None,
                     "cost": cls.cost, "parameters": {k: v for k, v in cls.parameter_defaults().items()}})
    if json_out:
        _print_json(rows)
        return
    table = Table(title="descriptors")
    for col in ("name", "dim", "metric", "fit", "cost", "parameters"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["name"], str(r["dim"]), r["metric"], "yes" if r["requires_fit"] else "no", r["cost"],
                      ", ".join(f"{k}={v}" for k, v in r["parameters"].items()))
    console.print(table)


@app.command()
def components(
    data: Path = typer.Argument(..., help="Image folder to fit on (e.g. ../shared/data/orl_faces/full_92x112)."),
    out: Path = typer.Option(Path("components.png"), "--out", help="PNG to write."),
    descriptor: List[str] = typer.Option(["pca:components=40", "nmf:components=40", "kmeans:k=40"],
                                         "--descriptor", "-d", help="Basis descriptor spec, repeatable."),
    db: Optional[Path] = typer.Option(None, "--db", help="Draw a collection's fitted descriptors instead."),
    sample: int = typer.Option(1000, "--fit-sample"),
    n: int = typer.Option(12, "-n", help="Components per panel."),
) -> None:
    """Draw learned components (mean face, eigenfaces, NMF parts, k-means centres) as a grid."""
    from .descriptors import make_descriptor
    from .evaluation.components_figure import draw_components
    from .images import iter_image_files

    if db is not None:
        from .collection import Collection

        with Collection.open(db) as coll:
            fitted = [coll.descriptor(k) for k in coll.descriptor_keys
                      if hasattr(coll.descriptor(k), "components_as_images") and coll.descriptor(k).is_fitted]
    else:
        files = iter_image_files(data)[:sample]
        if not files:
            raise LookalikeError(f"{data}: no image files found")
        fitted = []
        for spec in descriptor:
            d = make_descriptor(spec)
            if not hasattr(d, "components_as_images"):
                raise LookalikeError(f"{spec}: not a basis descriptor (pca, nmf, kmeans)")
            fitted.append(d.fit(files))
    if not fitted:
        raise LookalikeError("no fitted basis descriptors to draw")
    console.print(f"wrote {draw_components(fitted, out, n=n)}")


@app.command()
def demo(
    folder: Optional[Path] = typer.Argument(None, help="Image folder (default: sample photos from installed packages)."),
    out: Path = typer.Option(Path("demo-output"), "--out", help="Where the collection and HTML page go."),
    k: int = typer.Option(5, "-k"),
    descriptor: List[str] = typer.Option([], "--descriptor", "-d"),
    workers: int = typer.Option(max(1, os.cpu_count() or 1), "--workers", "-w"),
) -> None:
    """The main job end to end: index a folder, search it, print the top hits, write HTML."""
    from .collection import Collection
    from .defaults import default_descriptors
    from .demo import DEMO_QUERIES, write_demo_images
    from .html import search_results_page, write_page
    from .images import iter_image_files

    out.mkdir(parents=True, exist_ok=True)
    if folder is None:
        folder = out / "images"
        files = write_demo_images(folder)
        queries = [folder / q for q in DEMO_QUERIES if (folder / q).exists()]
        console.print(f"wrote {len(files)} sample photos (with transformed copies) to {folder}")
    else:
        files = iter_image_files(folder)
        if not files:
            raise LookalikeError(f"{folder}: no image files found")
        queries = files[:: max(1, len(files) // 4)][:4]
    db = out / "collection"
    coll = Collection.create(db, descriptors=descriptor or default_descriptors(), exist_ok=True)
    with coll:
        report = coll.add(folder, workers=workers, progress=sys.stderr.isatty())
        console.print(f"indexed {folder}: added {report.added}, unchanged {report.unchanged}, "
                      f"failed {len(report.failed)}; descriptor {coll.descriptor().spec}")
        results = coll.search([str(q) for q in queries], k=k)
    for result in results:
        console.print(f"[bold]{Path(result.query).name}[/] ->")
        for rank, hit in enumerate(result.hits, 1):
            console.print(f"   {rank}. {Path(hit.path).name}  distance {hit.distance:.4f}")
    page = write_page(out / "results.html", search_results_page(results, [str(q) for q in queries],
                                                                   title="lookalike demo"))
    console.print(f"wrote {page}")


def _register_extensions() -> None:
    """Sub-command groups that live in their own modules (faces, dedup, evaluate...)."""
    import importlib

    for module in ("cli_evaluate", "cli_dedup", "cli_faces", "cli_train", "cli_serve"):
        try:
            mod = importlib.import_module(f"{__package__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{module}":
                raise
            continue
        mod.register(app)


def main() -> None:
    # Damaged files are reported by lookalike with their reason; OpenCV's own warnings
    # about them ("PNG input buffer is incomplete") would only add noise (read when cv2
    # is first imported; a value the user set wins).
    os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
    _register_extensions()
    try:
        app(standalone_mode=False)
    except LookalikeError as exc:
        if STATE["debug"]:
            raise
        err_console.print(f"[red]error:[/] {exc}")
        sys.exit(1)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if STATE["debug"]:
            raise
        err_console.print(f"[red]error:[/] {type(exc).__name__}: {exc} (run with --debug for details)")
        sys.exit(1)


if __name__ == "__main__":
    main()
