"""``label_error``: the neighbour vote, merged with a model's vote.

The neighbour vote (:func:`dataaudit.detectors.semantic.detect_label_errors`) needs only the
kNN graph. The model is the latest ``dataaudit train`` run's when there is one, else the
detect-time linear probe on the stored embeddings (:mod:`dataaudit.detectors.label_probe`).

Without a training run, an image is flagged when the neighbours and the probe both doubt its
label (the probe: its label quality is within cleanlab's estimated number of label issues),
or by the neighbours alone where the probe cannot judge (a class with fewer than 5 images).
The neighbour vote alone flagged 1.1-1.9 % of the untouched images of the domain benches;
with the probe's agreement 0.1-0.7 % (bench/README.md, "Detectors on other domains").

After ``dataaudit train``, ``model_label_issues`` holds confident learning (cleanlab
``find_label_issues``) on out-of-fold probabilities of a linear classifier; the latest run's
rows are merged here:

* score: the mean of the neighbour score (share of neighbour weight against the label) and
  the model's (1 - cleanlab label quality), or whichever exists;
* flagged: one vote flags it and the other is sure, i.e. its score is at least ``SURE``
  (or both flag it); an image the neighbour vote cannot judge (not in the kNN graph) is
  flagged when the model flags it with a score of at least ``SURE``. Measured on
  signs_planted (bench/bench_label_errors.py, linear classifier ~79 % accurate): F1 0.632
  for the neighbour vote alone, 0.715 merged (0.676 with SURE = 0.85, 0.648 with 0.95);
  letting a model flag count alone costs too much precision (F1 0.51);
* details name both suggestions, so a reviewer sees where they agree.
"""

from __future__ import annotations

import polars as pl

from dataaudit.detectors.base import DetectContext, issue_rows
from dataaudit.detectors.label_probe import probe_votes
from dataaudit.detectors.semantic import EXPLAINING_ISSUES, has_table
from dataaudit.detectors.semantic import detect_label_errors as neighbour_vote

SURE = 0.9


def model_votes(ctx: DetectContext) -> pl.DataFrame | None:
    """The latest training run's model-based label issues, or None."""
    if not has_table(ctx, "model_label_issues"):
        return None
    rows = ctx.con.sql(
        """SELECT file_id, suggested, quality, is_issue, run_id FROM model_label_issues
           WHERE run_id = (SELECT max(run_id) FROM model_label_issues)"""
    ).pl()
    return rows if rows.height else None


def detect_label_errors(ctx: DetectContext) -> pl.DataFrame:
    neighbours = neighbour_vote(ctx)
    # Images already explained (flat, dark, out of domain, ...) are not label errors.
    explained = set().union(*(ctx.flagged.get(i, set()) for i in (*EXPLAINING_ISSUES, "outlier")))
    model = model_votes(ctx)
    if model is not None:
        return _merge(ctx, neighbours, model, explained, trained=True)
    if neighbours.height == 0:
        return neighbours
    doubted = set(neighbours.filter(pl.col("is_issue"))["file_id"].to_list())
    probe = probe_votes(ctx, explained, wanted=doubted)
    if probe is None:
        return neighbours
    return _merge(ctx, neighbours, probe.with_columns(pl.lit(None, pl.Int64).alias("run_id")),
                  explained, trained=False)  # fmt: skip


def _merge(
    ctx: DetectContext,
    neighbours: pl.DataFrame,
    model: pl.DataFrame,
    explained: set[int],
    trained: bool,
) -> pl.DataFrame:
    labels = ctx.of_ids(model["file_id"], "file_id, label")
    frame = (
        model.rename({"suggested": "m_suggested", "is_issue": "m_issue"})
        .with_columns((1.0 - pl.col("quality")).alias("m_score"))
        .join(
            neighbours.select(
                "file_id",
                pl.col("score").alias("n_score"),
                pl.col("is_issue").alias("n_issue"),
                pl.col("details").alias("n_details"),
            ),
            on="file_id",
            how="full",
            coalesce=True,
        )
        .join(labels, on="file_id", how="left")
    )
    score = pl.mean_horizontal("n_score", "m_score")
    n_issue, m_issue = pl.col("n_issue").fill_null(False), pl.col("m_issue").fill_null(False)
    m_score = pl.col("m_score").fill_null(0.0)
    n_score = pl.col("n_score").fill_null(0.0)
    if trained:
        votes = (
            (n_issue & (m_issue | (m_score >= SURE)))
            | (m_issue & (n_score >= SURE))
            | (pl.col("n_score").is_null() & m_issue & (m_score >= SURE))
        )
        who = pl.format("a model (training run {})", pl.col("run_id"))
    else:
        votes = n_issue & (m_issue | pl.col("m_score").is_null())
        who = pl.lit("a linear probe on the embeddings")
    flagged = ~pl.col("file_id").is_in(list(explained)) & votes
    model_text = pl.format(
        "{} says {} ({}% label quality)",
        who,
        pl.col("m_suggested"),
        ((1.0 - pl.col("m_score")) * 100).round(0).cast(pl.Int64),
    )
    details = (
        pl.when(pl.col("m_suggested").is_null())
        .then(pl.col("n_details"))
        .when(pl.col("n_details").is_null())
        .then(pl.lit("labelled ") + pl.col("label").fill_null("?") + pl.lit("; ") + model_text)
        .otherwise(pl.col("n_details") + pl.lit("; ") + model_text)
    )
    return issue_rows(frame, "label_error", score, details, is_issue=flagged.fill_null(False))
