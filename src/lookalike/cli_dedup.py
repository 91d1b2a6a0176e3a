"""``lookalike dedup`` and ``lookalike calibrate``: near-duplicate detection from the shell.

Registered on the main Typer app by :func:`register` (``cli._register_extensions``). A
thin shell over :mod:`lookalike.dedup`: for a folder it scans every file once (cached in
``FOLDER/.lookalike`` or ``--db``, so re-runs only scan new or changed files; calibrated
thresholds live there too); for a collection directory it uses the collection.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .errors import InputError

console = Console()
err_console = Console(stderr=True)


def _is_collection(path: Path) -> bool:
    from .collection import MANIFEST

    return (path / MANIFEST).exists()


def _cache_dir(target: Path, db: Optional[Path]) -> Path:
    from .dedup.pipeline import CACHE_DIR

    return (db or target / CACHE_DIR).resolve()


def dedup(
    target: Path = typer.Argument(..., help="a folder of images, or a collection directory"),
    new: Optional[List[Path]] = typer.Option(None, "--new", help="check these new files (or folders) against the collection"),
    add_new: bool = typer.Option(False, "--add", help="with --new: add the new files to the collection afterwards"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="write the groups as JSON here ('-' = stdout)"),
    csv_out: Optional[Path] = typer.Option(None, "--csv", help="write one row per file as CSV here"),
    html_out: Optional[Path] = typer.Option(None, "--html", help="write an HTML report with thumbnails here"),
    move_to: Optional[Path] = typer.Option(None, "--move-to", help="move duplicates (not keepers) into this folder"),
    symlink: Optional[Path] = typer.Option(None, "--symlink", help="put links to the duplicates into this folder"),
    delete: bool = typer.Option(False, "--delete", help="delete duplicates (cannot be undone)"),
    apply: bool = typer.Option(False, "--apply", help="really do the action (default: dry run)"),
    undo_journal: Optional[Path] = typer.Option(None, "--undo", help="restore what a journal moved/linked, then exit"),
    journal: Optional[Path] = typer.Option(None, "--journal", help="journal path (default: in the cache collection)"),
    root: Optional[Path] = typer.Option(None, "--root", help="folder actions may touch (default: the scanned folder)"),
    keep: str = typer.Option("resolution", "--keep", help="keeper policy: resolution, size, oldest, shortest-path"),
    threshold: Optional[str] = typer.Option(None, "--threshold",
                                            help="override thresholds, e.g. cnn_any=0.92,hash_radius=8"),
    db: Optional[Path] = typer.Option(None, "--db", help="cache collection for a folder (default FOLDER/.lookalike)"),
    workers: int = typer.Option(0, "--workers", help="processes for the scan and the pair checks (0 = one per CPU)"),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Find near-duplicate images: exact copies, re-encodes, resizes, crops, flips, rotations."""
    import os

    from .dedup import actions, report
    from .dedup.calibrate import load_thresholds

    workers = workers if workers > 0 else (os.cpu_count() or 1)
    from .dedup.pipeline import check_new, find_duplicates

    if undo_journal is not None:
        result = actions.undo(undo_journal)
        for path in result.restored:
            console.print(f"restored {path}")
        for path, reason in result.failed:
            err_console.print(f"[yellow]not restored[/] {path}: {reason}")
        console.print(f"{len(result.restored)} restored, {len(result.failed)} not restored")
        if result.failed:
            raise typer.Exit(1)
        return
    chosen = [a for a, on in (("move", move_to), ("symlink", symlink), ("delete", delete)) if on]
    if len(chosen) > 1:
        raise InputError("choose one of --move-to, --symlink, --delete")
    from .collection import Collection
    from .dedup.pipeline import find_duplicates_in_folder

    show = progress and sys.stderr.isatty()
    started = time.perf_counter()
    exclude = [p for p in (move_to, symlink) if p is not None]
    if not target.exists():
        raise InputError(f"{target}: no such folder or collection")
    folder = None
    if _is_collection(target):
        coll = Collection.open(target)
        state_dir = coll.directory
        thresholds = load_thresholds(state_dir).with_overrides(threshold)
        if new:
            files = []
            from .images import iter_image_files

            for p in new:
                files.extend(iter_image_files(p) if p.is_dir() else [p])
            result = check_new(coll, files, thresholds, keep, progress=show)
            if add_new:
                coll.add([f for f in files if str(Path(f).resolve()) not in {s for s, _ in result.skipped}])
        else:
            result = find_duplicates(coll, thresholds, keep, progress=show, workers=workers)
    else:
        if new:
            raise InputError("--new checks files against a collection; give a collection directory "
                             "(lookalike add builds one)")
        folder = target.resolve()
        state_dir = _cache_dir(target, db)
        thresholds = load_thresholds(state_dir).with_overrides(threshold)
        result = find_duplicates_in_folder(folder, state_dir, thresholds, keep, workers, show, exclude)
    for path, reason in result.skipped:
        err_console.print(f"[yellow]skipped[/] {path}: {reason}")
    if json_out is not None:
        if str(json_out) == "-":
            sys.stdout.write(report.to_json(result.groups) + "\n")
        else:
            report.write_text(json_out, report.to_json(result.groups) + "\n")
    if csv_out is not None:
        report.write_text(csv_out, report.to_csv(result.groups))
    if html_out is not None:
        report.write_text(html_out, report.to_html(result.groups, f"lookalike dedup: {target}", result.skipped))
    if str(json_out) != "-":
        report.print_table(result.groups, console)
        n_dup = sum(len(g.members) for g in result.groups)
        console.print(f"{len(result.groups)} groups, {n_dup} duplicates, {len(result.skipped)} skipped, "
                      f"{result.stats.get('candidate_pairs', 0)} candidate pairs, "
                      f"{time.perf_counter() - started:.1f} s")
    if not chosen:
        return
    action_root = root or folder
    if action_root is None:
        raise InputError("actions on a collection need --root FOLDER: the folder whose files may be touched")
    plan = actions.plan_actions(result.groups, chosen[0], action_root, move_to or symlink)
    for path, reason in plan.refused:
        err_console.print(f"[yellow]refused[/] {path}: {reason}")
    if not apply:
        for step in plan.steps:
            console.print(f"[dim]dry run:[/] {step.describe()}")
        console.print(f"dry run: {len(plan.steps)} files would change; add --apply to do it")
        return
    journal_path = journal or Path(state_dir) / "journals" / f"dedup-{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**6}.json"
    actions.apply_plan(plan, journal_path)
    for step in plan.steps:
        console.print(step.describe())
    console.print(f"{len(plan.steps)} files changed; journal: {plan.journal}")
    console.print(f"undo with: lookalike dedup {target} --undo {plan.journal}")


def calibrate(
    target: Path = typer.Argument(..., help="a folder of images or a collection directory"),
    pairs: Path = typer.Argument(..., help="CSV of labelled pairs: a,b,is_duplicate"),
    target_precision: Optional[float] = typer.Option(None, "--target-precision",
                                                     help="reach this pair precision (default: best F1)"),
    db: Optional[Path] = typer.Option(None, "--db", help="cache collection for a folder"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the thresholds, do not save them"),
    json_out: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Choose dedup thresholds from labelled pairs; saved in the collection or the
    folder's cache (dedup.json) and used by later dedup runs."""
    from .collection import Collection
    from .dedup.calibrate import calibrate as run_calibration
    from .dedup.pipeline import folder_table

    if not target.exists():
        raise InputError(f"{target}: no such folder or collection")
    if _is_collection(target):
        source, directory = Collection.open(target), None
    else:
        source, _, directory = folder_table(target, _cache_dir(target, db), progress=sys.stderr.isatty())
    thresholds, scores = run_calibration(source, pairs, target_precision, save=not dry_run, directory=directory)
    payload = {"thresholds": thresholds.to_dict(), "scores": scores}
    if json_out:
        sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        return
    for key, value in thresholds.to_dict().items():
        console.print(f"{key} = {value}")
    console.print(f"precision {scores['precision']:.4f}  recall {scores['recall']:.4f}  F1 {scores['f1']:.4f} "
                  f"on {scores['pairs']} pairs ({scores['positives']} duplicates)")
    if not scores["reached_target"]:
        err_console.print("[yellow]the target precision was not reached; the most precise setting was kept[/]")
    if "saved_to" in scores:
        console.print(f"saved to {scores['saved_to']}")


def register(app: typer.Typer) -> None:
    """Add ``dedup`` and ``calibrate`` to the main app."""
    app.command("dedup")(dedup)
    app.command("calibrate")(calibrate)
