"""The FastAPI app: a JSON API over one collection, plus a static web page.

Endpoints (all documented at ``/docs`` and ``/openapi.json``)::

    GET  /                               the web page (static/index.html)
    GET  /api/info                       what the collection holds (Collection.info)
    POST /api/search                     multipart: file, k, where, descriptor -> hits
    GET  /api/items?where=&limit=&offset=&status=   browse / filter items
    GET  /api/items/{id}                 one item's row
    GET  /api/items/{id}/similar?k=      hits for a stored item (its own vector)
    GET  /api/items/{id}/thumbnail?size= JPEG bytes (ETag + Cache-Control)

Search answers have the CLI's ``--json`` shape, ``{"query", "results": [{"id", "path",
"distance", "metadata"}]}``, distances ascending (smaller = closer). Every error is
``{"error": "<what>: <reason>"}``: 400 bad input (an unreadable upload names its file),
404 unknown item, 413 upload over the size limit, 503 collection locked or corrupt.

Threads: a ``sqlite3`` connection must stay in the thread that opened it, so all
collection work runs on a small fixed pool of threads, each holding its own read-only
:class:`~lookalike.collection.Collection` (SQLite WAL lets readers run beside a writer;
readers never take the writer lock). A worker reopens its collection when
``manifest.json`` changes. Files are only ever served as thumbnails of items, looked up
by id, so no request can name a path on disk.
"""
from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Callable, Optional

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from ..collection import MANIFEST, Collection, compile_filter
from ..errors import (CollectionError, ImageLoadError, InputError, LookalikeError,
                      MissingDependencyError, NotFittedError)

STATIC_DIR = Path(__file__).with_name("static")
#: ``descriptor`` value that asks for late fusion of all the collection's descriptors.
FUSED = "fused"
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
DEFAULT_THUMBNAIL_SIZE = 256
THUMBNAIL_SIZE_RANGE = (16, 1024)
THUMBNAIL_MAX_AGE_S = 3600


# -- response shapes (they document the API in OpenAPI) ---------------------------------
class ErrorOut(BaseModel):
    error: str = Field(description="What failed and why, e.g. 'photo.jpg: not a recognised image format'.")


class HitOut(BaseModel):
    id: int
    path: str
    distance: float = Field(description="Smaller = closer, for every metric.")
    metadata: dict[str, Any] = Field(default_factory=dict)


class SearchOut(BaseModel):
    query: str = Field(description="The uploaded file's name, or the query item's path.")
    results: list[HitOut] = Field(description="Nearest first.")


class SimilarOut(SearchOut):
    query_id: int = Field(description="The item searched with (left out of its own results).")


class ItemOut(BaseModel):
    id: int
    path: str
    content_hash: Optional[str] = None
    size: Optional[int] = None
    mtime: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: str = Field(description="'ok', or 'error' when the file could not be read (see 'error').")
    error: Optional[str] = None
    added_at: Optional[float] = None


class ItemsPage(BaseModel):
    total: int = Field(description="Items matching the filter, all pages together.")
    offset: int
    limit: int
    items: list[ItemOut]


ERRORS = {400: {"model": ErrorOut, "description": "Bad input (names the field or file and the reason)"},
          404: {"model": ErrorOut, "description": "No such item"},
          503: {"model": ErrorOut, "description": "Collection locked or corrupt"}}


# -- collection access from worker threads ----------------------------------------------
class ReaderPool:
    """Runs collection work on ``workers`` threads, each with its own open Collection.

    Args:
        directory: the collection directory.
        workers: threads (and so open collections, each with its own index copy in memory).
    """

    def __init__(self, directory: Path, workers: int):
        self.directory = directory
        self._manifest = directory / MANIFEST
        self._local = threading.local()
        self._executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="lookalike-reader")

    def _collection(self) -> Collection:
        try:
            stamp = self._manifest.stat().st_mtime_ns
        except OSError as exc:
            raise CollectionError(f"{self.directory}: collection is gone ({exc.strerror})") from None
        coll = getattr(self._local, "collection", None)
        if coll is None or self._local.stamp != stamp:
            if coll is not None:
                coll.close()  # same thread that opened it
            coll = Collection.open(self.directory)
            self._local.collection, self._local.stamp = coll, stamp
        return coll

    def _call(self, fn: Callable[..., Any], args: tuple) -> Any:
        return fn(self._collection(), *args)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(collection, *args)`` on a worker thread; exceptions propagate."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, fn, args)

    def close(self) -> None:
        # Finished threads drop their thread-locals, which closes their connections.
        self._executor.shutdown(wait=True)


class ThumbnailCache:
    """Least-recently-used JPEG bytes, bounded by their total size."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            data = self._data.get(key)
            if data is not None:
                self._data.move_to_end(key)
            return data

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        with self._lock:
            if key in self._data:
                return
            self._data[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, old = self._data.popitem(last=False)
                self._bytes -= len(old)


def make_thumbnail(path: str, size: int, quality: int = 85) -> bytes:
    """JPEG bytes of the image at ``path`` shrunk so its longer side is at most ``size``.

    Raises:
        ImageLoadError: the file cannot be read any more.
    """
    from PIL import Image

    from ..images import load_image

    pixels = load_image(path, mode="RGB", max_side=size).pixels
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


# -- request body limit ------------------------------------------------------------------
class UploadLimitMiddleware:
    """Refuses request bodies over ``max_bytes`` on ``paths`` with 413, before parsing.

    A declared ``Content-Length`` is checked up front; a chunked body (no length) is
    read up to the limit and then handed on, so the form parser never sees more.
    """

    def __init__(self, app, max_bytes: int, paths: frozenset[str]):
        self.app = app
        self.max_bytes = max_bytes
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(send, int(declared))
                return
            await self.app(scope, receive, send)  # the server holds the body to its length
            return
        chunks, total, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._refuse(send, None)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send, size: int | None) -> None:
        limit = f"{self.max_bytes} bytes ({self.max_bytes / 2**20:.1f} MiB)"
        message = (f"upload too large: {size} bytes; the limit is {limit}" if size is not None
                   else f"upload too large: over the limit of {limit}")
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


# -- errors -------------------------------------------------------------------------------
def _status_of(exc: LookalikeError) -> int:
    if isinstance(exc, CollectionError):
        return 503
    if isinstance(exc, MissingDependencyError):
        return 501
    if isinstance(exc, NotFittedError):
        return 409
    return 400  # InputError, ImageLoadError, ConfigError and the rest: the caller's input


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path", "form")]
        parts.append(f"{'.'.join(loc) or 'request'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _not_found(item_id: int) -> HTTPException:
    return HTTPException(404, f"item {item_id}: not in this collection")


def _row(coll: Collection, item_id: int) -> dict[str, Any]:
    try:
        return coll.get(int(item_id))
    except InputError:
        raise _not_found(item_id) from None


def _page_items(coll: Collection, where: str | None, status: str, limit: int, offset: int) -> dict[str, Any]:
    wanted = None if status == "all" else status
    total = coll.count(where, status=wanted)
    rows = coll.items(where, status=wanted, limit=limit, offset=offset)
    return {"total": total, "offset": offset, "limit": limit, "items": rows}


def _add_api_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI served from the ``swagger-ui-bundle`` package (no CDN).

    Without that package ``/docs`` redirects to the raw ``/openapi.json``.
    """
    from fastapi.responses import RedirectResponse

    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        swagger_ui_path = None
    if swagger_ui_path is None:
        @app.get("/docs", include_in_schema=False)
        async def docs_fallback():
            return RedirectResponse(app.openapi_url)

        return
    from fastapi.openapi.docs import get_swagger_ui_html

    app.mount("/docs-static", StaticFiles(directory=swagger_ui_path), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="lookalike API",
                                   swagger_js_url="/docs-static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-static/swagger-ui.css",
                                   swagger_favicon_url="/docs-static/favicon-32x32.png")


# -- the app ------------------------------------------------------------------------------
def create_app(collection_path: str | os.PathLike, *, workers: int = 2,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_k: int = 1000,
               thumbnail_cache_bytes: int = 64 * 1024 * 1024) -> FastAPI:
    """Build the HTTP API and web page for one collection.

    Args:
        collection_path: an existing collection directory (opened read-only).
        workers: threads that search (each opens its own collection and index copy).
        max_upload_bytes: request bodies above this on ``POST /api/search`` get 413.
        max_k: the largest ``k`` a request may ask for.
        thumbnail_cache_bytes: memory for recently served thumbnails.

    Returns:
        A FastAPI app; serve it with ``uvicorn.run(app, host=..., port=...)``.

    Raises:
        CollectionError: ``collection_path`` is not a readable collection.
    """
    directory = Path(collection_path).resolve()
    Collection.open(directory).close()  # fail now, not on the first request
    pool = ReaderPool(directory, workers)
    thumbnails = ThumbnailCache(thumbnail_cache_bytes)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        pool.close()

    # docs_url=None: FastAPI's own /docs page loads Swagger UI from a CDN; ours is local.
    app = FastAPI(title="lookalike", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description=f"Similar-image search over the collection `{directory.name}`. "
                              "Distances are ascending: smaller = closer. Errors are "
                              '`{"error": "<what>: <reason>"}`.')
    app.state.collection_path = directory
    app.state.pool = pool
    app.add_middleware(UploadLimitMiddleware, max_bytes=max_upload_bytes, paths=frozenset({"/api/search"}))

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError):
        return JSONResponse({"error": _validation_message(exc)}, status_code=400)

    @app.exception_handler(LookalikeError)
    async def _lookalike_error(_request: Request, exc: LookalikeError):
        return JSONResponse({"error": str(exc)}, status_code=_status_of(exc))

    # -- page -------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index_page():
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_api_docs(app)

    # -- API --------------------------------------------------------------------------
    @app.get("/api/info", summary="What the collection holds", responses=ERRORS)
    async def info() -> dict[str, Any]:
        """Items, errors, descriptors (spec, dim, metric, index in use), plus this server's limits."""
        def work(coll: Collection) -> dict[str, Any]:
            facts = coll.info()
            facts["name"] = directory.name
            facts["server"] = {"max_upload_bytes": max_upload_bytes, "max_k": max_k,
                               "fused": FUSED if len(coll.descriptor_keys) > 1 else None}
            return facts

        return await pool.run(work)

    @app.post("/api/search", summary="Search with an uploaded image", response_model=SearchOut,
              responses={**ERRORS, 413: {"model": ErrorOut, "description": "Upload over the size limit"}})
    async def search(
        file: UploadFile = File(..., description="The query image (JPEG, PNG, WebP, ...)."),
        k: int = Form(10, ge=1, le=max_k, description="Hits to return."),
        where: str = Form("", description="Metadata filter, e.g. 'width>200', 'tag=cat', 'path~*.png'."),
        descriptor: str = Form("", description=f"Stored descriptor key (default: the collection's); "
                                               f"'{FUSED}' fuses all of them."),
    ) -> dict[str, Any]:
        """The ``k`` items nearest to the uploaded image, nearest first."""
        name = os.path.basename(file.filename or "") or "upload"
        data = await file.read()
        if not data:
            raise HTTPException(400, f"{name}: empty file (0 bytes)")

        def work(coll: Collection) -> dict[str, Any]:
            try:
                if descriptor == FUSED:
                    results = coll.search_fused(data, k=k, where=where or None)
                else:
                    results = coll.search(data, k=k, descriptor=descriptor or None, where=where or None)
            except ImageLoadError as exc:
                raise ImageLoadError(name, exc.reason) from None
            result = results[0]
            result.query = name
            return result.to_dict()

        return await pool.run(work)

    @app.get("/api/items", summary="Browse or filter items", response_model=ItemsPage, responses=ERRORS)
    async def items(
        where: str = Query("", description="Metadata filter, e.g. 'tag=cat' (ImageNet tags stored by the "
                                           "cnn descriptor), 'width>200', 'path~*beach*'."),
        limit: int = Query(100, ge=1, le=1000),
        offset: int = Query(0, ge=0),
        status: str = Query("ok", pattern="^(ok|error|all)$",
                            description="'ok' items, 'error' (files that failed, with the reason), or 'all'."),
    ) -> dict[str, Any]:
        """Items matching ``where`` in id order, one page at a time."""
        return await pool.run(_page_items, where or None, status, limit, offset)

    @app.get("/api/items/{item_id}", summary="One item", response_model=ItemOut, responses=ERRORS)
    async def item(item_id: int) -> dict[str, Any]:
        return await pool.run(_row, item_id)

    @app.get("/api/items/{item_id}/similar", summary="Search with a stored item", response_model=SimilarOut,
             responses=ERRORS)
    async def similar(
        item_id: int,
        k: int = Query(10, ge=1, le=max_k),
        where: str = Query(""),
        descriptor: str = Query("", description="Stored descriptor key (default: the collection's)."),
    ) -> dict[str, Any]:
        """The ``k`` items nearest to item ``item_id`` (itself left out), nearest first."""
        def work(coll: Collection) -> dict[str, Any]:
            row = _row(coll, item_id)
            if row["status"] != "ok":
                raise InputError(f"item {item_id} ({row['path']}) has no vectors: {row['error']}")
            result = coll.search_item(item_id, k=k, descriptor=descriptor or None, where=where or None)
            return {**result.to_dict(), "query_id": item_id}

        return await pool.run(work)

    @app.get("/api/items/{item_id}/thumbnail", summary="An item's thumbnail (JPEG)",
             responses={**ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "JPEG bytes"}},
             response_class=Response)
    async def thumbnail(request: Request, item_id: int,
                        size: int = Query(DEFAULT_THUMBNAIL_SIZE, ge=THUMBNAIL_SIZE_RANGE[0],
                                          le=THUMBNAIL_SIZE_RANGE[1],
                                          description="Longest side in pixels.")):
        """The item's image shrunk to ``size`` pixels on its longer side; cached by ETag."""
        def work(coll: Collection) -> tuple[str, bytes | None]:
            row = _row(coll, item_id)
            try:
                mtime = os.stat(row["path"]).st_mtime_ns
            except OSError as exc:
                raise HTTPException(404, f"item {item_id}: file {row['path']} is gone ({exc.strerror})") from None
            tag = hashlib.sha1(f"{item_id}|{row['content_hash']}|{mtime}|{size}".encode()).hexdigest()[:20]
            etag = f'"{tag}"'
            if request.headers.get("if-none-match") == etag:
                return etag, None
            data = thumbnails.get(etag)
            if data is None:
                try:
                    data = make_thumbnail(row["path"], size)
                except ImageLoadError as exc:
                    raise HTTPException(404, f"item {item_id}: {exc}") from None
                thumbnails.put(etag, data)
            return etag, data

        etag, data = await pool.run(work)
        headers = {"ETag": etag, "Cache-Control": f"private, max-age={THUMBNAIL_MAX_AGE_S}"}
        if data is None:
            return Response(status_code=304, headers=headers)
        return Response(content=data, media_type="image/jpeg", headers=headers)

    return app
