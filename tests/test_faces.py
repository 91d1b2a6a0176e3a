"""Face pipeline on real LFW faces: match, reject, no-face report, several faces, input
variants (gray, EXIF-rotated), verification, threshold calibration and clustering."""
from __future__ import annotations

import io
import pickle
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")

from lookalike.errors import ConfigError, ImageLoadError, InputError  # noqa: E402
from lookalike.faces import (  # noqa: E402
    Face,
    FaceNotFound,
    FacePipeline,
    agglomerative,
    calibrate_threshold,
    chinese_whispers,
    face_distance,
    read_lfw_pairs,
    select_face,
    verify,
)

PEOPLE = {"Aaron_Peirsol": (1, 2, 3), "Abel_Pacheco": (1, 2, 4), "Colin_Powell": (1,)}


def lfw_path(lfw_dir, name, i):
    return lfw_dir / "images" / name / f"{name}_{i:04d}.jpg"


@pytest.fixture(scope="module")
def pipe():
    return FacePipeline(upsample=1, select="center")


@pytest.fixture(scope="module")
def faces_by_image(pipe, lfw_dir):
    """Centre face of a few LFW images, embedded once for the module."""
    out = {}
    for name, indices in PEOPLE.items():
        for i in indices:
            face = pipe.embed_one(lfw_path(lfw_dir, name, i))
            assert isinstance(face, Face), face
            out[(name, i)] = face
    return out


def test_importing_faces_does_not_import_dlib():
    import subprocess

    code = "import lookalike.faces, sys; print('dlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_same_person_matches_and_different_people_are_rejected(faces_by_image):
    a1, a2 = faces_by_image[("Aaron_Peirsol", 1)], faces_by_image[("Aaron_Peirsol", 2)]
    b1 = faces_by_image[("Abel_Pacheco", 1)]
    assert a1.descriptor.shape == (128,) and a1.descriptor.dtype == np.float32
    assert a1.landmarks.shape == (5, 2)
    same = verify(a1.descriptor, a2.descriptor, threshold=0.6)
    diff = verify(a1.descriptor, b1.descriptor, threshold=0.6)
    assert same["same"] is True and same["distance"] < 0.5
    assert diff["same"] is False and diff["distance"] > 0.6
    # every same pair among these images is closer than every different pair
    items = list(faces_by_image.items())
    same_d, diff_d = [], []
    for i, ((na, _), fa) in enumerate(items):
        for (nb, _), fb in items[i + 1:]:
            (same_d if na == nb else diff_d).append(float(face_distance(fa.descriptor, fb.descriptor)))
    assert max(same_d) < 0.6 < min(diff_d)


def test_verify_dict_shape_and_distance_oracle():
    a = np.zeros(128, dtype=np.float32)
    b = np.zeros(128, dtype=np.float32)
    b[:4] = 0.25  # distance = sqrt(4 * 0.0625) = 0.5
    result = verify(a, b, threshold=0.6)
    assert set(result) == {"distance", "threshold", "same"}
    assert result == {"distance": pytest.approx(0.5), "threshold": 0.6, "same": True}
    assert verify(a, b, threshold=0.4)["same"] is False
    assert isinstance(result["distance"], float) and isinstance(result["same"], bool)
    with pytest.raises(InputError):
        verify(a, np.full(128, np.nan))
    with pytest.raises(InputError):
        verify(a, np.zeros(64))


def test_coil_object_gives_a_no_face_report_and_the_fallback_when_asked(coil_dir):
    obj = coil_dir / "obj5__0.png"
    report = FacePipeline().embed_one(obj)
    assert isinstance(report, FaceNotFound)
    assert report.source == str(obj) and "no face" in report.reason and report.image_size == (128, 128)
    assert FacePipeline().faces(obj) == []
    for kind, box in (("whole", (0, 0, 127, 127)), ("center", (35, 35, 92, 92))):
        face = FacePipeline(fallback=kind).embed_one(obj)
        assert isinstance(face, Face) and face.origin == f"fallback:{kind}"
        assert face.box == box and np.isnan(face.score)
        assert face.descriptor.shape == (128,) and np.all(np.isfinite(face.descriptor))


def test_batch_reports_failures_in_place(pipe, lfw_dir, coil_dir, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    good = lfw_path(lfw_dir, "Colin_Powell", 1)
    vectors, results = pipe.descriptors([good, coil_dir / "obj5__0.png", bad])
    assert isinstance(results[0], Face)
    assert isinstance(results[1], FaceNotFound)
    assert isinstance(results[2], ImageLoadError) and results[2].path == str(bad)
    assert np.all(np.isfinite(vectors[0])) and np.all(np.isnan(vectors[1:]))
    # batched embedding gives the single-image descriptor
    np.testing.assert_allclose(vectors[0], pipe.embed_one(good).descriptor, atol=1e-5)


def test_three_pasted_faces_are_found_where_they_were_pasted(pipe, lfw_dir, faces_by_image):
    sources = [("Aaron_Peirsol", 1), ("Abel_Pacheco", 1), ("Colin_Powell", 1)]
    canvas = Image.new("RGB", (900, 300), (128, 128, 128))
    offsets = [(20, 60), (330, 20), (640, 100)]
    for (name, i), (x, y) in zip(sources, offsets):
        # the central 160x160 of an LFW image holds the labelled face and no other
        crop = Image.open(lfw_path(lfw_dir, name, i)).convert("RGB").crop((45, 45, 205, 205))
        canvas.paste(crop, (x, y))
    faces = pipe.faces(np.asarray(canvas))
    assert len(faces) == 3
    by_x = sorted(faces, key=lambda f: f.center[0])
    for face, (x, y), key in zip(by_x, offsets, sources):
        cx, cy = face.center
        assert x < cx < x + 160 and y < cy < y + 160
        # the pasted face is still that person
        assert face_distance(face.descriptor, faces_by_image[key].descriptor) < 0.35
    # selection: nearest the canvas centre is the middle one
    assert select_face(faces, (900, 300), "center") is by_x[1]


def test_grayscale_input_gives_the_same_descriptor(pipe, lfw_dir, faces_by_image):
    path = lfw_path(lfw_dir, "Aaron_Peirsol", 1)
    gray = np.asarray(Image.open(path).convert("L"))
    assert gray.ndim == 2
    face = pipe.embed_one(gray)
    np.testing.assert_allclose(face.descriptor, faces_by_image[("Aaron_Peirsol", 1)].descriptor, atol=1e-5)


def test_exif_rotated_photo_still_matches(pipe, lfw_dir, faces_by_image, tmp_path):
    upright = Image.open(lfw_path(lfw_dir, "Abel_Pacheco", 2)).convert("RGB")
    # Orientation 6 says: turn the stored pixels 90 degrees clockwise to display them,
    # so store them turned 90 degrees counter-clockwise.
    stored = upright.rotate(90, expand=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    stored.save(path, quality=95, exif=exif.tobytes())
    face = pipe.embed_one(path)
    assert isinstance(face, Face)
    d = face_distance(face.descriptor, faces_by_image[("Abel_Pacheco", 2)].descriptor)
    assert d < 0.1  # only JPEG re-encoding differs
    assert face_distance(face.descriptor, faces_by_image[("Abel_Pacheco", 1)].descriptor) < 0.6


def test_selection_policies_on_known_boxes():
    lm = np.zeros((5, 2), np.float32)
    big_corner = Face((0, 0, 99, 99), 0.5, lm)
    small_centre = Face((110, 110, 139, 139), 0.2, lm)
    sure_side = Face((180, 100, 219, 139), 2.0, lm)
    faces = [big_corner, small_centre, sure_side]
    assert select_face(faces, (250, 250), "largest") is big_corner
    assert select_face(faces, (250, 250), "center") is small_centre
    assert select_face(faces, (250, 250), "best") is sure_side
    with pytest.raises(ConfigError):
        select_face(faces, (250, 250), "biggest")
    with pytest.raises(ConfigError):
        FacePipeline(fallback="everything")


def test_pipeline_pickles_without_dlib_objects_and_still_works(pipe, lfw_dir, faces_by_image):
    clone = pickle.loads(pickle.dumps(pipe))  # pipe has loaded its models by now
    assert clone.detector._impl is None and clone.aligner._predictor is None and clone.embedder._model is None
    face = clone.embed_one(lfw_path(lfw_dir, "Colin_Powell", 1))
    np.testing.assert_allclose(face.descriptor, faces_by_image[("Colin_Powell", 1)].descriptor, atol=1e-6)


def test_mirror_averages_the_flipped_chip(lfw_dir, faces_by_image):
    path = lfw_path(lfw_dir, "Aaron_Peirsol", 1)
    plain = faces_by_image[("Aaron_Peirsol", 1)]
    mirrored = FacePipeline(mirror=True, keep_chips=True).embed_one(path)
    flipped_only = FacePipeline().embedder.embed([mirrored.chip[:, ::-1]])[0]
    np.testing.assert_allclose(mirrored.descriptor, (plain.descriptor + flipped_only) / 2, atol=1e-5)
    assert mirrored.chip.shape == (150, 150, 3)


def test_calibrate_threshold_hand_computed():
    d = np.array([0.2, 0.3, 0.5, 0.55, 0.7, 0.9])
    same = np.array([True, True, True, False, False, False])
    best = calibrate_threshold(d, same)
    assert 0.5 <= best["threshold"] < 0.55 and best["accuracy"] == 1.0
    assert best["far"] == 0.0 and best["tar"] == 1.0
    # with one overlap: best accuracy is 5/6, any cut between 0.3 and 0.55
    same2 = np.array([True, True, False, True, False, False])
    b2 = calibrate_threshold(d, same2)
    assert b2["accuracy"] == pytest.approx(5 / 6)
    # target FAR 0: the largest threshold accepting no different pair
    far0 = calibrate_threshold(d, same2, target_far=0.0)
    assert 0.3 <= far0["threshold"] < 0.5 and far0["far"] == 0.0 and far0["tar"] == pytest.approx(2 / 3)
    with pytest.raises(InputError):
        calibrate_threshold(d, np.ones(6, bool))


def test_read_lfw_pairs_view1_and_view2(lfw_dir):
    dev = read_lfw_pairs(lfw_dir / "pairsDevTest.txt")
    assert len(dev) == 1000 and sum(p.same for p in dev) == 500
    assert dev[0].path_a.name == "Abdullah_Gul_0013.jpg" and dev[0].path_b.name == "Abdullah_Gul_0014.jpg"
    view2 = read_lfw_pairs(lfw_dir / "pairs.txt")
    assert len(view2) == 6000 and {p.fold for p in view2} == set(range(10))
    assert all(p.same for p in view2[:300]) and not any(p.same for p in view2[300:600])
    assert view2[0].path_a.name == "Abel_Pacheco_0001.jpg" and view2[0].path_b.name == "Abel_Pacheco_0004.jpg"
    assert all(p.path_a.exists() for p in dev[:20])


def test_clustering_groups_by_person(faces_by_image):
    keys = list(faces_by_image)
    x = np.stack([faces_by_image[k].descriptor for k in keys])
    truth = [k[0] for k in keys]
    for labels in (chinese_whispers(x, threshold=0.5), agglomerative(x, threshold=0.6)):
        assert labels.dtype == np.int64 and labels.shape == (len(keys),)
        assert labels[0] == 0  # renumbered in order of appearance
        # same person <=> same cluster
        for i in range(len(keys)):
            for j in range(len(keys)):
                assert (labels[i] == labels[j]) == (truth[i] == truth[j])
    assert len(chinese_whispers(np.zeros((0, 128)))) == 0
    with pytest.raises(InputError):
        agglomerative(np.full((3, 128), np.nan))


def test_settings_round_trip_rebuilds_an_equal_pipeline():
    pipe = FacePipeline(upsample=2, fallback="center", mirror=True, select="largest", num_jitters=2, padding=0.3)
    settings = pipe.settings()
    assert settings["upsample"] == 2 and settings["mirror"] is True and settings["fallback"] == "center"
    assert FacePipeline(**settings).settings() == settings
    assert repr(FacePipeline(**settings)) == repr(pipe)
