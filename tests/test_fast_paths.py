"""The throughput shortcuts give exactly what the plain paths give (no approximations):
OpenCV JPEG decoding vs Pillow, gray histograms vs their RGB replication, the batch
column form vs per-file results, the in-memory index that follows commits vs a rebuild,
and the cached generation vs another process's writes."""
from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike import Collection
from lookalike.descriptors.base import make_descriptor
from lookalike.errors import ImageLoadError
from lookalike.extraction import Extractor, Job, pack_jobs
from lookalike.images import _load_plain_jpeg, load_image, plain_jpeg_header


def _jpegs(shared_data: Path) -> list[Path]:
    files = sorted((shared_data / "cifar10" / "test").rglob("*.jpg"))[::500]
    files += sorted((shared_data / "lfw" / "images").rglob("*.jpg"))[::700]
    files += sorted((shared_data / "fixtures").rglob("*.jpg"))
    return files


def test_fast_jpeg_decoding_equals_pillow(shared_data, tmp_path):
    """Bytes take the OpenCV path where the JPEG is plain; paths take Pillow's."""
    photo = sorted((shared_data / "fixtures" / "neardup_ukbench" / "base_images").glob("*.jpg"))[0]
    img = Image.open(photo)
    extra = []
    for name, image, kwargs in [("gray.jpg", img.convert("L"), {}),
                                ("progressive.jpg", img.convert("RGB"), {"progressive": True}),
                                ("odd.jpg", img.convert("RGB").resize((333, 201)), {"quality": 70})]:
        path = tmp_path / name
        image.save(path, **kwargs)  # no EXIF block: these decode through OpenCV
        extra.append(path)
    fast = 0
    for path in _jpegs(shared_data) + extra:
        data = path.read_bytes()
        for mode in ("RGB", "L"):
            # (max_side, draft_side): draft_side None = max_side; (192, 96) is the
            # colour histogram's request (decode small, resize only beyond 192 px).
            for side, draft in ((None, None), (32, None), (96, None), (256, None), (192, 96)):
                for keep_gray in (False, True):
                    args = dict(mode=mode, max_side=side, keep_gray=keep_gray, draft_side=draft)
                    try:
                        want = load_image(path, **args)
                    except ImageLoadError:
                        with pytest.raises(ImageLoadError):
                            load_image(data, **args)
                        continue
                    got = load_image(data, **args)
                    fast += _load_plain_jpeg(data, mode, side, keep_gray, draft) is not None
                    assert (got.width, got.height) == (want.width, want.height)
                    assert got.pixels.dtype == np.uint8 and np.array_equal(got.pixels, want.pixels), \
                        (path.name, mode, side, draft, keep_gray)
    assert fast > 100  # the shortcut was really taken


def test_fast_path_leaves_odd_jpegs_to_pillow(shared_data, tmp_path):
    photo = sorted((shared_data / "fixtures" / "neardup_ukbench" / "base_images").glob("*.jpg"))[0]
    data = photo.read_bytes()
    assert _load_plain_jpeg(data[: len(data) // 2], "RGB", 96, False) is None  # truncated
    with pytest.raises(ImageLoadError, match="truncated|decode"):
        load_image(data[: len(data) // 2])
    buffer = io.BytesIO()
    Image.open(photo).convert("CMYK").save(buffer, "JPEG")
    assert _load_plain_jpeg(buffer.getvalue(), "RGB", None, False) is None  # 4 components
    assert load_image(buffer.getvalue()).pixels.shape == (480, 640, 3)
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.open(photo).save(buffer, "JPEG", exif=exif.tobytes())
    assert _load_plain_jpeg(buffer.getvalue(), "RGB", None, False) is None
    assert load_image(buffer.getvalue()).pixels.shape == (640, 480, 3)  # rotated by Pillow's path
    assert _load_plain_jpeg(b"not a jpeg at all", "RGB", None, False) is None
    # An MPO (two JPEGs, an APP2 "MPF" index in the first): Pillow opens it as frames.
    buffer = io.BytesIO()
    with Image.open(photo) as im:
        im.save(buffer, "MPO", save_all=True, append_images=[im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)])
    assert Image.open(io.BytesIO(buffer.getvalue())).format == "MPO"
    assert plain_jpeg_header(buffer.getvalue()) is None
    assert load_image(buffer.getvalue()).pixels.shape == (480, 640, 3)


@pytest.mark.parametrize("spec", ["color:space=hsv,bins=8", "color:space=rgb,bins=4",
                                  "color:space=lab,bins=6", "color:space=hsv,bins=5,grid=3,norm=l1"])
def test_gray_histogram_equals_rgb_replication(spec):
    rng = np.random.default_rng(0)
    gray = [rng.integers(0, 256, size=(int(h), int(w)), dtype=np.uint8)
            for h, w in rng.integers(1, 90, size=(30, 2))]
    d = make_descriptor(spec)
    rgb = [np.repeat(g[:, :, None], 3, axis=2) for g in gray]
    assert np.array_equal(d.transform_pixels(gray), d.transform_pixels(rgb))


def test_batch_columns_match_per_file_results(shared_data, ukbench_dir, tmp_path):
    """Gray LFW files stay one channel in the extractor and still give the vectors the
    query path gives; a corrupt file gets its reason and no vector."""
    files = [str(p) for p in sorted((shared_data / "lfw" / "images").rglob("*.jpg"))[:20]]
    files += [str(p) for p in sorted(ukbench_dir.rglob("*.jpg"))]
    d = make_descriptor("color:space=hsv,bins=8")
    batch = Extractor({"color": d}).run_packed(pack_jobs([Job(p) for p in files]))
    rows, matrix = batch.vectors["color"]
    assert batch.errors and all("corrupt" in batch.paths[i] for i in batch.errors)
    assert sorted(set(range(len(files))) - set(rows.tolist())) == sorted(batch.errors)
    for row, vec in zip(rows.tolist(), matrix):
        assert np.array_equal(vec, d.transform([files[row]])[0]), files[row]
    results = batch.results()
    assert [r.path for r in results] == files
    assert all((r.error is None) == ("color" in r.vectors) for r in results)


def test_index_that_follows_commits_equals_a_rebuild(ukbench_dir, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(ukbench_dir / "base_images", folder)
    coll = Collection.create(tmp_path / "c", descriptors=["color:space=hsv,bins=8"])
    coll.add(folder, workers=2, batch_size=3)
    # Change one file, add one: the in-memory index follows both commits.
    changed = sorted(folder.glob("*.jpg"))[0]
    Image.open(changed).transpose(Image.FLIP_TOP_BOTTOM).save(changed)
    os.utime(changed, (1, 1))
    shutil.copy(next(ukbench_dir.rglob("ukbench00120_gray.jpg")), folder / "gray.jpg")
    report = coll.add(folder, batch_size=3)
    assert (report.added, report.updated) == (1, 1)
    followed = coll.index()
    assert followed.n_removed == 1  # the old vector of the changed file is tombstoned
    ids, vectors = coll.vectors()
    fresh = Collection.open(tmp_path / "c")
    fresh._drop_index(fresh._key(None))  # rebuild from SQLite alone
    rebuilt = fresh.index()
    assert sorted(followed.ids.tolist()) == sorted(rebuilt.ids.tolist()) == sorted(ids.tolist())
    a, b = followed.search(vectors, k=5), rebuilt.search(vectors, k=5)
    assert np.array_equal(a.ids, b.ids) and np.allclose(a.distances, b.distances)
    # The saved index file is current: a third handle loads it without rebuilding.
    third = Collection.open(tmp_path / "c")
    assert np.array_equal(third.index().search(vectors, k=5).ids, a.ids)


def test_cached_generation_sees_other_writers(ukbench_dir, tmp_path):
    files = sorted((ukbench_dir / "base_images").glob("*.jpg"))
    writer = Collection.create(tmp_path / "c", descriptors=["color:space=hsv,bins=8"])
    writer.add(files[:5])
    reader = Collection.open(tmp_path / "c")
    query = reader.vectors()[1][:1]
    assert len(reader.search_vectors(query, k=20)[0].hits) == 5
    writer.add(files[5:])  # another connection commits
    assert len(reader.search_vectors(query, k=20)[0].hits) == len(files)
    writer.remove([files[0]])
    assert len(reader.search_vectors(query, k=20)[0].hits) == len(files) - 1
