"""Questions for reviewing a training run's predictions (the app's Labels page asks them).

Plain SQL through :meth:`dataaudit.index.Index.sql`; no torch needed::

    from dataaudit.train.review import highest_loss, confused_pairs
    highest_loss(idx, limit=20)      # the images the model finds hardest to believe
    confused_pairs(idx)              # which labels the model mixes up most
"""

from __future__ import annotations

import polars as pl

from dataaudit.errors import DataAuditError
from dataaudit.index import Index


def latest_run(idx: Index, model: str | None = None) -> int:
    """The newest training run that stored predictions (of ``model``, when given)."""
    rows = idx.sql(
        "SELECT max(run_id) AS run_id FROM predictions WHERE ? IS NULL OR model = ?",
        [model, model],
    )
    if rows.height == 0 or rows["run_id"][0] is None:
        raise DataAuditError("no stored predictions", "run `dataaudit train PATH` first")
    return int(rows["run_id"][0])


def _default_model(idx: Index, run_id: int) -> str:
    """The run's most informative model: linear (out-of-fold everywhere), else the last."""
    models = idx.sql("SELECT DISTINCT model FROM predictions WHERE run_id = ?", [run_id])[
        "model"
    ].to_list()
    for name in ("linear", "resnet18", "convnet", "input_independent"):
        if name in models:
            return name
    return models[0]


def highest_loss(
    idx: Index,
    model: str | None = None,
    run_id: int | None = None,
    split: str | None = None,
    limit: int = 50,
    out_of_fold_only: bool = True,
) -> pl.DataFrame:
    """Images ranked by their loss against the dataset's label, highest first: mislabelled,
    ambiguous or unusual images come out on top."""
    run_id = run_id or latest_run(idx, model)
    model = model or _default_model(idx, run_id)
    return idx.sql(
        """SELECT p.file_id, i.path, p.split, p.label, p.predicted, p.loss, p.margin,
                  p.out_of_fold
           FROM predictions p JOIN images i USING (file_id)
           WHERE p.run_id = ? AND p.model = ? AND (? IS NULL OR p.split = ?)
                 AND (p.out_of_fold OR NOT ?)
           ORDER BY p.loss DESC, p.file_id LIMIT ?""",
        [run_id, model, split, split, out_of_fold_only, int(limit)],
    )


def confused_pairs(
    idx: Index, model: str | None = None, run_id: int | None = None, limit: int = 20
) -> pl.DataFrame:
    """(label, predicted) pairs the model gets wrong most often, out-of-fold predictions
    only, with the share of that label's images they take."""
    run_id = run_id or latest_run(idx, model)
    model = model or _default_model(idx, run_id)
    return idx.sql(
        """WITH p AS (SELECT label, predicted FROM predictions
                      WHERE run_id = ? AND model = ? AND out_of_fold),
                totals AS (SELECT label, count(*) AS n FROM p GROUP BY label)
           SELECT p.label, p.predicted, count(*) AS count,
                  count(*) / any_value(t.n) AS share_of_label
           FROM p JOIN totals t USING (label)
           WHERE p.label <> p.predicted
           GROUP BY p.label, p.predicted
           ORDER BY count DESC, p.label, p.predicted LIMIT ?""",
        [run_id, model, int(limit)],
    )
