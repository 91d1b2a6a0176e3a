"""Cohort score normalisation (lookalike.faces.score_norm) against slow obvious loops."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lookalike.errors import InputError
from lookalike.faces.score_norm import (ScoreNormalizer, cohort_stats, cross_scores,
                                        normalized_scores, raw_scores)


def _score_loop(u, v, score):
    if score == "cosine":
        return sum(a * b for a, b in zip(u, v)) / (math.sqrt(sum(a * a for a in u)) * math.sqrt(sum(b * b for b in v)))
    return -math.sqrt(sum((a - b) ** 2 for a, b in zip(u, v)))


def _stats_loop(x, cohort, top_k, score):
    s = sorted((_score_loop(x, c, score) for c in cohort), reverse=True)
    if top_k is not None:
        s = s[:top_k]
    mean = sum(s) / len(s)
    return mean, math.sqrt(sum((t - mean) ** 2 for t in s) / len(s))


def _normalized_loop(a, b, cohort, method, top_k, score):
    out = []
    for u, v in zip(a, b):
        raw = _score_loop(u, v, score)
        mu_a, sd_a = _stats_loop(u, cohort, top_k, score)
        mu_b, sd_b = _stats_loop(v, cohort, top_k, score)
        za, zb = (raw - mu_a) / sd_a, (raw - mu_b) / sd_b
        out.append({"z": za, "t": zb, "s": (za + zb) / 2}[method])
    return np.array(out)


@pytest.mark.parametrize("score", ["cosine", "euclidean"])
@pytest.mark.parametrize("method", ["z", "t", "s"])
@pytest.mark.parametrize("top_k", [None, 2, 5, 40])
def test_normalized_scores_match_loop(score, method, top_k):
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(6, 8)), rng.normal(size=(6, 8))
    cohort = rng.normal(size=(23, 8))
    got = normalized_scores(a, b, cohort, method=method, top_k=top_k, score=score)
    want = _normalized_loop(a.tolist(), b.tolist(), cohort.tolist(), method, top_k, score)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("score", ["cosine", "euclidean"])
def test_cohort_stats_blocks_and_cross_scores(score):
    rng = np.random.default_rng(3)
    x, cohort = rng.normal(size=(11, 5)), rng.normal(size=(9, 5))
    s = cross_scores(x, cohort, score)
    for i in range(11):
        for j in range(9):
            assert s[i, j] == pytest.approx(_score_loop(x[i].tolist(), cohort[j].tolist(), score), abs=1e-9)
    m1, s1 = cohort_stats(x, cohort, 4, score, block=3)  # blocks cut across rows
    m2, s2 = cohort_stats(x, cohort, 4, score, block=1000)
    np.testing.assert_allclose(m1, m2)
    np.testing.assert_allclose(s1, s2)
    for i in range(11):
        mu, sd = _stats_loop(x[i].tolist(), cohort.tolist(), 4, score)
        assert m1[i] == pytest.approx(mu, abs=1e-9) and s1[i] == pytest.approx(sd, abs=1e-9)


def test_raw_scores_and_normalizer_object():
    rng = np.random.default_rng(1)
    a, b, cohort = rng.normal(size=(4, 6)), rng.normal(size=(4, 6)), rng.normal(size=(30, 6))
    np.testing.assert_allclose(raw_scores(a, b, "euclidean"), -np.linalg.norm(a - b, axis=1))
    norm = ScoreNormalizer(cohort, method="s", top_k=10, score_kind="cosine")
    want = _normalized_loop(a.tolist(), b.tolist(), cohort.tolist(), "s", 10, "cosine")
    np.testing.assert_allclose(norm.score(a, b), want, rtol=1e-9, atol=1e-9)
    assert norm.settings() == {"method": "s", "top_k": 10, "score": "cosine", "cohort_size": 30}
    # S-norm is symmetric in the two sides; Z and T swap.
    np.testing.assert_allclose(norm.score(a, b), norm.score(b, a))
    za = normalized_scores(a, b, cohort, "z")
    np.testing.assert_allclose(za, normalized_scores(b, a, cohort, "t"))


def test_bad_inputs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 4))
    with pytest.raises(InputError):
        normalized_scores(a, a, rng.normal(size=(5, 3)))  # descriptor sizes differ
    with pytest.raises(InputError):
        normalized_scores(a, a[:2], rng.normal(size=(5, 4)))
    with pytest.raises(InputError):
        normalized_scores(a, a, rng.normal(size=(5, 4)), method="q")
    with pytest.raises(InputError):
        cohort_stats(a, rng.normal(size=(5, 4)), top_k=1)
    with pytest.raises(InputError):
        ScoreNormalizer(np.full((3, 4), np.nan))


def test_real_lfw_pairs(lfw_dir):
    """A few DevTest pairs with a cohort of DevTrain people (real dlib descriptors, the
    pipeline's defaults): normalised same-person scores stay well above different-person
    ones, and the normalisation matches the loop on real descriptors."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    from lookalike.faces import FacePipeline, read_lfw_pairs

    test = read_lfw_pairs(lfw_dir / "pairsDevTest.txt")
    train = read_lfw_pairs(lfw_dir / "pairsDevTrain.txt")
    pairs = test[:5] + test[500:505]  # 5 same-person pairs, 5 different-person pairs
    test_people = {q.parent.name for p in test for q in (p.path_a, p.path_b)}
    cohort_paths = [p.path_a for p in train[:600:10] if p.path_a.parent.name not in test_people]
    pipe = FacePipeline(fallback="center")
    x, _ = pipe.descriptors([q for p in pairs for q in (p.path_a, p.path_b)] + cohort_paths)
    a, b, cohort = x[0:2 * len(pairs):2], x[1:2 * len(pairs):2], x[2 * len(pairs):]
    assert np.isfinite(x).all() and len(cohort) >= 40
    got = normalized_scores(a, b, cohort, "s", 20, "cosine")
    want = _normalized_loop(a.tolist(), b.tolist(), cohort.tolist(), "s", 20, "cosine")
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    same = np.array([p.same for p in pairs])
    assert same.sum() == 5
    assert np.sum(got[same] > got[~same].max()) >= 4  # (one same-person pair here is a hard one)
    assert got[same].mean() > got[~same].mean() + 3  # several cohort standard deviations apart


def test_cli_calibrate_score_norm_and_verify(lfw_dir, tmp_path):
    """`faces calibrate --score-norm` stores a cohort (the calibration people left out) and a
    score threshold; `faces verify --db` decides on the normalised score, equal to the
    library's on the stored cohort; --no-score-norm falls back to the distance."""
    pytest.importorskip("dlib")
    pytest.importorskip("face_recognition_models")
    import json
    import shutil

    from typer.testing import CliRunner

    from lookalike.cli import _register_extensions, app
    from lookalike.faces.collection import COHORT_FILE, FaceCollection

    _register_extensions()
    runner = CliRunner()

    def cli(*args):
        result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    img = lambda name, i: lfw_dir / "images" / name / f"{name}_{i:04d}.jpg"  # noqa: E731
    folder = tmp_path / "gallery" / "Tony_Blair"
    folder.mkdir(parents=True)
    shutil.copy(img("Tony_Blair", 1), folder)
    db = tmp_path / "coll"
    cli("faces", "index", tmp_path / "gallery", "--db", db)
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("2\nTony_Blair\t1\t2\nColin_Powell\t1\t2\n"
                     "Tony_Blair\t1\tAaron_Peirsol\t1\nColin_Powell\t1\tGerhard_Schroeder\t1\n")
    # cohort: 6 images of 4 people, one of them (Colin_Powell) also in the calibration pairs
    cohort = tmp_path / "cohort.txt"
    cohort.write_text("2\nGeorge_W_Bush\t1\t2\nColin_Powell\t3\t4\n"
                      "Hugo_Chavez\t1\tJacques_Chirac\t1\nColin_Powell\t3\tHugo_Chavez\t2\n")
    out = json.loads(cli("faces", "calibrate", db, "--pairs", pairs, "--images", lfw_dir / "images", "--score-norm",
                         "--cohort", cohort, "--cohort-images", lfw_dir / "images", "--top-k", "3", "--json"))
    sn = out["score_norm"]
    assert sn["cohort_size"] == 5 and sn["cohort_people_left_out"] == 1  # Colin_Powell's 2 images dropped
    assert sn["method"] == "s" and sn["top_k"] == 3 and sn["score"] == "cosine" and sn["tar"] == 1.0
    with FaceCollection.open(db) as coll:
        norm, thr = coll.score_normalizer()
        assert (db / COHORT_FILE).exists() and thr == sn["threshold"] and norm.cohort.shape == (5, 128)
        pipe = coll.pipeline
    a = pipe.embed_one(img("Tony_Blair", 1)).descriptor
    b = pipe.embed_one(img("Tony_Blair", 2)).descriptor
    got = json.loads(cli("faces", "verify", img("Tony_Blair", 1), img("Tony_Blair", 2), "--db", db, "--json"))
    want = _normalized_loop([a.tolist()], [b.tolist()], norm.cohort.astype(np.float64).tolist(), "s", 3, "cosine")
    assert got["score"] == pytest.approx(float(want[0]), abs=1e-6) and got["same"] is True
    assert got["threshold"] == thr and got["score_norm"]["cohort_size"] == 5
    info = json.loads(cli("faces", "info", db, "--json"))["score_norm"]
    assert info["cohort_size"] == 5 and info["threshold"] == thr and info["score"] == "cosine"
    assert "score normalisation" in cli("faces", "info", db)
    plain = json.loads(cli("faces", "verify", img("Tony_Blair", 1), img("Tony_Blair", 2), "--db", db, "--json",
                           "--no-score-norm"))
    assert "score" not in plain and plain["distance"] == pytest.approx(got["distance"], abs=1e-6)
