"""Every registered descriptor through the same checks (DESIGN.md's contract test)."""
from __future__ import annotations

import numpy as np
import pytest

from lookalike import Collection, ConfigError, ImageLoadError, NotFittedError, make_descriptor
from lookalike.descriptors import registered_descriptors

FAMILIES = sorted(registered_descriptors())
#: Families whose default needs a user file: they are covered by their own tests.
NEEDS_FILE = set()


@pytest.fixture(scope="module")
def images(coil_dir, ukbench_dir):
    coil = [coil_dir / f"obj{o}__{a}.png" for o in range(2, 24) for a in (0, 90, 180)]
    photos = sorted((ukbench_dir / "base_images").glob("*.jpg"))[:6]
    return [str(p) for p in coil + photos]


def build(name, images):
    d = make_descriptor(name)
    if d.requires_fit:
        with pytest.raises(NotFittedError):
            d.transform(images[:1])
        d.fit(images)
    return d


@pytest.mark.parametrize("name", FAMILIES)
def test_contract(name, images, tmp_path):
    d = build(name, images)
    assert d.metric in ("l2", "cosine", "ip", "hamming")
    x = d.transform(images)
    assert x.shape == (len(images), d.code_size)
    assert x.dtype == (np.uint8 if d.metric == "hamming" else np.float32)
    if d.metric != "hamming":
        assert np.isfinite(x).all()
    # Deterministic, and a batch of one equals that row of a batch.
    np.testing.assert_allclose(d.transform(images), x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(d.transform([images[3]])[0], x[3], rtol=1e-4, atol=1e-5)
    # Different images give different vectors.
    assert not np.allclose(x[0], x[-1])
    # The spec round-trips.
    again = make_descriptor(d.spec)
    assert again.spec == d.spec and again.dim == d.dim and again.metric == d.metric
    # Learned state survives save/load.
    if d.requires_fit:
        restored = make_descriptor(d.spec).load_state(d.save_state())
        np.testing.assert_allclose(restored.transform(images[:3]), x[:3], rtol=1e-4, atol=1e-5)
    # Bad input names the file.
    with pytest.raises(ImageLoadError) as info:
        d.transform([str(tmp_path / "missing.jpg")])
    assert "missing.jpg" in str(info.value)


@pytest.mark.parametrize("name", FAMILIES)
def test_inside_a_collection(name, images, tmp_path):
    coll = Collection.create(tmp_path / "c", descriptors=[name])
    report = coll.add(images, fit_sample=len(images))
    assert report.added == len(images) and not report.failed
    reopened = Collection.open(tmp_path / "c")
    hit = reopened.search(images[4], k=1)[0].hits[0]
    assert hit.path.endswith(images[4].split("/")[-1]) and hit.distance <= 1e-3


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="valid names"):
        make_descriptor("nope")
    with pytest.raises(ConfigError, match="no parameter"):
        make_descriptor("color:colour=red")
    with pytest.raises(ConfigError, match="not a valid int"):
        make_descriptor("color:bins=many")
