"""Self-contained HTML pages of results (thumbnails embedded as data URIs)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Sequence

from .errors import ImageLoadError
from .images import load_image

PAGE_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;background:#fafafa;color:#222}
h1{font-size:1.3em} .query{margin:1.2em 0;padding:.8em;background:#fff;border:1px solid #ddd;border-radius:6px}
.row{display:flex;flex-wrap:wrap;gap:.6em;align-items:flex-start}
figure{margin:0;width:150px;text-align:center;font-size:.75em;word-break:break-all}
figure img{max-width:150px;max-height:150px;border:3px solid #ccc;border-radius:3px}
figure.q img{border-color:#36c} figure.good img{border-color:#2a2} figure.bad img{border-color:#c22}
.dist{font-weight:bold}
"""


def thumbnail_uri(source, side: int = 160) -> str:
    """A JPEG data URI of the image shrunk to ``side`` pixels, or "" if unreadable."""
    try:
        pixels = load_image(source, mode="RGB", max_side=side).pixels
    except ImageLoadError:
        return ""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def figure(source, caption: str, css: str = "") -> str:
    uri = thumbnail_uri(source)
    img = f'<img src="{uri}" alt="">' if uri else "<div>(unreadable)</div>"
    return f'<figure class="{css}">{img}<figcaption>{caption}</figcaption></figure>'


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{PAGE_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>")


def search_results_page(results: Sequence, query_sources: Sequence, title: str = "lookalike search") -> str:
    """HTML for search results: each query's thumbnail, then its hits with distances."""
    blocks = []
    for result, source in zip(results, query_sources):
        cells = [figure(source, "query: " + html.escape(Path(str(result.query)).name), "q")]
        for rank, hit in enumerate(result.hits, 1):
            caption = (f"#{rank} <span class='dist'>{hit.distance:.4f}</span><br>"
                       f"{html.escape(Path(hit.path).name)}")
            cells.append(figure(hit.path, caption))
        blocks.append(f"<div class='query'><div class='row'>{''.join(cells)}</div></div>")
    return page(title, "".join(blocks))


def write_page(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
