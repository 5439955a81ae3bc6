"""Large-set kNN path (projection + inverted-file candidates + exact re-rank), vectors read
from Arrow, sparse label vote."""

from __future__ import annotations

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from dataaudit.embed import analysis
from dataaudit.embed import knn as knn_mod


def _clusters(n: int, dim: int, centres: int = 20, seed: int = 0):
    """Clustered vectors with a 16-d within-cluster variation and a little noise, like
    image embeddings: a projection to 256-d keeps almost all of it."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, 16)) * 3
    label = rng.integers(0, centres, n)
    z = c[label] + rng.standard_normal((n, 16))
    x = z @ rng.standard_normal((16, dim)) + 0.3 * rng.standard_normal((n, dim))
    return x.astype(np.float32), label


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True)) / truth.size


def test_vectors_from_arrow_equals_lists_and_rejects_ragged():
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    col = pa.chunked_array([pa.array(x[:1].tolist(), pa.list_(pa.float32())), pa.array([], pa.list_(pa.float32())),
                            pa.array(x[1:].tolist(), pa.list_(pa.float32()))])  # fmt: skip
    out = knn_mod.vectors_from_arrow(col)
    assert out.dtype == np.float32 and np.array_equal(out, x)
    with pytest.raises(ValueError, match="different lengths"):
        knn_mod.vectors_from_arrow(pa.array([[1.0, 2.0], [3.0]]))
    with pytest.raises(ValueError, match="null"):
        knn_mod.vectors_from_arrow(pa.array([[1.0], None]))


def test_duckdb_blocks_and_build_graph_both_paths(tmp_path, monkeypatch):
    # the inverted file globally (154 cells of ~10 rows: probe more of them), exact per label
    monkeypatch.setattr(knn_mod, "FLAT_MAX", 300)
    monkeypatch.setattr(knn_mod, "IVF_NPROBE", 30)
    x, label = _clusters(1500, 300, centres=6)
    ids = np.arange(1500, dtype=np.int64) * 3 + 7  # gaps in file ids
    con = duckdb.connect(str(tmp_path / "v.duckdb"))
    con.execute("CREATE TABLE e (file_id BIGINT, vector FLOAT[])")
    rows = pa.table({"file_id": ids[::-1].copy(), "vector": x[::-1].tolist()})  # noqa: F841
    con.execute("INSERT INTO e SELECT * FROM rows")
    sql = "SELECT vector FROM e WHERE file_id BETWEEN ? AND ? ORDER BY file_id"
    read = knn_mod.duckdb_blocks(con, sql, ids, rows=256)
    assert np.array_equal(np.concatenate(list(read(0, 1500))), x)
    assert np.array_equal(np.concatenate(list(read(300, 301))), x[300:301])
    groups = label.astype(np.int64)
    groups[::10] = -1  # unlabelled rows take part globally, not in a group
    exact = knn_mod.build_graph(read, 1500, 5, groups=groups)
    approx = knn_mod.build_graph(read, 1500, 5, groups=groups, exact_max=100, threads=1,
                                 memory_bytes=300 * 300 * 2)  # fmt: skip  # 5 passes
    assert approx["map_vectors"].shape == (1500, knn_mod.REDUCED_DIM)
    assert _recall(approx["idx"], exact["idx"]) >= 0.98
    # re-ranked similarities are the exact cosines (one side held in fp16)
    same = approx["idx"] == exact["idx"]
    assert np.allclose(approx["sim"][same], exact["sim"][same], atol=2e-3)
    for graph in (exact, approx):
        gi = graph["group_idx"]
        assert (gi[groups < 0] == -1).all() and np.isnan(graph["group_sim"][groups < 0]).all()
        labelled = groups >= 0
        assert (groups[gi[labelled]] == groups[labelled, None]).all()
    assert _recall(approx["group_idx"][groups >= 0], exact["group_idx"][groups >= 0]) >= 0.98
    bad = knn_mod.duckdb_blocks(con, sql, ids + 1)
    with pytest.raises(ValueError, match="got"):
        list(bad(0, 1500))


def test_projection_keeps_inner_products_of_low_rank_vectors():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 40)) @ rng.standard_normal((40, 400))
    basis = knn_mod.fit_projection(x, dim=64)
    assert basis.shape == (400, 64)
    assert np.allclose(basis.T @ basis, np.eye(64), atol=1e-4)
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    red = knn_mod.project(x, basis).astype(np.float32)
    assert np.abs(red @ red.T - unit @ unit.T).max() < 5e-3  # fp16 rounding only
    assert knn_mod.fit_projection(x[:, :32], dim=64) is None


def test_approx_graph_recall_and_contract():
    x, _ = _clusters(3000, 512)
    exact_idx, exact_sim = knn_mod.knn(x, 10, precision="fp32")
    idx, sim = knn_mod.knn_graph(x, 10, exact_max=1000, threads=1)
    assert idx.shape == (3000, 10) and sim.dtype == np.float32
    assert _recall(idx, exact_idx) >= 0.95
    assert not (idx == np.arange(3000)[:, None]).any()  # self excluded
    assert (np.diff(sim, axis=1) <= 0).all()  # best first
    # reduced similarities track the exact cosines (projection + fp16)
    same = idx[:, 0] == exact_idx[:, 0]
    assert np.abs(sim[same, 0] - exact_sim[same, 0]).max() < 0.05
    # one thread: reproducible
    again = knn_mod.knn_graph(x, 10, exact_max=1000, threads=1)
    assert np.array_equal(idx, again[0])
    # below the threshold the exact path answers
    small_idx, _ = knn_mod.knn_graph(x[:500], 5, exact_max=1000)
    assert np.array_equal(small_idx, knn_mod.knn(x[:500], 5)[0])


def test_inverted_file_search_finds_the_projected_neighbours(monkeypatch):
    x, _ = _clusters(6000, 256, centres=30)
    red = knn_mod.project(x, knn_mod.fit_projection(x, dim=64))
    # up to FLAT_MAX the search is exact in the projected space
    exact_idx, exact_sim = knn_mod.approx_knn(red, 10)
    r32 = red.astype(np.float32)
    brute = r32 @ r32.T
    np.fill_diagonal(brute, -np.inf)
    assert np.allclose(exact_sim, -np.sort(-brute, axis=1)[:, :10], atol=1e-5)
    monkeypatch.setattr(knn_mod, "FLAT_MAX", 1000)
    cells, probes = knn_mod._ivf_cells(knn_mod._faiss(1), red, knn_mod.IVF_NPROBE)
    assert len(cells) == knn_mod.ivf_lists(6000) == 309
    assert np.array_equal(np.sort(np.concatenate(cells)), np.arange(6000))  # a partition
    assert all(c in p for c, p in enumerate(probes))
    idx, sim = knn_mod.approx_knn(red, 10, threads=1)
    assert _recall(idx, exact_idx) >= 0.97
    assert not (idx == np.arange(6000)[:, None]).any()  # self excluded
    assert (np.diff(sim, axis=1) <= 0).all() and (idx >= 0).all()
    # the inner products are the projected ones, whichever cell found the row
    assert np.allclose(sim, np.take_along_axis(brute, idx, axis=1), atol=1e-5)
    # the same with two threads (seeded k-means, each row searched once)
    again = knn_mod.approx_knn(red, 10, threads=2)
    assert np.array_equal(idx, again[0]) and np.array_equal(sim, again[1])
    # probing every cell is the exact search
    every, _ = knn_mod.approx_knn(red, 10, threads=1, nprobe=400)
    assert _recall(every, exact_idx) >= 0.999


def test_approx_small_sets_and_groups():
    x, label = _clusters(400, 300, centres=4)
    red = knn_mod.project(x, knn_mod.fit_projection(x))
    idx, sim = knn_mod.approx_knn(red[:2], 5)
    assert idx.tolist() == [[1], [0]] and sim.shape == (2, 1)
    gidx, _ = knn_mod.knn_within_groups(x, label.astype(str), 5, exact_max=50)
    assert (gidx >= 0).all()  # every group has > 5 members
    assert (label[gidx] == label[:, None]).all()
    exact_g, _ = knn_mod.knn_within_groups(x, label.astype(str), 5)
    assert _recall(gidx, exact_g) >= 0.95


def _dense_vote(idx, sim, labels):
    """The former dense implementation: an (N, labels) float64 vote matrix."""
    codes, names = analysis._label_codes(labels)
    nb = np.where(idx >= 0, codes[np.where(idx >= 0, idx, 0)], -1)
    w = np.where((nb >= 0) & ~np.isnan(sim), np.clip(np.nan_to_num(sim), 0, None), 0.0)
    votes = np.zeros((len(idx), max(len(names), 1)))
    for r in range(len(idx)):
        for c, v in zip(nb[r], w[r], strict=True):
            if c >= 0:
                votes[r, c] += v
    total = votes.sum(axis=1)
    sugg = [names[b] if t > 0 else None for b, t in zip(votes.argmax(axis=1), total, strict=True)]
    score = np.full(len(idx), np.nan)
    ok = (codes >= 0) & (total > 0)
    score[ok] = votes[ok, codes[ok]] / total[ok]
    return sugg, score


def test_sparse_label_vote_matches_dense_with_ties_and_gaps():
    rng = np.random.default_rng(5)
    for _ in range(20):
        n, k = int(rng.integers(2, 120)), int(rng.integers(1, 7))
        idx = rng.integers(-1, n, (n, k))
        sim = rng.choice([0.5, 0.9, -0.2, np.nan, 0.5], (n, k)).astype(np.float32)
        labels = [None if rng.random() < 0.2 else f"c{rng.integers(0, 5)}" for _ in range(n)]
        suggested, _, score = analysis.label_disagreement(idx, sim, labels)
        want_s, want_score = _dense_vote(idx, sim, labels)
        assert list(suggested) == want_s
        assert np.allclose(score, want_score, equal_nan=True)


def test_label_vote_with_many_labels():
    n, k = 20_000, 10
    rng = np.random.default_rng(0)
    labels = np.arange(n) // 4  # 5,000 labels of 4 images
    idx = rng.integers(0, n, (n, k))
    idx[:, 0] = np.arange(n) ^ 1  # the nearest neighbour carries my label
    sim = np.tile(np.linspace(0.99, 0.5, k, dtype=np.float32), (n, 1))
    suggested, agreement, score = analysis.label_disagreement(idx, sim, labels)
    # the nearest neighbour's weight alone beats any other single label here
    assert (suggested == labels).mean() > 0.95
    assert np.nanmin(agreement) >= 0.1 and np.nanmax(score) <= 1.0


def test_project_2d_blocks_equal_float64_reference(monkeypatch):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((1000, 30)) * np.arange(1, 31)).astype(np.float32)
    monkeypatch.setattr(analysis, "_BLOCK_ROWS", 97)
    xy = analysis.project_2d(x)
    ref = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    _, vecs = np.linalg.eigh(ref.T @ ref / 999)
    comps = vecs[:, ::-1][:, :2]
    comps *= np.sign(comps[np.abs(comps).argmax(axis=0), np.arange(2)])
    assert np.allclose(xy, ref @ comps, atol=1e-3)
    assert xy.dtype == np.float32
