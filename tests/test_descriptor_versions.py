"""Descriptor versions: a collection keeps the recipe its vectors were made with, and a
stored vector equals the vector of the same file given as a query (one decode per
distinct decode request, never a resize of another descriptor's decode)."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image
import pytest

from lookalike import Collection
from lookalike.descriptors.base import make_descriptor
from lookalike.errors import ConfigError
from lookalike.images import load_image


def _lfw_files(lfw_dir, n=12):
    return sorted((lfw_dir / "images").rglob("*.jpg"))[:n]


def test_colour_histogram_counts_the_draft_decode_without_resizing(lfw_dir):
    path = _lfw_files(lfw_dir, 1)[0]  # 250 x 250 JPEG: draft decode at 1/2 scale
    d = make_descriptor("color")
    assert (d.draft_side, d.max_side) == (96, 192)
    pixels = load_image(path, max_side=d.max_side, draft_side=d.draft_side).pixels
    assert pixels.shape[:2] == (125, 125)  # decoded small, counted as is
    legacy = make_descriptor("color", version=1)
    assert legacy.spec == "color:cap=-1" and legacy.max_side == legacy.draft_side == 96
    new, old = d.transform([path])[0], legacy.transform([path])[0]
    assert not np.array_equal(new, old)
    # Same statistics from fewer or more pixels: the two recipes stay close.
    assert np.linalg.norm(new - old) < 0.1


def test_newer_version_is_refused_and_bad_cap_named():
    with pytest.raises(ConfigError, match="newer lookalike"):
        make_descriptor("color", version=99)
    with pytest.raises(ConfigError, match="cap"):
        make_descriptor("color:size=96,cap=50")


def test_collection_records_and_keeps_the_version(lfw_dir, tmp_path):
    files = _lfw_files(lfw_dir)
    coll = Collection.create(tmp_path / "new", descriptors=["color"])
    assert coll.manifest["descriptors"]["color"]["version"] == 2
    coll.add(files)
    for path in files[:3]:
        hit = coll.search(path, k=1)[0].hits[0]
        assert hit.path == str(path.resolve()) and hit.distance == pytest.approx(0.0, abs=1e-6)
    coll.close()

    # A collection written before versions existed: its entry has none = version 1,
    # and both its stored vectors and its queries use the old recipe (shrink to size).
    old_dir = tmp_path / "old"
    coll = Collection.create(old_dir, descriptors=["color"])
    coll.close()
    manifest = json.loads((old_dir / "manifest.json").read_text())
    del manifest["descriptors"]["color"]["version"]
    (old_dir / "manifest.json").write_text(json.dumps(manifest))
    coll = Collection.open(old_dir)
    assert coll.descriptor().spec == "color:cap=-1"
    coll.add(files, workers=2)  # workers rebuild the descriptor from its spec
    ids, stored = coll.vectors()
    by_path = {coll.get(int(i))["path"]: v for i, v in zip(ids, stored)}
    legacy = make_descriptor("color", version=1).transform(files)
    for f, want in zip(files, legacy):
        assert np.array_equal(by_path[str(f.resolve())], want)
    coll.close()


def test_two_descriptors_each_store_their_query_vector(lfw_dir, ukbench_dir, tmp_path):
    """colour (draft 96, cap 192) beside a family with another request: each stored
    vector is exactly what describing the file alone gives."""
    files = _lfw_files(lfw_dir, 4) + sorted((ukbench_dir / "base_images").glob("*.jpg"))[:4]
    specs = ["color", "lbp", "phash"]
    coll = Collection.create(tmp_path / "c", descriptors=specs)
    coll.add(files, workers=1)
    for key in coll.descriptor_keys:
        ids, stored = coll.vectors(key)
        want = coll.descriptor(key).transform(files)
        row = {str(f.resolve()): i for i, f in enumerate(files)}
        for item_id, vector in zip(ids, stored):
            path = coll.get(int(item_id))["path"]
            assert np.array_equal(vector, want[row[path]]), (key, path)
    coll.close()


def test_descriptors_share_a_decode_only_at_the_same_draft_scale(lfw_dir, ukbench_dir, tmp_path):
    """A 250 px LFW JPEG decodes at 1/2 for the colour histogram (draft 96) but at full
    size for lbp (draft 256) and phash (none): two decodes. A PNG never decodes reduced:
    one decode for all three. Either way each stored vector is the query vector."""
    from lookalike.extraction import Extractor
    from lookalike.images import draft_scale, jpeg_frame_size

    jpeg = _lfw_files(lfw_dir, 1)[0]
    png = tmp_path / "photo.png"
    Image.open(sorted((ukbench_dir / "base_images").glob("*.jpg"))[0]).save(png)
    data = jpeg.read_bytes()
    assert [draft_scale(jpeg_frame_size(data), side) for side in (None, 96, 256, 62, 31)] == [1, 2, 1, 4, 8]
    assert draft_scale(jpeg_frame_size(png.read_bytes()), 96) == 1
    ex = Extractor({k: make_descriptor(k) for k in ("color", "lbp", "phash")})
    assert sorted(len(g) for _, g in ex._decodes(data, ex._all_keys)) == [1, 2]
    assert len(ex._decodes(png.read_bytes(), ex._all_keys)) == 1
    coll = Collection.create(tmp_path / "c", descriptors=["color", "lbp", "phash"])
    coll.add([jpeg, png])
    for key in coll.descriptor_keys:
        ids, stored = coll.vectors(key)
        for item_id, vector in zip(ids, stored):
            path = coll.get(int(item_id))["path"]
            assert np.array_equal(vector, coll.descriptor(key).transform([path])[0]), (key, path)
    coll.close()
