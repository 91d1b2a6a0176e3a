"""68-point alignment (``FaceAligner(landmarks=68)``): the chip is cut from the same face box
as the 5-point one but aligned on dlib's 68 landmarks. On real LFW faces it must give a
different chip of the same shape, and descriptors that still keep people apart."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")

from lookalike.faces import FaceEmbedder, FacePipeline  # noqa: E402
from lookalike.faces.align import FaceAligner  # noqa: E402

@pytest.fixture(scope="module")
def faces(lfw_trio):
    """(pixels, box) of the detector's centre face in each image."""
    pipe = FacePipeline()
    out = []
    for path in lfw_trio:
        pixels = pipe.load(path)
        dets = pipe.detector.detect(pixels)
        assert dets, path
        out.append((pixels, dets[0].box))
    return out


def test_rejects_other_point_counts():
    with pytest.raises(ValueError):
        FaceAligner(landmarks=7)


def test_68_point_chip_differs_from_5_point_and_has_the_chip_shape(faces):
    a5, a68 = FaceAligner(), FaceAligner(landmarks=68)
    pixels, box = faces[0]
    lm5, lm68 = a5.landmarks(pixels, box), a68.landmarks(pixels, box)
    assert lm5.shape == (5, 2) and lm68.shape == (68, 2)
    c5, c68 = a5.chip(pixels, box, lm5), a68.chip(pixels, box, lm68)
    assert c68.shape == c5.shape == (150, 150, 3) and c68.dtype == np.uint8
    diff = float(np.mean(np.abs(c5.astype(int) - c68.astype(int))))
    assert diff > 1.0, diff  # really aligned differently (measured ~9 grey levels on LFW)
    # ... yet the same face: the two chips' descriptors are close
    d = FaceEmbedder().embed([c5, c68])
    assert np.linalg.norm(d[0] - d[1]) < 0.3


def test_68_point_descriptors_keep_people_apart(faces):
    aligner = FaceAligner(landmarks=68)
    chips = [aligner.chip(p, box, aligner.landmarks(p, box)) for p, box in faces]
    d = FaceEmbedder(mirror=True, normalize=True).embed(chips)
    same = np.linalg.norm(d[0] - d[1])
    other = min(np.linalg.norm(d[0] - d[2]), np.linalg.norm(d[1] - d[2]))
    assert same < other and same < 0.42 < other, (same, other)


def test_pipeline_option_and_settings_round_trip(lfw_trio):
    pipe = FacePipeline(landmarks=68, keep_chips=True)
    assert pipe.settings()["landmarks"] == 68
    assert "landmarks" not in FacePipeline().settings()  # the default (5) keeps older manifests equal
    again = FacePipeline(**pipe.settings())
    assert again.aligner.num_landmarks == 68
    a68 = pipe.embed_one(lfw_trio[0])
    a5 = FacePipeline(keep_chips=True).embed_one(lfw_trio[0])
    assert a68.landmarks.shape == (68, 2) and a68.box == a5.box
    assert a68.chip.shape == a5.chip.shape and not np.array_equal(a68.chip, a5.chip)


def test_cli_verify_landmarks_68(lfw_trio):
    import json

    from typer.testing import CliRunner

    from lookalike.cli import _register_extensions, app

    _register_extensions()
    result = CliRunner().invoke(app, ["faces", "verify", str(lfw_trio[0]),
                                      str(lfw_trio[1]), "--landmarks", "68", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["same"] is True
    bad = CliRunner().invoke(app, ["faces", "verify", str(lfw_trio[0]),
                                   str(lfw_trio[2]), "--landmarks", "7"])
    assert bad.exit_code != 0
