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
from lookalike.dedup.candidates import MultiHashRangeSearcher, exact_duplicate_pairs
from lookalike.dedup.groups import Group, Member, build_groups, choose_keeper, connected_groups
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
    from lookalike.dedup.pipeline import find_duplicates

    folder = workspace["folder"]
    result = find_duplicates(workspace["coll"], Thresholds())
    groups = [{str(Path(p).relative_to(folder)) for p in [g.keeper] + [m.path for m in g.members]}
              for g in result.groups]
    assert ROTATED_GROUP in groups  # flip, resize, 30-degree rotation, gray, exact copy
    assert {"base_images/ukbench09268.jpg", "mixed_images/ukbench09268.jpg"} in groups  # byte copy
    assert len(groups) == 2  # the eight other UKBench photos stay alone
    # The corrupt file is reported with a reason and skipped.
    assert [(Path(p).name, bool(r)) for p, r in result.skipped] == [("ukbench09268_corrupt.jpg", True)]
    group = next(g for g in result.groups if len(g.members) == 5)
    assert Path(group.keeper).name == "ukbench00120.jpg"  # largest resolution (ties: path)
    sims = {Path(m.path).name: m.similarity for m in group.members}
    assert sims["ukbench00120.jpg"] == 1.0  # identical bytes
    assert 0.9 < sims["ukbench00120_hflip.jpg"] < 1.0
    assert sims["ukbench00120_hflip.jpg"] == max(s for n, s in sims.items() if n != "ukbench00120.jpg")
    # The flip is a hash candidate only through its mirrored variant hash.
    by_name = {r["id"]: Path(r["path"]).name for r in workspace["coll"].items()}
    flip_pairs = [p for p in result.pairs if {by_name[p.a], by_name[p.b]} == {"ukbench00120.jpg", "ukbench00120_hflip.jpg"}]
    assert flip_pairs and all("hash" in p.sources and p.hash_distance <= 2 for p in flip_pairs)


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
    assert "dry run: 6 files would change" in dry.output
    assert snapshot(folder) == before and not dest.exists()  # dry run changes nothing
    payload = json.loads(out_json.read_text())
    assert set(payload) == {"groups"}
    assert all(set(g) == {"keeper", "members"} and all(set(m) == {"path", "similarity"} for m in g["members"])
               for g in payload["groups"])
    rows = list(csv.DictReader((root / "g.csv").open()))
    assert len(rows) == 2 + 6 and {r["role"] for r in rows} == {"keeper", "duplicate"}
    assert (root / "g.html").read_text().count("<img") == 8

    journal = root / "journal.json"
    applied = runner.invoke(app, args + ["--apply", "--journal", str(journal)])
    assert applied.exit_code == 0, applied.output
    after = snapshot(folder)
    moved = snapshot(dest)
    assert len(after) == len(before) - 6 and len(moved) == 6
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
            "ukbench00120_resize.jpg", "ukbench00120_rotation.jpg"] in names
    assert ["ukbench09268.jpg", "ukbench09268.jpg"] in names
    assert [Path(p).name for p, _ in result.skipped] == ["ukbench09268_corrupt.jpg"]
    assert len(coll) == 10  # checking does not add


def test_calibrate_cli_saves_thresholds_used_afterwards(workspace, tmp_path):
    folder = workspace["folder"]
    pairs = tmp_path / "pairs.csv"
    base = folder / "base_images"
    rows = [("base_images/ukbench00120.jpg", "mixed_images/ukbench00120_hflip.jpg", 1),
            ("base_images/ukbench00120.jpg", "mixed_images/ukbench00120_resize.jpg", 1),
            ("base_images/ukbench00120.jpg", "ukbench00120_gray.jpg", 1),
            ("base_images/ukbench00120.jpg", "mixed_images/ukbench00120_rotation.jpg", 1)]
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


def test_multihash_range_search_equals_brute_force():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, size=(3000, 8), dtype=np.uint8)
    # Plant neighbours at 0..12 bits from the first 40 codes.
    for i in range(40):
        bits = np.unpackbits(codes[i])
        flip = rng.choice(64, size=i % 13, replace=False)
        bits[flip] ^= 1
        codes[2000 + i] = np.packbits(bits)
    ids = np.arange(len(codes), dtype=np.int64) * 10
    radius = 10
    searcher = MultiHashRangeSearcher(codes, ids, radius, b=12)
    got = searcher.range_search(codes[:60])
    dist = np.unpackbits(codes[:60, None, :] ^ codes[None, :, :], axis=2).sum(axis=2)
    for q in range(60):
        want = set((ids[np.nonzero(dist[q] <= radius)[0]]).tolist())
        assert set(got[q][0].tolist()) == want
        assert np.all(np.diff(got[q][1]) >= 0)


def test_choose_thresholds_hand_case():
    # Duplicates: high similarity, or close hashes with medium similarity.
    sims = np.array([0.97, 0.85, 0.84, 0.86, 0.60])
    hash_d = np.array([30, 2, 40, 25, 1])
    labels = np.array([True, True, False, False, False])
    thresholds, scores = choose_thresholds(sims, hash_d, labels, radii=range(0, 11))
    assert scores["f1"] == 1.0
    t = thresholds
    pred = (sims >= t.cnn_any) | ((hash_d <= t.hash_radius) & (sims >= t.cnn_hash))
    assert pred.tolist() == labels.tolist()
    _, strict = choose_thresholds(sims, hash_d, labels, target_precision=1.0, radii=[0])
    assert strict["precision"] == 1.0 and strict["recall"] == 0.5 and strict["reached_target"]


def test_labelled_pairs_csv_and_threshold_overrides(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("a,b,is_duplicate\nx.jpg,y.jpg,1\nx.jpg,z.jpg,false\n")
    rows = read_labelled_pairs(path)
    assert [(Path(a).name, Path(b).name, y) for a, b, y in rows] == [("x.jpg", "y.jpg", True), ("x.jpg", "z.jpg", False)]
    t = Thresholds().with_overrides("cnn_any=0.95,hash_radius=8")
    assert t.cnn_any == 0.95 and t.hash_radius == 8
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
