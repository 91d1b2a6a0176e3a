"""Test-time jitter (``FacePipeline(num_jitters=N)``): lookalike's seeded version of dlib's
``jitter_image``. It must change the descriptor a little (not at all would mean it is not
applied; a lot would mean broken crops), be deterministic (same image -> same descriptor,
whatever the call order, batch or process) and keep people apart, on real LFW faces."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")

from lookalike.faces import FaceEmbedder, FacePipeline  # noqa: E402
from lookalike.faces.embed import jitter_chip, jitter_perturbations  # noqa: E402

@pytest.fixture(scope="module")
def chips(lfw_trio):
    pipe = FacePipeline(keep_chips=True)
    return [pipe.embed_one(path).chip for path in lfw_trio]


def test_perturbations_follow_dlibs_ranges_and_are_seeded():
    p = jitter_perturbations(10)
    assert p == jitter_perturbations(10)  # fixed seed
    assert jitter_perturbations(4) == p[:4]  # N jitters are the first N of any longer list
    for dx, dy, scale, angle, _ in p:
        assert abs(dx) <= 0.02 and abs(dy) <= 0.02 and 0.97 <= scale < 1.0 and abs(angle) <= 3 * np.pi / 180
    assert [flip for *_, flip in p] == [i % 2 == 1 for i in range(10)]  # every second copy mirrored


def test_jittered_copies_are_small_moves_of_the_chip(chips):
    chip = chips[0]
    copies = jitter_chip(chip, jitter_perturbations(4))
    assert len(copies) == 4 and all(c.shape == chip.shape and c.dtype == np.uint8 for c in copies)
    # an unflipped copy is close to the chip pixel for pixel, a flipped one to the mirrored chip
    diff = lambda a, b: float(np.mean(np.abs(a.astype(int) - b.astype(int))))  # noqa: E731
    assert diff(copies[0], chip) < diff(copies[0], chip[:, ::-1])
    assert diff(copies[1], chip[:, ::-1]) < diff(copies[1], chip)
    assert all(diff(c, c_ref) > 0 for c, c_ref in zip(copies, [chip, chip[:, ::-1]] * 2))  # really moved


def test_jitter_changes_the_descriptor_a_little_and_deterministically(chips):
    plain = FaceEmbedder().embed(chips)
    jit = FaceEmbedder(num_jitters=4).embed(chips)
    moved = np.linalg.norm(jit - plain, axis=1)
    assert np.all(moved > 0.02) and np.all(moved < 0.25), moved  # measured ~0.11-0.12
    # deterministic: a fresh model, another order, one chip at a time
    again = FaceEmbedder(num_jitters=4).embed(chips[::-1])[::-1]
    np.testing.assert_allclose(again, jit, atol=1e-6)
    single = FaceEmbedder(num_jitters=4, batch_size=3)
    one = np.stack([single.embed([c])[0] for c in chips])
    np.testing.assert_allclose(one, jit, atol=1e-5)
    # equals the mean of the plain descriptors of the jittered copies
    copies = jitter_chip(chips[0], jitter_perturbations(4))
    np.testing.assert_allclose(jit[0], FaceEmbedder().embed(copies).mean(axis=0), atol=1e-5)
    # num_jitters 0 and 1 both mean "no jitter"
    np.testing.assert_allclose(FaceEmbedder(num_jitters=1).embed(chips), plain, atol=1e-6)


def test_jittered_pipeline_keeps_same_and_different_people_apart(lfw_trio):
    pipe = FacePipeline(fallback="u2+cnn+center", mirror=True, num_jitters=4, normalize=True)
    a, b, c = (pipe.embed_one(path).descriptor for path in lfw_trio)
    assert abs(np.linalg.norm(a) - 1) < 1e-5
    same, different = np.linalg.norm(a - b), np.linalg.norm(a - c)
    assert same < pipe.default_threshold < different
    settings = pipe.settings()
    assert settings["num_jitters"] == 4 and FacePipeline(**settings).settings() == settings
    # workers give the same descriptors as one process (seeded jitter, not per-process state)
    paths = list(lfw_trio) * 2
    serial = np.stack([r.descriptor for r in pipe.embed_many(paths)])
    forked = np.stack([r.descriptor for r in pipe.embed_many(paths, workers=2, chunk_size=2)])
    np.testing.assert_allclose(forked, serial, atol=1e-6)


def test_cli_verify_with_the_lfw_setting_matches_the_library(lfw_trio):
    import json

    from typer.testing import CliRunner

    from lookalike.cli import _register_extensions, app

    _register_extensions()
    a, b = lfw_trio[:2]
    args = ["faces", "verify", str(a), str(b), "--fallback", "u2+cnn+center", "--mirror", "--normalize",
            "--jitters", "4", "--json"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    pipe = FacePipeline(fallback="u2+cnn+center", mirror=True, normalize=True, num_jitters=4)
    expected = np.linalg.norm(pipe.embed_one(a).descriptor - pipe.embed_one(b).descriptor)
    assert out["same"] is True and out["threshold"] == pytest.approx(0.42)
    assert out["distance"] == pytest.approx(float(expected), abs=1e-5)
    bad = CliRunner().invoke(app, ["faces", "verify", str(a), str(b), "--jitters", "-1"])
    assert bad.exit_code == 1
