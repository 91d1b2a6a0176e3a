"""HTTP API (lookalike.server) on a real collection of UKBench photos, through TestClient.

The collection holds the ten base photos plus the mixed folder (exact copy, resize,
rotation of ukbench00120, a copy and a deliberately corrupt file of ukbench09268); the
horizontally flipped ukbench00120 is kept out of it and used as the uploaded query.
The API is a thin shell, so its answers are checked against the Python API's.
"""
from __future__ import annotations

import io
import os
import re
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

for _module in ("fastapi", "python_multipart", "httpx"):  # the server extra, and httpx for TestClient
    try:
        __import__(_module)
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail(f"{_module} is missing under CI: install lookalike[server] and httpx", pytrace=False)
        pytest.skip(f"{_module} is not installed (pip install 'lookalike[server]' httpx)", allow_module_level=True)

with warnings.catch_warnings():  # starlette's TestClient warns that httpx will be replaced
    warnings.filterwarnings("ignore", message=".*httpx.*deprecated")
    from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from lookalike.collection import Collection  # noqa: E402
from lookalike.errors import CollectionError  # noqa: E402
from lookalike.server import create_app  # noqa: E402

QUERY = "mixed_images/ukbench00120_hflip.jpg"
FAMILY_00120 = {"base_images/ukbench00120.jpg", "mixed_images/ukbench00120.jpg",
                "mixed_images/ukbench00120_resize.jpg", "mixed_images/ukbench00120_rotation.jpg"}
CORRUPT = "mixed_images/ukbench09268_corrupt.jpg"


def rel(path: str) -> str:
    """Path relative to the fixture folder, e.g. 'base_images/ukbench00120.jpg'."""
    return "/".join(Path(path).parts[-2:])


def photo_of(path: Path) -> str:
    """The original UKBench photo a file shows (ground truth from its name)."""
    return path.stem.split("_")[0]


@pytest.fixture(scope="module")
def indexed(ukbench_dir, tmp_path_factory) -> tuple[Path, list[Path]]:
    files = sorted((ukbench_dir / "base_images").glob("*.jpg")) + sorted(
        p for p in (ukbench_dir / "mixed_images").glob("*.jpg") if "hflip" not in p.name)
    directory = tmp_path_factory.mktemp("server") / "coll"
    metadata = {str(p): {"tags": [photo_of(p)], "folder": p.parent.name} for p in files}
    with Collection.create(directory, descriptors=["color"]) as coll:
        report = coll.add(files, workers=1, metadata=metadata)
    assert report.added == len(files) - 1 and [rel(p) for p, _ in report.failed] == [CORRUPT]
    return directory, files


@pytest.fixture(scope="module")
def client(indexed):
    with TestClient(create_app(indexed[0], workers=2)) as c:
        yield c


def upload(client, path: Path, name: str | None = None, **form):
    with open(path, "rb") as fh:
        return client.post("/api/search", files={"file": (name or path.name, fh, "image/jpeg")},
                           data={k: str(v) for k, v in form.items()})


def item_id(client, relative: str) -> int:
    items = client.get("/api/items", params={"limit": 1000}).json()["items"]
    return next(i["id"] for i in items if rel(i["path"]) == relative)


def test_upload_finds_the_near_duplicates_first_and_matches_the_python_api(client, indexed, ukbench_dir):
    r = upload(client, ukbench_dir / QUERY, k=6)
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"query", "results"} and body["query"] == "ukbench00120_hflip.jpg"
    assert all(set(hit) == {"id", "path", "distance", "metadata"} for hit in body["results"])
    hits = body["results"]
    assert len(hits) == 6
    # The four other versions of the same photo come before any other photo.
    assert {rel(h["path"]) for h in hits[:4]} == FAMILY_00120
    assert all(photo_of(Path(h["path"])) != "ukbench00120" for h in hits[4:])
    distances = [h["distance"] for h in hits]
    assert distances == sorted(distances) and distances[3] < distances[4]
    assert hits[0]["metadata"] == {"tags": ["ukbench00120"], "folder": Path(hits[0]["path"]).parent.name}
    # Oracle: the same search through the Python API.
    with Collection.open(indexed[0]) as coll:
        expected = coll.search(str(ukbench_dir / QUERY), k=6)[0]
    assert [h["id"] for h in hits] == [h.id for h in expected.hits]
    np.testing.assert_allclose(distances, [h.distance for h in expected.hits], rtol=1e-6)


def test_similar_by_id_leaves_the_item_out_and_ranks_its_copies_first(client, indexed):
    base = item_id(client, "base_images/ukbench00120.jpg")
    r = client.get(f"/api/items/{base}/similar", params={"k": 3})
    assert r.status_code == 200
    body = r.json()
    assert body["query_id"] == base and rel(body["query"]) == "base_images/ukbench00120.jpg"
    assert [rel(h["path"]) for h in body["results"]] == [
        "mixed_images/ukbench00120.jpg", "mixed_images/ukbench00120_resize.jpg",
        "mixed_images/ukbench00120_rotation.jpg"]
    assert body["results"][0]["distance"] == pytest.approx(0.0, abs=1e-6)  # byte-identical copy
    with Collection.open(indexed[0]) as coll:
        expected = coll.search_item(base, k=3)
    assert [h["id"] for h in body["results"]] == [h.id for h in expected.hits]


def test_item_row(client, ukbench_dir):
    base = item_id(client, "base_images/ukbench00120.jpg")
    row = client.get(f"/api/items/{base}").json()
    assert row["path"] == str((ukbench_dir / "base_images/ukbench00120.jpg").resolve())
    assert (row["width"], row["height"], row["status"]) == (640, 480, "ok")
    assert row["size"] == (ukbench_dir / "base_images/ukbench00120.jpg").stat().st_size


def test_thumbnail_is_a_small_jpeg_of_the_item_with_cache_headers(client, ukbench_dir):
    base = item_id(client, "base_images/ukbench00120.jpg")
    r = client.get(f"/api/items/{base}/thumbnail", params={"size": 64})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content[:3] == b"\xff\xd8\xff"
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and thumb.size == (64, 48)  # 640x480 keeps its shape
    # It shows the item: close to Pillow's own reduction of the original file.
    reference = Image.open(ukbench_dir / "base_images/ukbench00120.jpg").convert("RGB").resize((64, 48), Image.BOX)
    diff = np.abs(np.asarray(thumb.convert("RGB"), float) - np.asarray(reference, float)).mean()
    assert diff < 12, diff
    assert "max-age" in r.headers["cache-control"] and r.headers["etag"]
    again = client.get(f"/api/items/{base}/thumbnail", params={"size": 64},
                       headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    bigger = client.get(f"/api/items/{base}/thumbnail", params={"size": 200})
    assert Image.open(io.BytesIO(bigger.content)).size == (200, 150)
    assert bigger.headers["etag"] != r.headers["etag"]
    assert client.get(f"/api/items/{base}/thumbnail", params={"size": 5000}).status_code == 400


def test_bad_uploads_get_400_naming_the_file(client, ukbench_dir):
    r = upload(client, ukbench_dir / CORRUPT)
    assert r.status_code == 400
    assert r.json() == {"error": "ukbench09268_corrupt.jpg: not a recognised image format"}

    empty = client.post("/api/search", files={"file": ("empty.jpg", b"", "image/jpeg")})
    assert empty.status_code == 400 and empty.json()["error"] == "empty.jpg: empty file (0 bytes)"

    text = client.post("/api/search", files={"file": ("notes.txt", b"not an image at all", "text/plain")})
    assert text.status_code == 400 and text.json()["error"].startswith("notes.txt: not a recognised image")

    whole = (ukbench_dir / "base_images/ukbench00120.jpg").read_bytes()
    cut = client.post("/api/search", files={"file": ("half.jpg", whole[: len(whole) // 2], "image/jpeg")})
    assert cut.status_code == 400 and re.match(r"half\.jpg: .*truncated", cut.json()["error"])

    # A client-chosen name never leaks a directory into the answer.
    sneaky = client.post("/api/search", files={"file": ("../../etc/passwd", b"xx", "image/jpeg")})
    assert sneaky.status_code == 400 and sneaky.json()["error"].startswith("passwd: ")

    missing = client.post("/api/search", data={"k": "3"})
    assert missing.status_code == 400 and missing.json()["error"].startswith("file: ")


def test_bad_parameters_get_400_with_the_reason(client, ukbench_dir):
    query = ukbench_dir / QUERY
    r = upload(client, query, k=0)
    assert r.status_code == 400 and r.json()["error"].startswith("k: ")
    r = upload(client, query, where="width>>3")
    assert r.status_code == 400 and "width>>3" in r.json()["error"]
    r = upload(client, query, descriptor="nope")
    assert r.status_code == 400 and "nope" in r.json()["error"] and "color" in r.json()["error"]
    r = client.get("/api/items", params={"status": "maybe"})
    assert r.status_code == 400 and r.json()["error"].startswith("status: ")
    assert client.get("/api/items/abc").status_code == 400


def test_unknown_ids_get_404(client):
    for url in ("/api/items/99999", "/api/items/99999/similar", "/api/items/99999/thumbnail"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert r.json() == {"error": "item 99999: not in this collection"}
    assert client.get("/static/../server/app.py").status_code == 404
    assert client.get("/api/nothing").json() == {"error": "Not Found"}


def test_an_item_whose_file_could_not_be_read_has_no_thumbnail_or_neighbours(client):
    r = client.get("/api/items", params={"status": "error"})
    assert r.json()["total"] == 1
    row = r.json()["items"][0]
    assert rel(row["path"]) == CORRUPT and row["error"] == "not a recognised image format"
    assert client.get(f"/api/items/{row['id']}/similar").status_code == 400
    assert client.get(f"/api/items/{row['id']}/thumbnail").status_code == 404


def test_uploads_over_the_limit_get_413(indexed, ukbench_dir):
    big = ukbench_dir / "base_images/ukbench00120.jpg"  # 208,803 bytes
    small = ukbench_dir / "mixed_images/ukbench00120_resize.jpg"  # 23,512 bytes
    with TestClient(create_app(indexed[0], max_upload_bytes=100_000, workers=1)) as c:
        r = upload(c, big)
        assert r.status_code == 413
        assert r.json()["error"].startswith("upload too large: ") and "100000 bytes" in r.json()["error"]
        assert upload(c, small, k=1).status_code == 200
        # Without a Content-Length (chunked body) the limit holds too.
        boundary = "lookalike-test-boundary"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"big.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + big.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
        chunks = (body[i:i + 16384] for i in range(0, len(body), 16384))
        r = c.post("/api/search", content=chunks,
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 413 and r.json()["error"] == (
            "upload too large: over the limit of 100000 bytes (0.1 MiB)")
        small_body = body.replace(big.read_bytes(), small.read_bytes())
        r = c.post("/api/search", content=iter([small_body[:5000], small_body[5000:]]),
                   headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 200 and rel(r.json()["results"][0]["path"]) == "mixed_images/ukbench00120_resize.jpg"


def test_filters_on_tags_columns_and_pages(client, indexed, ukbench_dir):
    files = indexed[1]
    readable = [p for p in files if rel(str(p)) != CORRUPT]
    r = client.get("/api/items", params={"where": "tag=ukbench00120"})
    assert r.status_code == 200
    assert {rel(i["path"]) for i in r.json()["items"]} == FAMILY_00120 and r.json()["total"] == 4
    # A filtered search only returns matching items, still nearest first.
    r = upload(client, ukbench_dir / QUERY, k=10, where="tag=ukbench09268")
    hits = r.json()["results"]
    assert [rel(h["path"]) for h in hits] == ["base_images/ukbench09268.jpg", "mixed_images/ukbench09268.jpg"] or \
        [rel(h["path"]) for h in hits] == ["mixed_images/ukbench09268.jpg", "base_images/ukbench09268.jpg"]
    r = upload(client, ukbench_dir / QUERY, k=10, where="folder=mixed_images and path~*ukbench00120*")
    assert {rel(h["path"]) for h in r.json()["results"]} == FAMILY_00120 - {"base_images/ukbench00120.jpg"}
    assert upload(client, ukbench_dir / QUERY, where="width>5000").json()["results"] == []
    # Pages in id order add up to the whole listing.
    everything = client.get("/api/items", params={"limit": 1000}).json()
    assert everything["total"] == len(readable) == len(everything["items"])
    pages = [client.get("/api/items", params={"limit": 5, "offset": o}).json() for o in (0, 5, 10)]
    assert [i["id"] for p in pages for i in p["items"]] == [i["id"] for i in everything["items"]]
    assert client.get("/api/items", params={"status": "all"}).json()["total"] == len(files)


def test_info_openapi_page_and_docs_are_served_locally(client):
    info = client.get("/api/info").json()
    assert (info["items"], info["errors"], info["default_descriptor"]) == (14, 1, "color")
    assert info["descriptors"]["color"]["vectors"] == 14
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/info", "/api/search", "/api/items", "/api/items/{item_id}",
            "/api/items/{item_id}/similar", "/api/items/{item_id}/thumbnail"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and 'id="file-input"' in page.text
    for asset in ("/", "/static/app.js", "/static/style.css", "/docs"):
        text = client.get(asset).text
        assert not re.search(r"(src|href)=[\"']?(https?:)?//", text), asset  # nothing from a CDN
        assert "cdn" not in text.lower(), asset


def test_concurrent_requests_each_use_their_own_connection(client, ukbench_dir):
    data = (ukbench_dir / QUERY).read_bytes()
    base = item_id(client, "base_images/ukbench00120.jpg")

    def one(i: int) -> list[int]:
        if i % 2:
            r = client.get(f"/api/items/{base}/similar", params={"k": 3})
        else:
            r = client.post("/api/search", files={"file": ("q.jpg", data, "image/jpeg")}, data={"k": "4"})
        assert r.status_code == 200, r.text
        return [h["id"] for h in r.json()["results"]]

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(one, range(12)))
    assert all(a == answers[0] for a in answers[0::2]) and all(a == answers[1] for a in answers[1::2])
    reader_threads = {t.name for t in threading.enumerate() if t.name.startswith("lookalike-reader")}
    assert 1 <= len(reader_threads) <= 2  # bounded by workers=2


def test_a_running_server_sees_items_a_writer_adds(ukbench_dir, tmp_path):
    directory = tmp_path / "coll"
    with Collection.create(directory, descriptors=["color"]) as coll:
        coll.add([ukbench_dir / "base_images/ukbench09012.jpg"], workers=1)
    with TestClient(create_app(directory, workers=1)) as c:
        first = upload(c, ukbench_dir / QUERY, k=5).json()["results"]
        assert [rel(h["path"]) for h in first] == ["base_images/ukbench09012.jpg"]
        with Collection.open(directory) as writer:  # another writer, while the server reads
            writer.add([ukbench_dir / "base_images/ukbench00120.jpg"], workers=1)
        after = upload(c, ukbench_dir / QUERY, k=5).json()["results"]
        assert rel(after[0]["path"]) == "base_images/ukbench00120.jpg" and len(after) == 2


def test_create_app_refuses_a_folder_that_is_not_a_collection(tmp_path):
    with pytest.raises(CollectionError, match="not a lookalike collection"):
        create_app(tmp_path)


def test_serve_command_is_registered():
    from typer.testing import CliRunner

    from lookalike import cli

    cli._register_extensions()
    result = CliRunner().invoke(cli.app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--host" in result.output and "--port" in result.output
