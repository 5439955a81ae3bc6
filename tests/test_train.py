"""``dataaudit train``: baselines, predictions in the index, model-based label errors.

A generated dataset (3 shapes, train/test) is scanned without the embedder; embeddings are
written straight into the index (a cluster per label, one image planted in the wrong
cluster) so the linear classifier, the k-fold cross-fitting and confident learning run in
seconds and the mislabelled image is known.
"""

from __future__ import annotations

import json

import duckdb
import numpy as np
import polars as pl
import pytest

torch = pytest.importorskip("torch")

import dataaudit as da  # noqa: E402
from dataaudit.errors import DataAuditError  # noqa: E402
from dataaudit.testing import LABELS, build_index, make_dataset  # noqa: E402
from dataaudit.train.config import TrainConfig  # noqa: E402
from dataaudit.train.loop import fit  # noqa: E402
from dataaudit.train.run import train  # noqa: E402

FAST = ["--epochs", "2", "--size", "16", "--check-steps", "30"]


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def plant_embeddings(db, wrong: str) -> None:
    """One tight cluster per label; ``wrong`` (a path) sits in another label's cluster."""
    con = duckdb.connect(str(db))
    rows = con.execute("SELECT file_id, path, label FROM images WHERE NOT is_corrupt").fetchall()
    rng = np.random.default_rng(0)
    centres = {lab: rng.normal(size=32) for lab in LABELS}
    data = []
    for fid, path, label in rows:
        if label is None:
            continue
        if path == wrong:  # the very centre of another label's cluster
            v = centres[LABELS[(LABELS.index(label) + 1) % len(LABELS)]]
        else:
            v = centres[label] + rng.normal(scale=0.3, size=32)
        data.append((fid, (v / np.linalg.norm(v)).astype(np.float32).tolist()))
    con.execute("DELETE FROM embeddings")
    con.executemany("INSERT INTO embeddings VALUES (?, ?)", data)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('embedding_model', 'synthetic')")
    con.close()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "data"
    planted = make_dataset(root, per_label=10)
    idx = build_index(root)
    wrong = next(p for p in planted.by_label["square"] if "/train/" in f"/{p}" and "_train_" in p)
    plant_embeddings(idx.db_path, wrong)
    return root, idx, planted, wrong


def test_train_prints_the_table_and_verdicts_and_stores_predictions(dataset, cli):
    root, idx, planted, wrong = dataset
    rc, out, err = cli("train", root, *FAST)
    assert rc == 0, err
    for name in ("input_independent", "linear", "convnet"):
        assert name in out
    for check in ("loss_at_init", "overfit_batch", "batch_independence", "determinism"):
        assert check in out
    run_id = int(idx.sql("SELECT max(run_id) AS r FROM runs WHERE kind = 'train'")["r"][0])
    preds = idx.sql("SELECT * FROM predictions WHERE run_id = ?", [run_id])
    usable = idx.count(da.Filters(where="NOT is_corrupt AND label IS NOT NULL"))
    counts = dict(preds.group_by("model").len().iter_rows())
    assert counts == {"input_independent": usable, "linear": usable, "convnet": usable}
    sums = preds["probs"].list.sum().to_numpy()
    assert np.allclose(sums, 1.0, atol=1e-4)
    linear = preds.filter(pl.col("model") == "linear")
    assert linear["out_of_fold"].all()  # k-fold for train, the train-fit model for test
    p_label = np.exp(-linear["loss"].to_numpy())
    top_other = p_label - linear["margin"].to_numpy()
    assert np.all((linear["predicted"] == linear["label"]).to_numpy() == (top_other < p_label))
    metrics = idx.sql("SELECT model, count(*) AS n FROM train_metrics WHERE run_id = ? "
                      "GROUP BY model ORDER BY model", [run_id])  # fmt: skip
    assert dict(metrics.iter_rows()) == {"convnet": 2, "input_independent": 2, "linear": 200}
    dyn = idx.sql("SELECT DISTINCT epoch FROM prediction_dynamics WHERE run_id = ? "
                  "AND model = 'convnet' ORDER BY epoch", [run_id])  # fmt: skip
    assert dyn["epoch"].to_list() == [1, 2]
    checks = idx.sql("SELECT name, verdict FROM sanity_checks WHERE run_id = ?", [run_id])
    assert checks.height == 8
    run = idx.runs().filter(pl.col("run_id") == run_id).row(0, named=True)
    assert run["status"] == "completed" and json.loads(run["params"])["seed"] == 0
    out_dir = idx.db_path.parent / "train" / f"run_{run_id:04d}"
    assert (out_dir / "convnet_first_layer.png").stat().st_size > 100
    assert (out_dir / "sanity" / "batch_before_net.png").is_file()


def test_model_based_label_error_reaches_the_report(dataset, cli):
    root, idx, _, wrong = dataset
    rc, out, err = cli("train", root, *FAST, "--model", "linear", "--no-sanity")
    assert rc == 0, err
    issues = idx.sql("SELECT i.path, m.suggested, m.is_issue FROM model_label_issues m "
                     "JOIN images i USING (file_id) WHERE m.is_issue")  # fmt: skip
    assert wrong in issues["path"].to_list()
    assert issues.filter(pl.col("path") == wrong)["suggested"][0] == "triangle"
    rows = idx.issues("label_error")
    assert wrong in rows["path"].to_list()
    assert "a model (training run" in rows.filter(pl.col("path") == wrong)["details"][0]
    rc, out, err = cli("report", root, "--format", "json")
    assert rc == 0
    report = json.loads(out)
    label = next(s for s in report["issues"] if s["issue"] == "label_error")
    assert label["files"] >= 1
    example = next(e for e in label["examples"] if e["path"] == wrong)
    assert "a model (training run" in example["reason"] and "says triangle" in example["reason"]


def test_same_seed_gives_identical_metrics(dataset):
    _, idx, _, _ = dataset
    cfg = TrainConfig(models=("input_independent", "convnet"), epochs=2, size=16, sanity=False)
    a, b = train(idx, cfg), train(idx, cfg)
    q = "SELECT model, epoch, loss, accuracy FROM train_metrics WHERE run_id = ? ORDER BY ALL"
    first, second = idx.sql(q, [a.run_id]), idx.sql(q, [b.run_id])
    assert first.height == 4 and first.equals(second)
    other = train(idx, TrainConfig(models=("convnet",), epochs=2, size=16, sanity=False, seed=1))
    third = idx.sql(q, [other.run_id])
    assert not third["loss"].equals(first.filter(pl.col("model") == "convnet")["loss"])


def test_checks_only_stores_verdicts_and_trains_nothing(dataset, cli):
    root, idx, _, _ = dataset
    rc, out, err = cli("train", root, "--checks-only", "--size", "16", "--check-steps", "30")
    assert rc == 0, err
    assert "Sanity checks" in out and "Baselines" not in out
    run_id = int(idx.sql("SELECT max(run_id) AS r FROM runs WHERE kind = 'train'")["r"][0])
    assert idx.sql("SELECT count(*) AS n FROM predictions WHERE run_id = ?", [run_id])["n"][0] == 0
    checks = idx.sql("SELECT name FROM sanity_checks WHERE run_id = ? ORDER BY name", [run_id])
    assert sorted(checks["name"].to_list()) == sorted(da_checks())


def da_checks() -> list[str]:
    from dataaudit import sanity

    return list(sanity.CHECKS)


def test_human_baseline_from_second_labels(dataset, tmp_path):
    root, idx, _, _ = dataset
    frame = idx.images(da.Filters(where="NOT is_corrupt AND label IS NOT NULL"),
                       columns=["path", "label"])  # fmt: skip
    second = frame.with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("circle")).otherwise(pl.col("label"))
        .alias("label")
    )  # fmt: skip
    csv = tmp_path / "second.csv"
    second.write_csv(csv)
    cfg = TrainConfig(models=("input_independent",), epochs=1, size=16, sanity=False,
                      second_labels=str(csv))  # fmt: skip
    res = train(idx, cfg)
    from sklearn.metrics import cohen_kappa_score

    changed = int((second["label"] != frame["label"]).sum())
    assert res.human["agreement"] == pytest.approx(1 - changed / frame.height)
    assert res.human["kappa"] == pytest.approx(
        cohen_kappa_score(frame["label"].to_list(), second["label"].to_list())
    )
    assert res.table["model"].to_list() == ["input_independent", "human (second labels)"]


def test_resolution_sweep_is_capped_at_the_images_size(dataset):
    _, idx, _, _ = dataset
    cfg = TrainConfig(models=(), epochs=1, size=16, sanity=False, sweep=(128, 64, 16))
    res = train(idx, cfg)
    assert sorted(res.sweep) == [16, 64]  # 128 px is capped to the images' 64 px
    assert all(0.0 <= a <= 1.0 for a in res.sweep.values())
    assert (res.out_dir / "resolution_sweep.png").is_file()


def test_early_stopping_keeps_the_best_epoch():
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 8, 8, generator=gen)
    y = torch.randint(0, 2, (64,), generator=gen)  # noise: the eval loss rises as it memorises
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 2))
    res = fit(model, x[:48], y[:48], x[48:], y[48:], prep=lambda b: b, num_classes=2,
              epochs=60, lr=1e-2, patience=3)  # fmt: skip
    assert res.stopped_early and len(res.history) < 60
    losses = [m.loss for m in res.history]
    assert res.best_epoch == int(np.argmin(losses)) + 1
    assert len(res.history) - res.best_epoch == 3


def test_misuse_is_one_line(dataset, cli, tmp_path):
    root, _, _, _ = dataset
    rc, _, err = cli("train", root, "--model", "vgg")
    assert rc == 2 and "unknown model" in err and "Traceback" not in err
    rc, _, err = cli("train", root, "--second-labels", tmp_path / "missing.csv", *FAST)
    assert rc == 2 and "no such file" in err
    one = tmp_path / "one"
    make_dataset(one, per_label=3, labels=("circle",), plant=False)
    build_index(one)
    with pytest.raises(DataAuditError, match="at least two labels"):
        train(da.open_index(one), TrainConfig(epochs=1))


def test_review_queries_rank_the_planted_error_first(dataset, cli):
    from dataaudit.train.review import confused_pairs, highest_loss

    root, idx, _, wrong = dataset
    rc, _, err = cli("train", root, *FAST, "--model", "linear", "--no-sanity")
    assert rc == 0, err
    top = highest_loss(idx, limit=5)
    assert top["path"][0] == wrong and top["predicted"][0] == "triangle"
    assert top["loss"].to_list() == sorted(top["loss"].to_list(), reverse=True)
    pairs = confused_pairs(idx)
    first = pairs.row(0, named=True)
    assert (first["label"], first["predicted"]) == ("square", "triangle")
    n_square = idx.sql(
        "SELECT count(*) AS n FROM predictions WHERE model = 'linear' AND label = 'square' "
        "AND run_id = (SELECT max(run_id) FROM predictions)"
    )["n"][0]
    assert first["share_of_label"] == pytest.approx(first["count"] / n_square)


def test_resnet18_baseline_says_how_it_was_initialised(dataset):
    _, idx, _, _ = dataset
    res = train(idx, TrainConfig(models=("resnet18",), epochs=1, size=32, sanity=False))
    row = res.table.row(0, named=True)
    assert row["model"] == "resnet18" and row["epoch"] == 1
    assert "from scratch" in row["note"] or "ImageNet weights from" in row["note"]
    n = idx.sql("SELECT count(*) AS n FROM predictions WHERE run_id = ?", [res.run_id])["n"][0]
    assert n == idx.count(da.Filters(where="NOT is_corrupt AND label IS NOT NULL"))
