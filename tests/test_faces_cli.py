"""`lookalike faces` on real LFW photos: a small named gallery, identify (known person,
stranger, several faces on one canvas), verify, cluster, calibrate; the face collection's
templates against slow numpy oracles."""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("dlib")
pytest.importorskip("face_recognition_models")

from lookalike.cli import _register_extensions, app  # noqa: E402
from lookalike.faces.collection import FaceCollection, names_from_csv  # noqa: E402

GALLERY = {"Colin_Powell": (1, 2), "Tony_Blair": (1, 2), "Gerhard_Schroeder": (1, 2)}
HELD_OUT = {"Colin_Powell": 3, "Tony_Blair": 3, "Gerhard_Schroeder": 3}
STRANGER = ("Aaron_Peirsol", 1)

_register_extensions()
runner = CliRunner()


def lfw(lfw_dir, name, i):
    return lfw_dir / "images" / name / f"{name}_{i:04d}.jpg"


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def gallery(lfw_dir, tmp_path_factory):
    """A gallery folder DIR/NAME/*.jpg indexed into a face collection once."""
    root = tmp_path_factory.mktemp("faces")
    folder = root / "gallery"
    for name, indices in GALLERY.items():
        (folder / name).mkdir(parents=True)
        for i in indices:
            shutil.copy(lfw(lfw_dir, name, i), folder / name)
    db = root / "coll"
    report = json.loads(cli("faces", "index", folder, "--db", db, "--json"))
    return {"root": root, "folder": folder, "db": db, "report": report}


def test_index_stores_faces_identities_and_skips_unchanged(gallery, lfw_dir):
    report, db = gallery["report"], gallery["db"]
    assert report["added"] == 6 and report["faces"] == 6 and report["failed"] == [] and report["no_face"] == []
    assert report["collection"]["identities"] == 3 and report["collection"]["threshold"] == 0.6
    with sqlite3.connect(db / "faces.sqlite") as con:
        rows = con.execute("SELECT f.box, f.landmarks, length(f.descriptor), i.name, im.path FROM faces f "
                           "JOIN identities i ON i.id = f.identity_id JOIN images im ON im.id = f.image_id").fetchall()
    assert len(rows) == 6
    for box, landmarks, nbytes, name, path in rows:
        assert len(json.loads(box)) == 4 and np.array(json.loads(landmarks)).shape == (5, 2)
        assert nbytes == 128 * 4 and f"/{name}/" in path
    with FaceCollection.open(db) as coll:
        assert coll.identities() == {name: 2 for name in GALLERY}
        assert coll.index().ntotal == 6
    again = json.loads(cli("faces", "index", gallery["folder"], "--db", db, "--json"))
    assert again["added"] == 0 and again["unchanged"] == 6


def test_incremental_add_and_stale_index_rebuild(gallery, lfw_dir, tmp_path):
    folder, db = tmp_path / "gallery", tmp_path / "coll"
    shutil.copytree(gallery["folder"], folder, copy_function=shutil.copy2)  # keeps mtimes
    shutil.copytree(gallery["db"], db)
    with sqlite3.connect(db / "faces.sqlite") as con:  # the copy's files live in the copied folder
        con.execute("UPDATE images SET path = replace(path, ?, ?)",
                    (str(gallery["folder"].resolve()), str(folder.resolve())))
    shutil.copy(lfw(lfw_dir, "Tony_Blair", 4), folder / "Tony_Blair")
    report = json.loads(cli("faces", "index", folder, "--db", db, "--json"))
    assert report["added"] == 1 and report["unchanged"] == 6 and report["faces"] == 1
    info = json.loads(cli("faces", "info", db, "--json"))
    assert info["identity_photos"]["Tony_Blair"] == 3 and info["faces"] == 7
    # a writer that dies after committing but before saving the index: the index is
    # rebuilt from SQLite on next use (its generation stamp no longer matches)
    with FaceCollection.open(db, writable=True) as coll:
        with coll.db:
            coll.db.execute("DELETE FROM images WHERE path LIKE '%Tony_Blair_0004.jpg'")
            coll._bump_generation()
    with FaceCollection.open(db) as coll:
        assert coll.index().ntotal == 6 and coll.identities()["Tony_Blair"] == 2


def test_identify_known_person_and_stranger(gallery, lfw_dir):
    for name, i in HELD_OUT.items():
        out = json.loads(cli("faces", "identify", gallery["db"], lfw(lfw_dir, name, i), "--json", "-k", "3"))
        assert len(out["faces"]) == 1
        face = out["faces"][0]
        assert face["name"] == name, face
        assert [c["name"] for c in face["candidates"]][0] == name and len(face["candidates"]) == 3
        distances = [c["distance"] for c in face["candidates"]]
        assert distances == sorted(distances) and face["distance"] == distances[0] <= out["threshold"]
    stranger = json.loads(cli("faces", "identify", gallery["db"], lfw(lfw_dir, *STRANGER), "--json"))
    assert stranger["faces"][0]["name"] == "unknown"
    assert stranger["faces"][0]["distance"] > stranger["threshold"] == 0.6


def test_several_faces_on_one_canvas_are_identified_each(gallery, lfw_dir, tmp_path):
    people = [("Tony_Blair", 3), STRANGER, ("Colin_Powell", 3)]
    canvas = Image.new("RGB", (900, 300), (128, 128, 128))
    offsets = [(20, 60), (330, 20), (640, 100)]
    for (name, i), (x, y) in zip(people, offsets):
        canvas.paste(Image.open(lfw(lfw_dir, name, i)).convert("RGB").crop((45, 45, 205, 205)), (x, y))
    path = tmp_path / "group.jpg"
    canvas.save(path, quality=95)
    page = tmp_path / "group.html"
    out = json.loads(cli("faces", "identify", gallery["db"], path, "--json", "--html", page))
    faces = sorted(out["faces"], key=lambda f: f["box"][0])
    assert len(faces) == 3
    for face, (x, y) in zip(faces, offsets):
        left, top, right, bottom = face["box"]
        assert x < (left + right) / 2 < x + 160 and y < (top + bottom) / 2 < y + 160
    assert [f["name"] for f in faces] == ["Tony_Blair", "unknown", "Colin_Powell"]
    text = page.read_text()
    assert text.count("data:image/jpeg;base64,") == 3 and "unknown" in text


def test_verify_json_shape_and_decisions(lfw_dir):
    same = json.loads(cli("faces", "verify", lfw(lfw_dir, "Tony_Blair", 1), lfw(lfw_dir, "Tony_Blair", 3), "--json"))
    assert set(same) == {"distance", "threshold", "same"}
    assert same["same"] is True and same["threshold"] == 0.6 and 0 < same["distance"] < 0.6
    diff = json.loads(cli("faces", "verify", lfw(lfw_dir, "Tony_Blair", 1), lfw(lfw_dir, *STRANGER), "--json",
                          "--threshold", "0.55"))
    assert diff == {"distance": pytest.approx(diff["distance"]), "threshold": 0.55, "same": False}
    assert diff["distance"] > 0.6


def test_cluster_groups_photos_by_person(gallery, lfw_dir, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    truth = {}
    for name in GALLERY:
        for i in (*GALLERY[name], HELD_OUT[name]):
            target = folder / f"photo_{len(truth):02d}.jpg"  # names hide the person
            shutil.copy(lfw(lfw_dir, name, i), target)
            truth[str(target)] = name
    page = tmp_path / "clusters.html"
    # Chinese whispers at dlib's 0.5 splits one grayscale photo off (its nearest same-person
    # neighbour is at 0.50); the nearest different-person pair here is at 0.59.
    for method, cut in (("agglomerative", "0.6"), ("chinese-whispers", "0.55")):
        out = json.loads(cli("faces", "cluster", folder, "--method", method, "--threshold", cut, "--json",
                             "--no-mirror", "--html", page))
        assert out["faces"] == 9 and out["no_face"] == []
        # purity 1 and one cluster per person
        groups = [{truth[m["path"]] for m in c["faces"]} for c in out["clusters"]]
        assert all(len(g) == 1 for g in groups), groups
        assert sorted(len(c["faces"]) for c in out["clusters"]) == [3, 3, 3]
    assert page.read_text().count("data:image/jpeg;base64,") == 9


def test_calibrate_stores_the_threshold_and_identify_uses_it(gallery, lfw_dir, tmp_path):
    db = tmp_path / "coll"
    shutil.copytree(gallery["db"], db)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\nTony_Blair\t1\t2\nColin_Powell\t1\t2\n"
                     "Tony_Blair\t1\tAaron_Peirsol\t1\nColin_Powell\t1\tGerhard_Schroeder\t1\n")
    out = json.loads(cli("faces", "calibrate", db, "--pairs", pairs, "--images", lfw_dir / "images", "--json"))
    with FaceCollection.open(db) as coll:
        _, x, names = coll.descriptors(named_only=True)
        assert coll.threshold == out["threshold"] and "pairs.txt" in coll.manifest["threshold_source"]
    # oracle: with FAR 1e-3 on 2 different pairs, the largest threshold accepting neither
    by_name = {n: x[[m == n for m in names]] for n in GALLERY}
    same_d = [np.linalg.norm(v[0] - v[1]) for v in by_name.values()][:2]
    assert out["far"] == 0.0 and out["n_pairs"] == 4 and out["tar"] == 1.0
    assert max(same_d[:2]) <= out["threshold"]
    ident = json.loads(cli("faces", "identify", db, lfw(lfw_dir, "Tony_Blair", 3), "--json"))
    assert ident["threshold"] == out["threshold"]


def test_templates_against_numpy_oracles(gallery, lfw_dir):
    with FaceCollection.open(gallery["db"]) as coll:
        _, x, names = coll.descriptors(named_only=True)
        query = coll.pipeline.embed_one(lfw(lfw_dir, "Tony_Blair", 3)).descriptor
        by_set = dict(coll.rank_identities(query[None], k=3, template="set")[0])
        by_mean = dict(coll.rank_identities(query[None], k=3, template="mean")[0])
    for name in GALLERY:
        v = x[[n == name for n in names]].astype(np.float64)
        assert by_set[name] == pytest.approx(min(np.linalg.norm(v - query, axis=1)), abs=1e-4)
        unit = v / np.linalg.norm(v, axis=1, keepdims=True)
        template = unit.mean(0) / np.linalg.norm(unit.mean(0)) * np.linalg.norm(v, axis=1).mean()
        assert by_mean[name] == pytest.approx(np.linalg.norm(template - query), abs=1e-4)


def test_names_csv(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"")
    csv_file = tmp_path / "names.csv"
    csv_file.write_text("path,name\na.jpg,Alice\n/abs/b.jpg,Bob\n\n")
    assert names_from_csv(csv_file) == {str((tmp_path / "a.jpg").resolve()): "Alice", "/abs/b.jpg": "Bob"}


def test_errors_are_one_line_with_exit_code_1(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lookalike.cli", "faces", "identify", str(tmp_path / "nope"),
                           str(tmp_path / "x.jpg")], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error:") and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([sys.executable, "-m", "lookalike.cli", "faces", "calibrate", str(tmp_path),
                           "--pairs", str(tmp_path / "missing.txt")], capture_output=True, text=True)
    assert proc.returncode == 1 and "missing.txt" in proc.stderr
    # no --pairs and no LFW where the default looks: a clear message, exit 1
    env = {**os.environ, "LOOKALIKE_SHARED_DATA": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "lookalike.cli", "faces", "calibrate", str(tmp_path)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "pairsDevTrain.txt" in proc.stderr and "--pairs" in proc.stderr
