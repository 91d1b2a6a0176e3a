"""Fusion: late fusion across stored descriptors, and concatenation as a descriptor."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection, ConfigError, make_descriptor
from lookalike.distances import exact_distances as pairwise_distances
from lookalike.fusion import fuse_rankings


def test_rrf_by_hand():
    # a: ranks 1 and 2 -> 1/61 + 1/62; b: ranks 2 and 1 -> same; c: rank 3 once.
    fused = fuse_rankings([[10, 20, 30], [20, 10, -1]], [1.0, 1.0], k=3)
    assert [i for i, _ in fused] == [10, 20, 30]
    assert fused[0][1] == pytest.approx(-(1 / 61 + 1 / 62))
    assert fused[2][1] == pytest.approx(-1 / 63)


def test_pairwise_distances_match_definitions():
    rng = np.random.default_rng(0)
    q, x = rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    np.testing.assert_allclose(pairwise_distances(q, x, "l2"),
                               np.linalg.norm(q[:, None] - x[None], axis=-1), rtol=1e-5)
    bits = rng.integers(0, 256, (4, 2), dtype=np.uint8)
    ham = pairwise_distances(bits[:1], bits, "hamming")[0]
    assert ham[0] == 0 and ham[1] == np.unpackbits(bits[0] ^ bits[1]).sum()


def test_concat_descriptor_weights_and_roundtrip(coil_dir):
    files = [coil_dir / f"obj{o}__{a}.png" for o in (2, 3) for a in (0, 90)]
    d = make_descriptor("concat:parts=color:space=lab&bins=4|colormoments,weights=2|1")
    assert make_descriptor(d.spec).spec == d.spec
    x = d.transform(files)
    a = make_descriptor("color:space=lab,bins=4").transform(files)
    b = make_descriptor("colormoments").transform(files)
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    expected = 2 * ((unit(a)[0] - unit(a)[1]) ** 2).sum() + ((unit(b)[0] - unit(b)[1]) ** 2).sum()
    assert ((x[0] - x[1]) ** 2).sum() == pytest.approx(expected, rel=1e-4)
    with pytest.raises(ConfigError):
        make_descriptor("concat:parts=color|colormoments,weights=1")


def test_late_fusion_on_coil(coil_dir, tmp_path):
    files = [coil_dir / f"obj{o}__{a}.png" for o in range(2, 42) for a in range(0, 360, 30)
             if (coil_dir / f"obj{o}__{a}.png").exists()]
    coll = Collection.create(tmp_path / "c", descriptors=["color:space=hsv,bins=8", "colormoments:grid=2"])
    coll.add(files)
    queries = [coil_dir / f"obj{o}__0.png" for o in range(2, 42)]
    label = lambda p: Path(p).name.split("__")[0]  # noqa: E731

    def top1_rate(results):
        # hits[0] is the query itself (distance 0); hits[1] is the nearest other item.
        return np.mean([label(r.hits[1].path) == label(r.query) for r in results])

    rates = {key: top1_rate(coll.search([str(q) for q in queries], k=2, descriptor=key))
             for key in coll.descriptor_keys}
    weighted = top1_rate(coll.search_fused([str(q) for q in queries], k=2, rule="weighted"))
    rrf = top1_rate(coll.search_fused([str(q) for q in queries], k=2, rule="rrf"))
    # Fusion should not fall below the weaker descriptor, and is usually at least the best.
    assert weighted >= min(rates.values()) and rrf >= min(rates.values())
    assert max(weighted, rrf) >= max(rates.values()) - 0.05
    hits = coll.search_fused(str(queries[0]), k=5)[0].hits
    assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    assert hits[0].distance == pytest.approx(0.0, abs=1e-3)
