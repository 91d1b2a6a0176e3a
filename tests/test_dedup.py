"""Near-duplicate detection on real UKBench variants, its actions, calibration and the
hash range search (checked against brute force)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.dedup.actions import plan_actions
from lookalike.dedup.calibrate import choose_thresholds, load_thresholds, read_labelled_pairs
from lookalike.dedup.candidates import exact_duplicate_pairs, hash_candidate_pairs
from lookalike.dedup.groups import Group, Member, build_groups, choose_keeper, connected_groups, linked_groups
from lookalike.dedup.mih import MultiIndexHash, brute_force_range_search
from lookalike.dedup.verify import Thresholds

ROTATED_GROUP = {"base_images/ukbench00120.jpg", "mixed_images/ukbench00120.jpg",
                 "mixed_images/ukbench00120_hflip.jpg", "mixed_images/ukbench00120_resize.jpg",
                 "mixed_images/ukbench00120_rotation.jpg", "ukbench00120_gray.jpg"}


def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(ukbench_dir, tmp_path_factory):
    """A writable copy of the UKBench fixture and its cache collection (built once)."""
    from lookalike.dedup.pipeline import prepare_folder

    root = tmp_path_factory.mktemp("dedup")
    folder = root / "photos"
    shutil.copytree(ukbench_dir, folder)
    for p in folder.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    folder.chmod(0o755)
    db = root / "cache"
    coll, failures = prepare_folder(folder, db=db)
    return {"root": root, "folder": folder, "db": db, "coll": coll, "failures": failures}


def _cli():
    from lookalike import cli

    cli._register_extensions()
    return cli.app


# ------------------------------------------------------------------ real data
def test_group_found_among_ukbench_variants(workspace):
    from lookalike.dedup.pipeline import find_duplicates, find_duplicates_in_folder

    folder = workspace["folder"]

    def named(result):
        return [{str(Path(p).relative_to(folder)) for p in [g.keeper] + [m.path for m in g.members]}
                for g in result.groups]

    # Default path (no CNN): flip, resize, gray and the exact copy; the 30-degree
    # rotation moves every hash too far.
    default = find_duplicates_in_folder(folder, workspace["root"] / "scan_cache")
    groups = named(default)
    assert ROTATED_GROUP - {"mixed_images/ukbench00120_rotation.jpg"} in groups
    assert {"base_images/ukbench09268.jpg", "mixed_images/ukbench09268.jpg"} in groups  # byte copy
    assert len(groups) == 2  # the eight other UKBench photos stay alone
    assert [(Path(p).name, bool(r)) for p, r in default.skipped] == [("ukbench09268_corrupt.jpg", True)]
    group = next(g for g in default.groups if len(g.members) == 4)
    assert Path(group.keeper).name == "ukbench00120.jpg"  # largest resolution (ties: path)
    sims = {Path(m.path).name: m.similarity for m in group.members}
    assert sims["ukbench00120.jpg"] == 1.0  # identical bytes
    assert 0.9 < sims["ukbench00120_hflip.jpg"] < 1.0
    # The flip is a hash candidate through its mirrored variant hash.
    flip = [p for p in default.pairs if {Path(default_path(default, p.a)).name, Path(default_path(default, p.b)).name}
            == {"ukbench00120.jpg", "ukbench00120_hflip.jpg"}]
    assert flip and all("hash" in p.sources and p.hash_distance <= 2 for p in flip)

    # Collection with CNN vectors: the CNN neighbour source + RANSAC add the rotation.
    with_cnn = find_duplicates(workspace["coll"], Thresholds(cnn_k=5, geo_inliers=60))
    groups = named(with_cnn)
    assert ROTATED_GROUP in groups
    assert len(groups) == 2
    assert [(Path(p).name, bool(r)) for p, r in with_cnn.skipped] == [("ukbench09268_corrupt.jpg", True)]


def default_path(result, item_id):
    for g in result.groups:
        if g.keeper_id == item_id:
            return g.keeper
        for m in g.members:
            if m.id == item_id:
                return m.path
    return f"/nonexistent/{item_id}"


def test_cli_dry_run_then_apply_then_undo_restores_folder(workspace):
    runner = CliRunner()
    app = _cli()
    folder, db, root = workspace["folder"], workspace["db"], workspace["root"]
    before = snapshot(folder)
    dest = root / "moved"
    out_json = root / "groups.json"
    args = ["dedup", str(folder), "--db", str(db), "--no-progress", "--move-to", str(dest)]
    dry = runner.invoke(app, args + ["--json", str(out_json), "--csv", str(root / "g.csv"),
                                     "--html", str(root / "g.html")])
    assert dry.exit_code == 0, dry.output
    assert "dry run: 5 files would change" in dry.output
    assert snapshot(folder) == before and not dest.exists()  # dry run changes nothing
    payload = json.loads(out_json.read_text())
    assert set(payload) == {"groups"}
    assert all(set(g) == {"keeper", "members"} and all(set(m) == {"path", "similarity"} for m in g["members"])
               for g in payload["groups"])
    rows = list(csv.DictReader((root / "g.csv").open()))
    assert len(rows) == 2 + 5 and {r["role"] for r in rows} == {"keeper", "duplicate"}
    assert (root / "g.html").read_text().count("<img") == 7

    journal = root / "journal.json"
    applied = runner.invoke(app, args + ["--apply", "--journal", str(journal)])
    assert applied.exit_code == 0, applied.output
    after = snapshot(folder)
    moved = snapshot(dest)
    assert len(after) == len(before) - 5 and len(moved) == 5
    assert all(before[k] == v for k, v in moved.items())  # same bytes, same relative paths
    keepers = {g["keeper"] for g in payload["groups"]}
    assert all(os.path.exists(k) for k in keepers)

    undone = runner.invoke(app, ["dedup", str(folder), "--undo", str(journal)])
    assert undone.exit_code == 0, undone.output
    assert snapshot(folder) == before  # same files, same bytes
    assert not dest.exists()


def test_check_new_files_against_collection(workspace, tmp_path):
    from lookalike.collection import Collection
    from lookalike.dedup.pipeline import FOLDER_DESCRIPTORS, check_new

    folder = workspace["folder"]
    coll = Collection.create(tmp_path / "base", descriptors=list(FOLDER_DESCRIPTORS))
    coll.add(folder / "base_images")
    new = sorted((folder / "mixed_images").glob("*.jpg")) + [folder / "ukbench00120_gray.jpg"]
    result = check_new(coll, new, Thresholds())
    names = [sorted(Path(p).name for p in [g.keeper] + [m.path for m in g.members]) for g in result.groups]
    assert ["ukbench00120.jpg", "ukbench00120.jpg", "ukbench00120_gray.jpg", "ukbench00120_hflip.jpg",
            "ukbench00120_resize.jpg"] in names
    assert ["ukbench09268.jpg", "ukbench09268.jpg"] in names
    assert [Path(p).name for p, _ in result.skipped] == ["ukbench09268_corrupt.jpg"]
    assert len(coll) == 10  # checking does not add


def test_calibrate_cli_saves_thresholds_used_afterwards(workspace, tmp_path):
    folder = workspace["folder"]
    pairs = tmp_path / "pairs.csv"
    base = folder / "base_images"
    rows = [("base_images/ukbench00120.jpg", "mixed_images/ukbench00120_hflip.jpg", 1),
            ("base_images/ukbench00120.jpg", "mixed_images/ukbench00120_resize.jpg", 1),
            ("base_images/ukbench00120.jpg", "ukbench00120_gray.jpg", 1)]
    others = sorted(p.name for p in base.glob("*.jpg"))
    rows += [(f"base_images/{a}", f"base_images/{b}", 0) for a, b in zip(others, others[1:])]
    with pairs.open("w") as fh:
        fh.write("a,b,is_duplicate\n")
        fh.writelines(f"{folder / a},{folder / b},{y}\n" for a, b, y in rows)
    coll_dir = tmp_path / "coll"
    shutil.copytree(workspace["db"], coll_dir)
    result = CliRunner().invoke(_cli(), ["calibrate", str(coll_dir), str(pairs), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["scores"]["f1"] == 1.0 and out["scores"]["pairs"] == len(rows)
    saved = json.loads((coll_dir / "dedup.json").read_text())
    assert saved["thresholds"] == out["thresholds"]
    assert load_thresholds(coll_dir).to_dict() == out["thresholds"]


# ------------------------------------------------------------------ pieces
def test_union_find_groups_and_keeper_policies():
    assert connected_groups([(1, 2), (3, 4), (2, 5), (6, 6)]) == [[1, 2, 5], [3, 4]]
    items = {1: {"path": "/a/long/name.jpg", "width": 100, "height": 100, "size": 900, "mtime": 5.0},
             2: {"path": "/a/b.jpg", "width": 200, "height": 100, "size": 500, "mtime": 9.0},
             3: {"path": "/a/c.jpg", "width": 200, "height": 100, "size": 700, "mtime": 1.0}}
    rows = list(items.values())
    assert choose_keeper(rows, "resolution")["path"] == "/a/c.jpg"  # most pixels, then bytes
    assert choose_keeper(rows, "size")["path"] == "/a/long/name.jpg"
    assert choose_keeper(rows, "oldest")["path"] == "/a/c.jpg"
    assert choose_keeper(rows, "shortest-path")["path"] == "/a/b.jpg"
    groups = build_groups([(1, 2), (2, 3)], items, lambda a, b: {1: 0.7, 2: 0.9}[b], "resolution")
    assert [(m.path, m.similarity) for m in groups[0].members] == [("/a/b.jpg", 0.9), ("/a/long/name.jpg", 0.7)]


def test_exact_pairs_by_content_hash():
    assert exact_duplicate_pairs({5: "x", 2: "x", 9: "y", 7: "x", 3: None}) == [(2, 5), (2, 7)]


@pytest.mark.parametrize("radius", [0, 3, 7, 10])
def test_multi_index_hashing_equals_brute_force(radius):
    rng = np.random.default_rng(radius)
    codes = rng.integers(0, 256, size=(4000, 8), dtype=np.uint8)
    # Planted neighbours 0..12 bits from the first 60 codes, and a few exact repeats.
    for i in range(60):
        bits = np.unpackbits(codes[i])
        bits[rng.choice(64, size=i % 13, replace=False)] ^= 1
        codes[3000 + i] = np.packbits(bits)
    codes[3900:3905] = codes[5]
    queries = np.concatenate([codes[:200], rng.integers(0, 256, size=(50, 8), dtype=np.uint8)])
    got = MultiIndexHash(codes).range_search(queries, radius)
    # Oracle: the obvious loop over every (query, code) pair.
    dist = np.unpackbits(queries[:, None, :] ^ codes[None, :, :], axis=2).sum(axis=2)
    qi, ci = np.nonzero(dist <= radius)
    assert np.array_equal(got[0], qi) and np.array_equal(got[1], ci)
    assert np.array_equal(got[2], dist[qi, ci])
    assert len(qi) > 200  # the planted pairs are really there
    flat = brute_force_range_search(codes, queries, radius)
    assert all(np.array_equal(a, b) for a, b in zip(got, flat))
    # 2 and 8 chunks give the same answer (radius // chunks flips per chunk).
    for chunks in (2, 8):
        other = MultiIndexHash(codes, chunks=chunks).range_search(queries, radius, batch=37)
        assert all(np.array_equal(a, b) for a, b in zip(got, other))


def test_candidate_pairs_same_by_mih_and_flat_scan():
    rng = np.random.default_rng(7)
    variants = rng.integers(0, 256, size=(1500, 7, 8), dtype=np.uint8)
    for i in range(100):  # a mirrored/cropped copy: row 1000+i's hash near a variant of row i
        bits = np.unpackbits(variants[i, 1 + i % 6])
        bits[rng.choice(64, size=i % 9, replace=False)] ^= 1
        variants[1000 + i, 0] = np.packbits(bits)
    mih = hash_candidate_pairs(variants, 8, method="mih")
    flat = hash_candidate_pairs(variants, 8, method="flat")
    assert all(np.array_equal(a, b) for a, b in zip(mih, flat))
    found = set(zip(mih[0].tolist(), mih[1].tolist()))
    assert all((i, 1000 + i) in found for i in range(100))


def test_centre_crop_variant_catches_border_crop(ukbench_dir):
    from PIL import Image

    from lookalike.dedup.scan import DEDUP_VARIANTS, gray_pixels_variants
    from lookalike.images import load_image

    gray = load_image(ukbench_dir / "base_images" / "ukbench00120.jpg", mode="L").pixels
    h, w = gray.shape
    cropped = np.asarray(Image.fromarray(gray).crop((round(0.1 * w), round(0.1 * h), w - round(0.1 * w),
                                                     h - round(0.1 * h))))
    v_orig, _ = gray_pixels_variants(gray)
    v_crop, _ = gray_pixels_variants(cropped)
    d = np.unpackbits(v_orig ^ v_crop[0], axis=1).sum(axis=1)
    crop80 = DEDUP_VARIANTS.index("crop80")
    assert d[crop80] <= 4 < d[0]  # the 80% centre variant matches; the plain hash does not
    a, b, dist = hash_candidate_pairs(np.stack([v_orig, v_crop]), radius=6)
    assert a.tolist() == [0] and b.tolist() == [1] and dist[0] == d[crop80]


def test_linked_groups_do_not_chain():
    # a~b and b~c accepted, but a~c is not a duplicate: a chain, not one group.
    verdict = {("a", "b"): True, ("b", "c"): True, ("a", "c"): False, ("c", "d"): True, ("b", "d"): False}
    accept = lambda pairs: np.array([verdict.get(tuple(sorted(p)), False) for p in pairs])
    assert connected_groups([("a", "b"), ("b", "c"), ("c", "d")]) == [["a", "b", "c", "d"]]
    assert linked_groups([("a", "b"), ("b", "c"), ("c", "d")], accept) == [["a", "b"], ["c", "d"]]
    # One failed check among many passes does not split a group (majority vote).
    verdict.update({("a", "c"): True, ("a", "d"): True, ("b", "d"): False, ("c", "d"): True})
    assert linked_groups([("a", "b"), ("b", "c"), ("c", "d")], accept) == [["a", "b", "c", "d"]]


def test_choose_thresholds_hand_case():
    # Duplicates: close hashes and high edge correlation.
    hash_d = np.array([1, 3, 2, 9, 12, 4])
    ncc = np.array([0.99, 0.97, 0.98, 0.80, 0.70, 0.95], np.float32)
    grad = np.array([0.95, 0.90, 0.55, 0.40, 0.30, 0.60], np.float32)
    labels = np.array([True, True, False, False, False, False])
    thresholds, scores = choose_thresholds(hash_d, ncc, grad, labels)
    assert scores["f1"] == 1.0 and scores["positives"] == 2
    assert ((thresholds.score(hash_d, ncc, grad) >= 0) == labels).all()
    _, strict = choose_thresholds(hash_d, ncc, grad, labels, target_precision=1.0)
    assert strict["precision"] == 1.0 and strict["reached_target"]


def test_labelled_pairs_csv_and_threshold_overrides(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("a,b,is_duplicate\nx.jpg,y.jpg,1\nx.jpg,z.jpg,false\n")
    rows = read_labelled_pairs(path)
    assert [(Path(a).name, Path(b).name, y) for a, b, y in rows] == [("x.jpg", "y.jpg", True), ("x.jpg", "z.jpg", False)]
    t = Thresholds().with_overrides("cnn_any=0.97,hash_radius=8")
    assert t.cnn_any == 0.97 and t.hash_radius == 8
    from lookalike.errors import ConfigError

    with pytest.raises(ConfigError):
        Thresholds().with_overrides("nope=1")


def test_actions_never_touch_files_outside_the_folder(tmp_path):
    inside, outside = tmp_path / "in", tmp_path / "out"
    inside.mkdir()
    outside.mkdir()
    (outside / "secret.jpg").write_bytes(b"x")
    (inside / "keep.jpg").write_bytes(b"k")
    (inside / "dup.jpg").write_bytes(b"d")
    os.symlink(outside / "secret.jpg", inside / "link.jpg")
    group = Group(str(inside / "keep.jpg"), [Member(str(inside / "dup.jpg"), 0.9),
                                              Member(str(outside / "secret.jpg"), 0.9),
                                              Member(str(inside / "link.jpg"), 0.9)])
    plan = plan_actions([group], "delete", inside)
    assert [Path(s.source).name for s in plan.steps] == ["dup.jpg"]
    assert sorted(Path(p).name for p, _ in plan.refused) == ["link.jpg", "secret.jpg"]
    from lookalike.dedup.actions import apply_plan, undo

    apply_plan(plan, tmp_path / "j.json")
    assert not (inside / "dup.jpg").exists() and (outside / "secret.jpg").exists()
    report = undo(tmp_path / "j.json")
    assert report.restored == [] and "cannot be restored" in report.failed[0][1]
