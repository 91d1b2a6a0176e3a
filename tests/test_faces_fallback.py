"""The LFW-measured face settings: the no-face fallback chain (HOG upsample 2, CNN,
centre box), unit-length descriptors and their default threshold, and multi-process
``embed_many`` (same results, same order)."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")

from lookalike.errors import ConfigError  # noqa: E402
from lookalike.faces import (  # noqa: E402
    DEFAULT_THRESHOLD,
    LFW_FALLBACK,
    NORMALIZED_THRESHOLD,
    Face,
    FaceCollection,
    FaceNotFound,
    FacePipeline,
    parse_fallback,
)

# HOG at upsample 1 finds no face here; at upsample 2 it does (LFW, grayscale copy).
NEEDS_U2 = ("Alan_Greenspan", 1)


def lfw_path(lfw_dir, name, i):
    return lfw_dir / "images" / name / f"{name}_{i:04d}.jpg"


def test_parse_fallback_chains_and_errors():
    assert parse_fallback("none") == () and parse_fallback("") == ()
    assert parse_fallback("center") == ("center",)
    assert parse_fallback(LFW_FALLBACK) == ("u2", "cnn", "center")
    assert parse_fallback(" U2 + Whole ") == ("u2", "whole")
    for bad in ("everything", "center+u2", "u+center", "uu2", "cnn+whole+center"):
        with pytest.raises(ConfigError):
            parse_fallback(bad)
    assert FacePipeline(fallback=LFW_FALLBACK).settings()["fallback"] == "u2+cnn+center"


def test_chain_uses_the_first_step_that_finds_a_face(lfw_dir):
    path = lfw_path(lfw_dir, *NEEDS_U2)
    assert isinstance(FacePipeline().embed_one(path), FaceNotFound)
    face = FacePipeline(fallback=LFW_FALLBACK).embed_one(path)
    assert isinstance(face, Face) and face.origin == "fallback:u2"
    assert np.isfinite(face.score) and face.descriptor.shape == (128,)
    # the same face as asking for upsample 2 directly
    direct = FacePipeline(upsample=2).embed_one(path)
    assert direct.box == face.box
    np.testing.assert_allclose(direct.descriptor, face.descriptor, atol=1e-6)


def test_chain_ends_on_the_centre_box_when_no_detector_finds_a_face(coil_dir):
    obj = coil_dir / "obj5__0.png"  # an object, not a face
    report = FacePipeline(fallback="u2").embed_one(obj)  # a chain of detectors only: still nothing
    assert isinstance(report, FaceNotFound) and "fallback u2" in report.reason
    face = FacePipeline(fallback="u2+center").embed_one(obj)
    assert isinstance(face, Face) and face.origin == "fallback:center"
    assert face.box == (35, 35, 92, 92) and np.isnan(face.score)


def test_chain_is_not_used_when_the_detector_finds_a_face(lfw_dir):
    path = lfw_path(lfw_dir, "Aaron_Peirsol", 1)
    plain = FacePipeline().embed_one(path)
    chained = FacePipeline(fallback=LFW_FALLBACK).embed_one(path)
    assert chained.origin == "detector" and chained.box == plain.box
    np.testing.assert_allclose(chained.descriptor, plain.descriptor, atol=1e-6)


def test_unit_length_descriptors_and_their_threshold(lfw_dir, tmp_path):
    a, b = lfw_path(lfw_dir, "Aaron_Peirsol", 1), lfw_path(lfw_dir, "Aaron_Peirsol", 2)
    other = lfw_path(lfw_dir, "Abel_Pacheco", 1)
    raw = FacePipeline(mirror=True)
    unit = FacePipeline(mirror=True, normalize=True)
    assert raw.default_threshold == DEFAULT_THRESHOLD == 0.6 and unit.default_threshold == NORMALIZED_THRESHOLD
    r = raw.embed_one(a).descriptor
    u = unit.embed_one(a).descriptor
    assert np.linalg.norm(u) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(u, r / np.linalg.norm(r), atol=1e-5)  # normalised after the mirror average
    vecs, _ = unit.descriptors([a, b, other])
    same, diff = np.linalg.norm(vecs[0] - vecs[1]), np.linalg.norm(vecs[0] - vecs[2])
    assert same < NORMALIZED_THRESHOLD < diff
    settings = unit.settings()
    assert settings["normalize"] is True and FacePipeline(**settings).settings() == settings
    with FaceCollection.create(tmp_path / "coll", unit) as coll:
        assert coll.threshold == NORMALIZED_THRESHOLD
        assert coll.pipeline.embedder.normalize is True
    manifest = json.loads((tmp_path / "coll" / "manifest.json").read_text())
    assert "unit-length" in manifest["distance"]


def test_embed_many_with_worker_processes_matches_one_process(lfw_dir, coil_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    images = [lfw_path(lfw_dir, "Aaron_Peirsol", i) for i in (1, 2, 3)] + [coil_dir / "obj5__0.png", bad,
                                                                          lfw_path(lfw_dir, "Colin_Powell", 1)]
    pipe = FacePipeline(mirror=True)
    serial = pipe.embed_many(images)
    parallel = pipe.embed_many(images, workers=2, chunk_size=2)
    assert [type(x) for x in parallel] == [type(x) for x in serial]
    assert [type(x).__name__ for x in serial] == ["Face"] * 3 + ["FaceNotFound", "ImageLoadError", "Face"]
    for s, p in zip(serial, parallel):
        if isinstance(s, Face):
            assert s.box == p.box
            np.testing.assert_allclose(s.descriptor, p.descriptor, atol=1e-6)
        elif isinstance(s, FaceNotFound):
            assert s == p
        else:
            assert s.path == p.path and s.reason == p.reason
