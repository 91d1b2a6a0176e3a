"""Duplicate groups out: a terminal table, JSON, CSV and a self-contained HTML page."""
from __future__ import annotations

import csv
import html
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

from .groups import Group


def to_json(groups: Sequence[Group]) -> str:
    """``{"groups": [{"keeper": path, "members": [{"path", "similarity"}, ...]}, ...]}``."""
    return json.dumps({"groups": [g.to_dict() for g in groups]}, indent=2)


CSV_FIELDS = ("group", "role", "path", "similarity", "width", "height", "size")


def to_csv(groups: Sequence[Group]) -> str:
    """One row per file: group number, keeper/duplicate, path, similarity to the keeper,
    width, height, bytes."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_FIELDS)
    for n, g in enumerate(groups, 1):
        info = g.keeper_info
        writer.writerow([n, "keeper", g.keeper, "1.000000", info.get("width"), info.get("height"), info.get("size")])
        for m in g.members:
            writer.writerow([n, "duplicate", m.path, f"{m.similarity:.6f}", m.width, m.height, m.size])
    return buffer.getvalue()


def _size(n: Any) -> str:
    if not n:
        return "?"
    n = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def _dims(w: Any, h: Any) -> str:
    return f"{w}x{h}" if w and h else "?"


def to_html(groups: Sequence[Group], title: str = "lookalike dedup", skipped: Sequence[tuple[str, str]] = ()) -> str:
    """A page with each group's thumbnails side by side (keeper first, outlined blue),
    with dimensions, file sizes and similarity to the keeper."""
    from ..html import figure, page

    blocks = [f"<p>{len(groups)} groups, {sum(len(g.members) for g in groups)} duplicates "
              f"({_size(sum(m.size or 0 for g in groups for m in g.members))} reclaimable)</p>"]
    for n, g in enumerate(groups, 1):
        info = g.keeper_info
        cells = [figure(g.keeper, f"<b>keep</b> {html.escape(Path(g.keeper).name)}<br>"
                        f"{_dims(info.get('width'), info.get('height'))}, {_size(info.get('size'))}", "q")]
        for m in g.members:
            cells.append(figure(m.path, f"<span class='dist'>{m.similarity:.3f}</span> "
                                f"{html.escape(Path(m.path).name)}<br>{_dims(m.width, m.height)}, {_size(m.size)}"))
        blocks.append(f"<div class='query'><div>group {n}</div><div class='row'>{''.join(cells)}</div></div>")
    if skipped:
        rows = "".join(f"<li>{html.escape(p)}: {html.escape(r)}</li>" for p, r in skipped)
        blocks.append(f"<h2>skipped</h2><ul>{rows}</ul>")
    return page(title, "".join(blocks))


def print_table(groups: Sequence[Group], console=None, limit: int | None = 50) -> None:
    """Groups as a rich table on the terminal (keeper, then its duplicates)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=f"{len(groups)} duplicate groups")
    for col in ("group", "role", "path", "similarity", "size"):
        table.add_column(col, justify="right" if col in ("group", "similarity") else "left")
    shown = groups if limit is None else groups[:limit]
    for n, g in enumerate(shown, 1):
        info = g.keeper_info
        table.add_row(str(n), "keep", g.keeper, "", f"{_dims(info.get('width'), info.get('height'))} {_size(info.get('size'))}")
        for m in g.members:
            table.add_row("", "dup", m.path, f"{m.similarity:.3f}", f"{_dims(m.width, m.height)} {_size(m.size)}")
    console.print(table)
    if limit is not None and len(groups) > limit:
        console.print(f"... {len(groups) - limit} more groups (use --json/--csv/--html for all)")


def write_text(path: str | os.PathLike, text: str) -> Path:
    from ..atomic import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode())
    return path
