"""The bounded-memory detector paths (issue 12) give the results of the in-memory ones.

Each SQL or block-wise path is compared with the numpy reference it replaced, on small
generated data: robust statistics, the size distribution, the per-class AUCs, the kNN
distance z-scores and the neighbour label vote; and a block size of a few rows gives the
same issues as one block.
"""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pytest

from dataaudit.detectors import base, geometry, quality
from dataaudit.detectors.balance import _aucs
from dataaudit.detectors.base import DetectContext, Robust
from dataaudit.detectors.config import DetectConfig, load_config
from dataaudit.detectors.semantic import detect_label_errors, detect_outliers
from dataaudit.embed.analysis import knn_distance, label_disagreement


def _ctx(images: pl.DataFrame, config: DetectConfig | None = None) -> DetectContext:
    return DetectContext(duckdb.connect(), config or DetectConfig(), images)


@pytest.mark.parametrize("case", ["spread", "mostly_equal", "all_equal", "with_nan", "empty"])
def test_robust_in_sql_equals_robust_in_numpy(case: str) -> None:
    rng = np.random.default_rng(3)
    values = {
        "spread": rng.lognormal(0, 1, 501),
        "mostly_equal": np.r_[np.full(300, 2.5), rng.normal(0, 1, 100)],  # MAD 0
        "all_equal": np.full(40, 7.0),
        "with_nan": np.r_[rng.normal(5, 2, 200), [np.nan, np.inf, -np.inf]],
        "empty": np.zeros(0),
    }[case]
    ctx = _ctx(pl.DataFrame({"file_id": np.arange(len(values)), "v": values}))
    for floor in (None, 0.05):
        want = Robust.of(values, min_sigma=floor)
        got = Robust.of_sql(ctx, "v", min_sigma=floor)
        np.testing.assert_allclose(
            [got.median, got.sigma], [want.median, want.sigma], rtol=1e-12, equal_nan=True
        )
        uniq, counts = np.unique(values[np.isfinite(values)], return_counts=True)
        by_counts = Robust.of_counts(uniq, counts, min_sigma=floor)
        np.testing.assert_allclose(
            [by_counts.median, by_counts.sigma], [want.median, want.sigma], rtol=1e-12,
            equal_nan=True,
        )  # fmt: skip


def test_share_within_over_distinct_values_equals_the_per_image_share() -> None:
    rng = np.random.default_rng(5)
    values = np.log(rng.integers(20, 60, 700).astype(float) * rng.integers(20, 60, 700))
    uniq, counts = np.unique(values, return_counts=True)
    got = geometry._share_within(uniq, counts, np.log(2.0))
    # the per-image computation it replaced (sorted search over every image's value)
    ordered = np.sort(values)
    lo = np.searchsorted(ordered, uniq - np.log(2.0), side="left")
    hi = np.searchsorted(ordered, uniq + np.log(2.0), side="right")
    np.testing.assert_allclose(got, (hi - lo) / len(values), atol=1e-12)


def _auc_reference(score: np.ndarray, positive: np.ndarray) -> float:
    """The per-class ROC AUC (Mann-Whitney, ties averaged) the spurious detector used."""
    ok = np.isfinite(score)
    score, positive = score[ok], positive[ok]
    n_pos = int(positive.sum())
    n_neg = len(score) - n_pos
    if n_pos == 0 or n_neg == 0:
        return 0.5
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score), dtype=float)
    _, first, counts = np.unique(score[order], return_index=True, return_counts=True)
    ranks[order] = np.repeat(first + (counts + 1) / 2.0, counts)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_all_class_aucs_in_one_sort_equal_the_per_class_auc() -> None:
    rng = np.random.default_rng(11)
    classes = rng.integers(0, 6, 900)
    score = np.round(rng.normal(classes * 0.3, 1.0), 1)  # ties on purpose
    score[::50] = np.nan
    got = _aucs(score, classes, 7)  # class 6 has no image: 0.5
    want = [_auc_reference(score, classes == c) for c in range(7)]
    np.testing.assert_allclose(got, want, atol=1e-12)


def _knn_ctx(*overrides: str, n: int = 300, k: int = 8, seed: int = 0) -> tuple:
    """A context over an in-memory kNN graph of random vectors in 5 labelled clusters, a
    few wrong labels and '' / missing labels; returns (ctx, ids, idx, sim, labels)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1, (5, 16))
    truth = rng.integers(0, 5, n)
    x = centres[truth] + rng.normal(0, 0.6, (n, 16))
    x[:4] = rng.normal(0, 3, (4, 16))  # strays
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.array([f"c{t}" for t in truth], dtype=object)
    labels[10:20] = [f"c{(t + 1) % 5}" for t in truth[10:20]]  # wrong labels
    labels[20], labels[21] = "", None
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    rows = []
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    for scope in ("all", "label"):
        s = sim.copy()
        if scope == "label":
            same = labels[:, None] == labels[None, :]
            s[~same] = -np.inf
        nb = np.argsort(-s, axis=1, kind="stable")[:, :k]
        for i in range(n):
            for r, j in enumerate(nb[i]):
                if np.isfinite(s[i, j]):
                    rows.append((i + 1, int(j) + 1, r + 1, float(s[i, j]), scope))
    con = duckdb.connect()
    con.execute("CREATE TABLE knn (file_id BIGINT, neighbor_id BIGINT, rank SMALLINT, "
                "similarity REAL, scope VARCHAR)")  # fmt: skip
    con.executemany("INSERT INTO knn VALUES (?, ?, ?, ?, ?)", rows)
    images = pl.DataFrame(
        {"file_id": np.arange(1, n + 1), "label": labels.tolist(),
         "path": [f"{lab}/{i}.jpg" for i, lab in enumerate(labels)]},
        schema_overrides={"label": pl.String},
    )  # fmt: skip
    cfg, _ = load_config(overrides=list(overrides))
    sim_k = np.take_along_axis(sim, idx, axis=1).astype(np.float32)
    return DetectContext(con, cfg, images), idx, sim_k, labels


def test_outlier_z_scores_from_sql_equal_the_numpy_ones() -> None:
    ctx, _, sim, _ = _knn_ctx()
    rows = detect_outliers(ctx)
    d = knn_distance(sim)
    z = Robust.of(d).z_array(d)
    assert rows.height == len(d)  # under ranked_rows every image keeps a row
    got = rows.sort("file_id")["details"].str.extract(r"z = (-?[\d.]+) in the dataset")
    want = [f"{v:.1f}" for v in np.round(z, 1)]
    assert [g for g in got.to_list() if g is not None] == [
        w for w, g in zip(want, got.to_list(), strict=True) if g is not None
    ]
    flagged = set(rows.filter(pl.col("is_issue"))["file_id"].to_list())
    assert set(np.flatnonzero(z >= 6.0) + 1) <= flagged
    assert len(flagged & {1, 2, 3, 4}) >= 3  # the planted strays


def test_label_vote_in_sql_equals_the_numpy_vote() -> None:
    ctx, idx, sim, labels = _knn_ctx()
    rows = detect_label_errors(ctx).sort("file_id")
    suggested, agreement, own = label_disagreement(idx, sim, labels)
    ok = ~np.isnan(own)
    want_ids = np.flatnonzero(ok) + 1
    assert rows["file_id"].to_list() == want_ids.tolist()
    np.testing.assert_allclose(rows["score"].to_numpy(), 1.0 - own[ok], atol=1e-9)
    said = rows["details"].str.extract(r"neighbours say (\S+) \(").to_list()
    assert said == [str(s) for s in suggested[ok]]
    agree = rows["details"].str.extract(r"\((\d+)% of neighbours").cast(pl.Int64).to_list()
    assert agree == np.round(agreement[ok] * 100).astype(int).tolist()
    flagged = set(rows.filter(pl.col("is_issue"))["file_id"].to_list())
    assert len(flagged & set(range(11, 21))) >= 7  # the planted wrong labels


def test_ranked_rows_keep_every_flagged_image_and_the_highest_scores() -> None:
    full, *_ = _knn_ctx()
    capped, *_ = _knn_ctx("semantic.ranked_rows=5")
    for detect in (detect_outliers, detect_label_errors):
        a, b = detect(full), detect(capped)
        assert set(b.filter("is_issue")["file_id"]) == set(a.filter("is_issue")["file_id"])
        rest = b.filter(~pl.col("is_issue"))
        assert rest.height == 5
        top = a.filter(~pl.col("is_issue")).sort("score", descending=True).head(5)
        assert rest["score"].min() >= top["score"].min() - 1e-9


def _quality_images(n: int = 400) -> pl.DataFrame:
    rng = np.random.default_rng(2)
    mean = np.clip(rng.normal(120, 25, n), 0, 255)
    mean[:6] = [2, 3, 250, 252, 20, 235]  # dark / light, absolute and relative
    contrast = np.clip(rng.normal(50, 10, n), 0, None)
    contrast[:6] = [0.5, 1, 1, 0.8, 5, 6]
    sharp = np.exp(rng.normal(-1, 0.3, n))
    sharp[6:9] = [0.01, 0.02, 0.015]
    frame = pl.DataFrame({
        "file_id": np.arange(n), "decode_status": ["ok"] * (n - 2) + ["truncated"] * 2,
        "brightness_mean": mean, "contrast": contrast, "sharpness": sharp,
        "entropy": rng.uniform(5, 8, n), "is_grayscale": rng.random(n) < 0.02,
    })  # fmt: skip
    edge = np.exp(rng.normal(-0.35, 0.1, n))
    edge[9] = 0.2  # blurred edges in an image whose detail ratio looks ordinary
    return frame.with_columns(pl.Series("edge_sharpness", edge))


def test_quality_rules_in_blocks_equal_one_block(monkeypatch) -> None:
    images = _quality_images()
    whole = quality.detect_quality(_ctx(images))
    monkeypatch.setattr(base, "CHUNK_ROWS", 7)
    monkeypatch.setattr(DetectContext.chunks, "__defaults__", (None, 7))
    blocks = quality.detect_quality(_ctx(images))
    assert whole.height >= 6
    assert blocks.sort("issue", "file_id").equals(whole.sort("issue", "file_id"))
    assert {"dark", "light", "blurry"} <= set(whole["issue"].to_list())
    assert 9 in set(whole.filter(pl.col("issue") == "blurry")["file_id"].to_list())
