"""The trainer end to end on real images: learning, resume, export as a descriptor, CLI.

Small on purpose (2 shared cores): 32x32 CIFAR-10 test JPEGs and COIL-100 views at
32-64 px, a few dozen steps.
"""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from lookalike.training.backbones import Lite0Backbone  # noqa: E402
from lookalike.training.data import (  # noqa: E402
    Augmenter,
    decode_images,
    eval_batch,
    load_labelled,
    split_by_class,
)
from lookalike.training.export import load_trained_model  # noqa: E402
from lookalike.training.loop import TrainConfig, retrieval_scores, train  # noqa: E402


def _write_csv(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def cifar_csv(shared_data, tmp_path_factory):
    """60 CIFAR-10 test images per class, 10 classes (600 images, 32x32)."""
    root = shared_data / "cifar10" / "test"
    rows = [(p, c.name) for c in sorted(root.iterdir()) if c.is_dir()
            for p in sorted(c.iterdir())[:60]]
    return _write_csv(tmp_path_factory.mktemp("cifar") / "cifar.csv", rows)


@pytest.fixture(scope="module")
def coil_csv(shared_data, tmp_path_factory):
    """COIL-100 objects 2-16, one view every 60 degrees (90 images)."""
    root = shared_data / "coil100"
    rows = [(root / "images" / r["file"], f"obj{r['object_id']}")
            for r in csv.DictReader(open(root / "labels.csv"))
            if 2 <= int(r["object_id"]) <= 16 and int(r["angle_deg"]) % 60 == 0]
    return _write_csv(tmp_path_factory.mktemp("coil") / "coil.csv", rows)


# ----------------------------------------------------------------------------- pieces
def test_split_by_class_holds_out_whole_classes():
    labels = np.repeat(np.arange(10), 5)
    train_idx, val_idx, val_classes = split_by_class(labels, 0.3, seed=1)
    assert len(val_classes) == 3
    assert set(labels[val_idx]) == set(val_classes.tolist())
    assert not set(labels[train_idx]) & set(labels[val_idx])
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(50))
    # Same seed, same split; at least 2 held out however small the fraction.
    assert np.array_equal(split_by_class(labels, 0.3, seed=1)[2], val_classes)
    assert len(split_by_class(labels, 0.01)[2]) == 2
    assert len(split_by_class(labels, 0.0)[1]) == 0


def test_augmenter_is_seeded_and_keeps_size(coil_csv):
    data = load_labelled(coil_csv)
    pixels, kept, failed = decode_images(data.paths[:3], None)
    assert len(pixels) == 3 and not failed
    aug = Augmenter(48)
    a = aug(pixels[0], np.random.default_rng([0, 1, 2]))
    b = aug(pixels[0], np.random.default_rng([0, 1, 2]))
    c = aug(pixels[0], np.random.default_rng([0, 1, 3]))
    assert a.shape == (48, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    # Crops stay inside the image and cover at least the minimum scale of its square.
    for seed in range(50):
        left, top, right, bottom = aug.crop_box(128, 96, np.random.default_rng(seed))
        assert 0 <= left < right <= 96 and 0 <= top < bottom <= 128
        assert (right - left) * (bottom - top) >= 0.6 * 96 * 96 * 0.8  # clipping may trim


def test_lite0_backbone_equals_cnn_descriptor(coil_csv):
    """The torch backbone gives the descriptor's vector (so frozen cached features are
    what the exported model computes)."""
    from lookalike.descriptors import make_descriptor

    data = load_labelled(coil_csv)
    pixels, _, _ = decode_images(data.paths[:4], 128)
    backbone = Lite0Backbone(64)
    with torch.no_grad():
        ours = backbone(torch.from_numpy(eval_batch(pixels, 64, [127 / 255] * 3, [128 / 255] * 3))).numpy()
    theirs = make_descriptor("cnn:size=64").transform_pixels(pixels)
    assert np.abs(ours - theirs).max() < 1e-4


# ----------------------------------------------------------------------------- learning
@pytest.fixture(scope="module")
def trained_cifar(cifar_csv, tmp_path_factory):
    """Frozen Lite0 + ArcFace head on 5 CIFAR classes, validated on the 5 others."""
    out = tmp_path_factory.mktemp("model") / "cifar-arcface"
    config = TrainConfig(data=str(cifar_csv), out=str(out), loss="arcface",
                         backbone="efficientnet-lite0", frozen=True, image_size=64, epochs=4,
                         steps_per_epoch=15, val_classes=0.5, batch_p=5, batch_k=8, lr=1e-3,
                         seed=0, threads=1)
    return train(config, progress=False)


def test_training_lowers_loss_and_beats_untrained_recall(trained_cifar):
    history = trained_cifar.history
    assert history[0]["epoch"] == 0 and history[0]["loss"] is None  # the untrained model
    losses = [h["loss"] for h in history[1:]]
    assert losses[-1] < 0.5 * losses[0]
    untrained = history[0]["recall_at_1"]
    best = max(h["recall_at_1"] for h in history[1:])
    # 300 validation images of 5 classes never trained on: chance is about 0.2.
    assert 0.25 < untrained < 0.6
    assert best >= untrained + 0.02, (untrained, best)
    assert trained_cifar.n_train_images == 300 and trained_cifar.n_val_images == 300


def test_output_folder_is_a_descriptor_matching_torch(trained_cifar):
    from lookalike.descriptors import make_descriptor

    out = trained_cifar.out
    pre = json.loads((out / "preprocess.json").read_text())
    assert pre["size"] == 64 and pre["dim"] == 128
    assert pre["mean"] == pytest.approx([127 / 255] * 3) and pre["std"] == pytest.approx([128 / 255] * 3)
    scores = json.loads((out / "scores.json").read_text())
    assert scores["best_epoch"] == trained_cifar.best_epoch
    assert len(scores["history"]) == 5 and scores["settings"]["loss"] == "arcface"
    assert not set(scores["split"]["train_classes"]) & set(scores["split"]["val_classes"])

    descriptor = make_descriptor(f"cnn:model={out}")
    assert descriptor.dim == 128 and descriptor.metric == "cosine"
    data = load_labelled(scores["settings"]["data"])
    paths = [p for p, lab in zip(data.paths, data.labels)
             if data.class_names[lab] in scores["split"]["val_classes"]][:40]
    from_descriptor = descriptor.transform(paths)
    model = load_trained_model(out)
    pixels, _, _ = decode_images(paths, 2 * 64)
    with torch.no_grad():
        from_torch = model.embed(torch.from_numpy(eval_batch(pixels, 64, pre["mean"], pre["std"]))).numpy()
    assert from_descriptor.shape == (40, 128)
    assert np.abs(from_descriptor - from_torch).max() < 1e-4
    # Validation scores recomputed through the descriptor agree with the best epoch's
    # on this subset's own leave-one-out (sanity: same embedding, same metric code).
    labels = np.array([str(p.parent.name) for p in paths])
    assert retrieval_scores(from_descriptor, labels)["recall_at_1"] == pytest.approx(
        retrieval_scores(from_torch, labels)["recall_at_1"])


# ----------------------------------------------------------------------------- resume
def _tiny_config(data, out, **overrides):
    settings = dict(data=str(data), out=str(out), loss="multi-similarity", backbone="small-cnn",
                    image_size=32, dim=32, epochs=2, steps_per_epoch=3, val_classes=0.34,
                    batch_p=4, batch_k=3, lr=3e-3, seed=3, threads=1)
    settings.update(overrides)
    return TrainConfig(**settings)


def test_resume_gives_the_uninterrupted_result(coil_csv, tmp_path):
    full = train(_tiny_config(coil_csv, tmp_path / "full"), progress=False)

    def interrupt(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(_tiny_config(coil_csv, tmp_path / "cut"), progress=False, on_epoch_end=interrupt)
    assert (tmp_path / "cut" / "checkpoints" / "last.pt").exists()
    assert not (tmp_path / "cut" / "weights.pt").exists()
    resumed = train(_tiny_config(coil_csv, tmp_path / "cut", resume=True), progress=False)

    a = torch.load(tmp_path / "full" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    assert resumed.best_epoch == full.best_epoch

    from lookalike.errors import ConfigError
    with pytest.raises(ConfigError, match="lr"):
        train(_tiny_config(coil_csv, tmp_path / "cut", resume=True, lr=1e-2), progress=False)


# ----------------------------------------------------------------------------- CLI
def test_cli_train_then_index_and_search(coil_csv, tmp_path, coil_dir):
    from typer.testing import CliRunner

    from lookalike.cli import _register_extensions, app

    _register_extensions()
    runner = CliRunner()
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", str(coil_csv), "--loss", "supcon", "--backbone", "small-cnn",
                                 "--image-size", "32", "--dim", "16", "--epochs", "1",
                                 "--steps-per-epoch", "2", "--batch-p", "4", "--batch-k", "2",
                                 "--val-classes", "0.34", "--out", str(out), "--json", "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["history"][0]["epoch"] == 0 and len(report["history"]) == 2
    assert (out / "model.onnx").exists() and (out / "weights.pt").exists()

    images = tmp_path / "images"
    images.mkdir()
    for name in ("obj5__0.png", "obj5__30.png", "obj9__0.png"):
        (images / name).write_bytes((coil_dir / name).read_bytes())
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(images), "--db", str(db), "--descriptor",
                                 f"cnn:model={out}", "--workers", "1", "--no-progress", "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", str(db), str(images / "obj5__0.png"), "-k", "3", "--json"])
    assert result.exit_code == 0, result.output
    hits = json.loads(result.output)[0]["results"]
    assert hits[0]["path"].endswith("obj5__0.png") and hits[0]["distance"] == pytest.approx(0, abs=1e-5)

    bad = runner.invoke(app, ["train", str(coil_csv), "--loss", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0
