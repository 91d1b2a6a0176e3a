"""``lookalike evaluate`` and ``lookalike tune-index``: measuring search quality and speed.

Registered on the main Typer app by :func:`register` (``cli._register_extensions``).
Both are thin shells: the work happens in :mod:`lookalike.evaluation.runner` and
:mod:`lookalike.tuning`.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from .cli_options import parse_key_values
from .errors import ConfigError

console = Console()
err_console = Console(stderr=True)


def _parse_options(pairs: List[str]) -> dict:
    from .evaluation.runner import parse_option_value

    return parse_key_values(pairs, "--option", parse_option_value)


def _guess_protocol(data: Path) -> str:
    if data.suffix.lower() == ".csv":
        return "csv"
    if data.is_dir():
        return "folder"
    raise ConfigError(f"--protocol is required unless --data is a labelled folder or a CSV manifest "
                      f"({data} is neither)")


def _write_json(path: Path, data) -> None:
    from .atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1) + "\n")


def evaluate(
    protocol: Optional[str] = typer.Option(
        None, "--protocol", "-p",
        help="lfw-pairs, lfw-view1, lfw-identification, coil100, cifar10, orl, folder, csv "
             "(default: folder / csv guessed from --data)."),
    data: Path = typer.Option(..., "--data",
                              help="Shared data root, a dataset folder, a labelled folder or a CSV manifest."),
    descriptor: Optional[str] = typer.Option(None, "--descriptor", "-d",
                                             help="Descriptor spec to evaluate, e.g. color:space=hsv,bins=8."),
    db: Optional[Path] = typer.Option(None, "--db", help="Evaluate a collection's stored vectors instead."),
    key: Optional[str] = typer.Option(None, "--key", help="Which descriptor of the collection (default: its default)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the full JSON report here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for the PNG pictures."),
    seed: int = typer.Option(0, "--seed", help="Seeds subsets and fitting samples."),
    limit: Optional[int] = typer.Option(None, "--limit",
                                        help="Random subset: N classes (retrieval) or N pairs (verification)."),
    option: List[str] = typer.Option([], "--option", "-o",
                                     help="Protocol option key=value, repeatable (e.g. query_angle=0, "
                                          "split=test, per_class=50, object_ids=51-100)."),
    top_k: int = typer.Option(100, "--top-k", help="Ranked results stored per query (0 = all)."),
    workers: int = typer.Option(1, "--workers", "-w", help="Extraction processes."),
    batch_size: int = typer.Option(64, "--batch-size"),
    fit_sample: int = typer.Option(1000, "--fit-sample", help="Images sampled to fit learned descriptors."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Measure a descriptor (or a collection) on a protocol: metrics, JSON report, plots."""
    from .evaluation.runner import run_evaluation

    name = protocol or _guess_protocol(data)
    result = run_evaluation(name, data, descriptor=descriptor, db=db, db_key=key,
                            options=_parse_options(option), seed=seed, limit=limit, top_k=top_k,
                            plot_dir=plots, batch_size=batch_size, workers=workers,
                            fit_sample=fit_sample, progress=progress and sys.stderr.isatty())
    report = result.report
    if json_out:
        _write_json(json_out, report)
    settings = report["settings"]
    table = Table(title=f"{settings['protocol']} — {settings['descriptor']}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in result.summary:
        table.add_row(label, value)
    console.print(report["protocol"].get("description", ""))
    console.print(table)
    for what, path in result.plots.items():
        console.print(f"wrote {what}: {path}")
    if json_out:
        console.print(f"wrote {json_out}")


def tune_index(
    db: Path = typer.Argument(..., help="Collection directory."),
    recall: float = typer.Option(0.95, "--recall", help="Target recall@k."),
    apply: bool = typer.Option(False, "--apply", help="Switch the collection to the best setting."),
    queries: int = typer.Option(200, "--queries", help="Stored vectors used as queries."),
    key: Optional[str] = typer.Option(None, "--key", help="Which descriptor of the collection."),
    k: int = typer.Option(10, "-k", help="Neighbours per query (recall@k)."),
    threads: int = typer.Option(1, "--threads", help="FAISS threads while measuring."),
    repeats: int = typer.Option(3, "--repeats", help="Timed runs per setting (median)."),
    kinds: Optional[str] = typer.Option(None, "--kinds",
                                        help="Comma-separated families to try: flat,hnsw,ivf,ivfpqfs,ivfpq."),
    seed: int = typer.Option(0, "--seed"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every measured point here."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Recall-vs-speed PNG."),
) -> None:
    """Find the fastest index setting that reaches a recall target on the collection's own vectors."""
    from .collection import Collection
    from .tuning import FAMILIES, tune_collection

    families = [f.strip() for f in kinds.split(",") if f.strip()] if kinds else list(FAMILIES)
    status = err_console.status("tuning") if sys.stderr.isatty() else None

    def on_point(p) -> None:
        if status is not None:
            status.update(f"{p.spec}: recall {p.recall:.3f}, {p.qps:,.0f} q/s")

    if status is not None:
        status.start()
    try:
        with Collection.open(db) as coll:
            tuned = tune_collection(coll, key=key, target_recall=recall, k=k, n_queries=queries,
                                    seed=seed, threads=threads, repeats=repeats, families=families,
                                    apply=apply, on_point=on_point)
    finally:
        if status is not None:
            status.stop()
    table = Table(title=f"{db}: {tuned.n_vectors} vectors, dim {tuned.dim}, {tuned.metric}; "
                        f"{tuned.n_queries} queries, {tuned.threads} thread(s)", title_justify="left")
    for col, just in (("spec", "left"), ("recall@" + str(k), "right"), ("queries/s", "right"),
                      ("memory MB", "right"), ("build s", "right")):
        table.add_column(col, justify=just)
    for p in tuned.points:
        style = "bold green" if tuned.best is p else (None if p.meets_target else "dim")
        table.add_row(p.spec, f"{p.recall:.4f}", f"{p.qps:,.0f}", f"{p.memory_bytes / 1e6:.2f}",
                      f"{p.build_seconds:.2f}", style=style)
    console.print(table)
    for what, why in tuned.skipped.items():
        console.print(f"[yellow]skipped[/] {what}: {why}")
    if tuned.best is None:
        console.print(f"[red]no setting reached recall@{k} >= {recall}[/]")
    else:
        b = tuned.best
        console.print(f"best: [bold]{b.spec}[/] recall@{k} {b.recall:.4f}, {b.qps:,.0f} queries/s "
                      f"({b.memory_bytes / 1e6:.2f} MB)" + ("  [green]applied[/]" if tuned.applied else
                                                            "  (use --apply to switch the collection)"))
    if json_out:
        _write_json(json_out, tuned.to_dict())
        console.print(f"wrote {json_out}")
    if plot:
        from .evaluation.plots import plot_recall_vs_qps

        plot_recall_vs_qps(tuned.curves(), plot,
                           title=f"{Path(db).name}: recall@{k} vs queries/s ({tuned.threads} thread(s))",
                           recall_label=f"recall@{k}")
        console.print(f"wrote {plot}")


def register(app: typer.Typer) -> None:
    """Add ``evaluate`` and ``tune-index`` to the main app."""
    app.command("evaluate")(evaluate)
    app.command("tune-index")(tune_index)
