"""``dataaudit train``: dumb baselines on an indexed dataset, predictions back into the index.

    import dataaudit as da
    from dataaudit.train.run import train
    from dataaudit.train.config import TrainConfig
    result = train(da.open_index("sample_data"), TrainConfig(epochs=5))
    print(result.table)

Simplest first: the input-independent baseline (the floor), a linear classifier on the
stored embeddings (k-fold out-of-fold predictions for every training image), a tiny ConvNet
on pixels, optionally ResNet-18. Each is evaluated on the whole evaluation split every
epoch; per-example predictions, metrics, prediction dynamics, confident-learning label
issues and the sanity checks are written to the index with the run, and the detectors are
re-run so ``label_error`` merges the model's vote with the neighbours'.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from dataaudit.errors import DataAuditError
from dataaudit.index import Index
from dataaudit.train import data as train_data
from dataaudit.train import plots
from dataaudit.train.config import MODELS, TrainConfig
from dataaudit.train.linear import cross_fit, linear_batch, train_linear
from dataaudit.train.loop import FitResult, fit, metrics, predict
from dataaudit.train.models import TinyConvNet, resnet18
from dataaudit.train.sanity import SanityReport
from dataaudit.train.seeding import seed_everything

Say = Callable[[str], None]
MIN_LINEAR_STEPS = 200


@dataclass
class TrainResult:
    """What a run produced; everything here is also stored in the index under ``run_id``."""

    run_id: int
    table: pl.DataFrame  # one row per baseline (and the human baseline)
    classes: list[str]
    eval_split: str
    sanity: SanityReport | None = None
    label_issues: int | None = None
    out_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    sweep: dict[int, float] = field(default_factory=dict)
    human: dict[str, Any] | None = None


def _versions() -> dict[str, str]:
    import cleanlab
    import torchvision

    return {
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cleanlab": cleanlab.__version__,
        "numpy": np.__version__,
        "polars": pl.__version__,
    }


def _start_run(idx: Index, params: dict[str, Any]) -> int:
    with idx.writer() as con:
        run_id = con.execute("SELECT coalesce(max(run_id), 0) + 1 FROM runs").fetchall()[0][0]
        con.execute(
            "INSERT INTO runs (run_id, kind, status, started_at, params, versions) "
            "VALUES (?, 'train', 'running', ?, ?, ?)",
            [run_id, datetime.now(), json.dumps(params, default=str), json.dumps(_versions())],
        )
    return int(run_id)


def _finish_run(idx: Index, run_id: int, status: str, counts: dict[str, Any]) -> None:
    with idx.writer() as con:
        con.execute(
            "UPDATE runs SET status = ?, ended_at = ?, counts = ? WHERE run_id = ?",
            [status, datetime.now(), json.dumps(counts, default=str), run_id],
        )


class _Rows:
    """Collects the run's rows in memory; written in one go at the end."""

    def __init__(self, run_id: int, classes: list[str]) -> None:
        self.run_id, self.classes = run_id, classes
        self.predictions: list[pl.DataFrame] = []
        self.metrics: list[dict[str, Any]] = []
        self.dynamics: list[pl.DataFrame] = []
        self.label_issues: pl.DataFrame | None = None
        self.sanity: list[dict[str, Any]] = []

    def add_predictions(
        self, model: str, frame: pl.DataFrame, probs: np.ndarray, out_of_fold: bool | np.ndarray
    ) -> None:
        y = frame["y"].to_numpy()
        p_label = probs[np.arange(len(y)), y]
        others = probs.copy()
        others[np.arange(len(y)), y] = -np.inf
        self.predictions.append(
            frame.select("file_id", "split", "label").with_columns(
                pl.lit(self.run_id).alias("run_id"),
                pl.lit(model).alias("model"),
                pl.Series("predicted", [self.classes[i] for i in probs.argmax(1)], pl.String),
                pl.Series(
                    "probs", probs.astype(np.float32), pl.Array(pl.Float32, probs.shape[1])
                ).cast(pl.List(pl.Float32)),
                pl.Series("loss", -np.log(np.clip(p_label, 1e-12, 1)), pl.Float32),
                pl.Series("margin", p_label - others.max(1), pl.Float32),
                pl.Series("out_of_fold", np.broadcast_to(out_of_fold, len(y)), pl.Boolean),
            )
        )

    def add_history(self, model: str, res: FitResult) -> None:
        for m in res.history:
            self.metrics.append(
                {
                    "run_id": self.run_id,
                    "model": model,
                    "epoch": m.epoch,
                    "train_loss": m.train_loss,
                    "loss": m.loss,
                    "accuracy": m.accuracy,
                    "per_class": json.dumps(
                        {
                            c: (None if np.isnan(a) else round(a, 6))
                            for c, a in zip(self.classes, m.per_class, strict=True)
                        }
                    ),  # fmt: skip
                    "confusion": json.dumps(m.confusion.tolist()),
                }
            )

    def add_dynamics(self, model: str, ids: np.ndarray, y: np.ndarray, res: FitResult) -> None:
        for epoch, probs in res.dynamics:
            self.dynamics.append(
                pl.DataFrame(
                    {
                        "run_id": self.run_id,
                        "model": model,
                        "epoch": epoch,
                        "file_id": ids,
                        "predicted": [self.classes[i] for i in probs.argmax(1)],
                        "p_label": probs[np.arange(len(y)), y].astype(np.float32),
                    }
                )
            )

    def write(self, idx: Index) -> None:
        tables = {
            "predictions": (
                "run_id, model, file_id, split, label, predicted, probs, loss, margin, out_of_fold",
                pl.concat(self.predictions) if self.predictions else None,
            ),
            "train_metrics": (
                "run_id, model, epoch, train_loss, loss, accuracy, per_class, confusion",
                pl.DataFrame(self.metrics) if self.metrics else None,
            ),
            "prediction_dynamics": (
                "run_id, model, epoch, file_id, predicted, p_label",
                pl.concat(self.dynamics) if self.dynamics else None,
            ),
            "model_label_issues": (
                "run_id, model, file_id, label, suggested, quality, is_issue",
                self.label_issues,
            ),
            "sanity_checks": (
                "run_id, name, verdict, measured, expected, detail",
                pl.DataFrame(self.sanity) if self.sanity else None,
            ),
        }
        with idx.writer() as con:
            con.execute("BEGIN TRANSACTION")
            for table, (cols, frame) in tables.items():
                if frame is None or frame.height == 0:
                    continue
                con.register("incoming", frame.to_arrow())
                con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM incoming")
                con.unregister("incoming")
            con.execute("COMMIT")


def _pixels_prep(mean: np.ndarray, std: np.ndarray, device: str) -> Callable:
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1).to(device)
    return lambda b: (b.to(device).float() / 255.0 - m) / s


def _label_issues(frame: pl.DataFrame, probs: np.ndarray, classes: list[str], run_id: int):
    """Confident learning (cleanlab) on out-of-fold probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    y = frame["y"].to_numpy()
    # cleanlab needs every class among the given labels and rows that sum to one.
    probs = probs / probs.sum(1, keepdims=True)
    mask = find_label_issues(y, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    quality = get_label_quality_scores(y, probs)
    return frame.select("file_id", "label").with_columns(
        pl.lit(run_id).alias("run_id"),
        pl.lit("linear").alias("model"),
        pl.Series("suggested", [classes[i] for i in probs.argmax(1)], pl.String),
        pl.Series("quality", quality.astype(np.float32), pl.Float32),
        pl.Series("is_issue", mask, pl.Boolean),
    )


def _human_baseline(
    path: Path, frame: pl.DataFrame, classes: list[str]
) -> tuple[dict[str, Any], pl.DataFrame]:
    """Agreement of a second annotation with the dataset's labels, and Cohen's kappa."""
    from sklearn.metrics import cohen_kappa_score, confusion_matrix

    second = train_data.read_second_labels(path)
    joined = frame.join(second, on="path", how="inner").drop_nulls("second_label")
    if joined.height == 0:
        raise DataAuditError(
            f"no path in {path} matches an indexed, labelled image",
            "paths are relative to the dataset root, as in the index",
        )
    a, b = joined["label"].to_list(), joined["second_label"].to_list()
    agreement = float(np.mean([x == y for x, y in zip(a, b, strict=True)]))
    kappa = float(cohen_kappa_score(a, b))
    labels = sorted(set(classes) | set(b))
    conf = confusion_matrix(a, b, labels=labels)
    info = {
        "n": joined.height,
        "agreement": agreement,
        "kappa": kappa,
        "labels": labels,
        "confusion": conf.tolist(),
    }
    return info, joined


def train(
    idx: Index, config: TrainConfig | None = None, say: Say | None = None, checks_only: bool = False
) -> TrainResult:
    """Run the baselines (or, with ``checks_only``, only the sanity checks) and store them."""
    cfg = config or TrainConfig()
    say = say or (lambda _msg: None)
    unknown = [m for m in cfg.models if m not in MODELS]
    if unknown:
        raise DataAuditError(
            f"unknown model(s): {', '.join(unknown)}", "choose from " + ", ".join(MODELS)
        )
    if cfg.epochs < 1 or cfg.size < 8:
        raise DataAuditError(
            "--epochs must be >= 1 and --size >= 8", f"got {cfg.epochs}, {cfg.size}"
        )
    device = cfg.resolved_device()
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DataAuditError(f"device {device} is not available", "use --device cpu")
    if cfg.second_labels:  # a bad file is reported before any training, not after
        train_data.read_second_labels(Path(cfg.second_labels))
    data = train_data.load(idx, cfg.exclude, cfg.seed)
    classes = data.classes
    root = idx.root
    if root is None or not Path(root).is_dir():
        raise DataAuditError(f"the dataset folder {root} is not there", "train reads its images")
    params = {**asdict(cfg), "device": device, "classes": classes, "eval_split": data.eval_name,
              "checks_only": checks_only}  # fmt: skip
    run_id = _start_run(idx, params)
    out_dir = idx.db_path.parent / "train" / f"run_{run_id:04d}"
    result = TrainResult(run_id, pl.DataFrame(), classes, data.eval_name, out_dir=out_dir)
    rows = _Rows(run_id, classes)
    try:
        _run(idx, cfg, data, device, Path(root), rows, result, say, checks_only)
        rows.write(idx)
    except BaseException:
        _finish_run(idx, run_id, "failed", {})
        raise
    counts = {
        "table": result.table.to_dicts(),
        "excluded": data.excluded,
        "label_issues": result.label_issues,
        "sweep": result.sweep,
        "human": result.human,
        "notes": result.notes,
        "sanity_failed": result.sanity.failed if result.sanity else None,
    }
    _finish_run(idx, run_id, "completed", counts)
    if rows.label_issues is not None:
        from dataaudit.api import detect

        detect(idx)  # label_error now merges the model's vote with the neighbours'
    return result


def _run(
    idx: Index,
    cfg: TrainConfig,
    data: train_data.TrainData,
    device: str,
    root: Path,
    rows: _Rows,
    result: TrainResult,
    say: Say,
    checks_only: bool,
) -> None:
    classes, k = data.classes, len(data.classes)
    pixel_models = [m for m in cfg.models if m != "linear"]
    frame = data.frame
    if pixel_models or cfg.sanity or cfg.sweep:
        start = time.perf_counter()
        pixels, ok = train_data.read_pixels(root, frame["path"].to_list(), cfg.size)
        if not ok.all():
            result.notes.append(f"{int((~ok).sum())} image(s) no longer decode: left out")
            data.excluded["unreadable"] = int((~ok).sum())
            frame = frame.filter(pl.Series(ok))
            pixels = pixels[ok]
        say(f"read {len(pixels)} images at {cfg.size} px in {time.perf_counter() - start:.1f} s")
    else:
        pixels = None
    is_train = (frame["role"] == "train").to_numpy()
    tr, ev = frame.filter(pl.Series(is_train)), frame.filter(pl.Series(~is_train))
    y_tr = torch.as_tensor(tr["y"].to_numpy().copy())
    y_ev = torch.as_tensor(ev["y"].to_numpy().copy())
    rng = np.random.default_rng(cfg.seed)
    dyn_idx = np.sort(rng.permutation(ev.height)[: cfg.dynamics_images])
    table: list[dict[str, Any]] = []

    if pixels is not None:
        px_tr = torch.as_tensor(pixels[is_train])
        px_ev = torch.as_tensor(pixels[~is_train])
        scaled = px_tr.float().div_(255.0)
        mean = scaled.mean((0, 2, 3)).numpy()
        std = scaled.std((0, 2, 3)).clamp_min(1e-3).numpy()
        del scaled
        prep = _pixels_prep(mean, std, device)

    if cfg.sanity and pixels is not None:
        result.sanity = _sanity(cfg, k, px_tr, y_tr, px_ev, y_ev, mean, std, device, result.out_dir)
        rows.sanity = [
            {"run_id": rows.run_id, "name": r.name, "verdict": r.verdict, "measured": r.measured,
             "expected": r.expected, "detail": r.detail}
            for r in result.sanity.results
        ]  # fmt: skip
    if checks_only:
        result.table = pl.DataFrame()
        return

    def progress(name: str, epochs: int) -> Callable:
        def on_epoch(m) -> None:
            say(
                f"{name:<17} epoch {m.epoch:>3}/{epochs}  train loss {m.train_loss:.4f}  "
                f"{data.eval_name} loss {m.loss:.4f}  accuracy {m.accuracy:.1%}"
            )

        return on_epoch

    for name in cfg.models:
        start = time.perf_counter()
        if name == "linear":
            res, note = _linear(idx, cfg, data, tr, ev, k, device, rows, result, progress, dyn_idx)
            if res is None:
                result.notes.append(f"linear: skipped, {note}")
                say(f"linear: skipped, {note}")
                continue
        else:
            seed_everything(cfg.seed)  # the same initial weights for the same seed
            if name == "resnet18":
                model, note = resnet18(k)
            else:
                model = TinyConvNet(k)
                note = (
                    "tiny ConvNet fed all-zero inputs"
                    if name == "input_independent"
                    else (f"tiny ConvNet, {cfg.size} px")
                )
            model = model.to(device)
            res = fit(
                model, px_tr, y_tr, px_ev, y_ev, prep=prep, num_classes=k, epochs=cfg.epochs,
                lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed, patience=cfg.patience,
                zero_inputs=name == "input_independent", dynamics_idx=dyn_idx,
                on_epoch=progress(name, cfg.epochs),
            )  # fmt: skip
            feed = (lambda b: torch.zeros_like(prep(b))) if name == "input_independent" else prep
            rows.add_predictions(name, ev, res.eval_probs, True)
            rows.add_predictions(name, tr, predict(res.model, px_tr, feed), False)
            if name == "convnet" and result.out_dir is not None:
                grid = plots.filter_grid(res.model.first_layer().detach().cpu().numpy())
                plots.save_png(grid, result.out_dir / "convnet_first_layer.png")
        rows.add_history(name, res)
        rows.add_dynamics(name, ev["file_id"].to_numpy()[dyn_idx], y_ev.numpy()[dyn_idx], res)
        f = res.final
        table.append(
            {
                "model": name,
                "epoch": res.best_epoch,
                "train_loss": round(f.train_loss, 4),
                "loss": round(f.loss, 4),
                "accuracy": round(f.accuracy, 4),
                "seconds": round(time.perf_counter() - start, 1),
                "note": note + (" (stopped early)" if res.stopped_early else ""),
            }
        )
    if cfg.sweep and pixels is not None:
        result.sweep = _sweep(cfg, idx, tr, ev, k, device, root, rows, result, say)
    if cfg.second_labels:
        info, joined = _human_baseline(Path(cfg.second_labels), frame, classes)
        result.human = info
        table.append(
            {
                "model": "human (second labels)",
                "epoch": None,
                "train_loss": None,
                "loss": None,
                "accuracy": round(info["agreement"], 4),
                "seconds": None,
                "note": f"{info['n']} images, Cohen's kappa {info['kappa']:.3f}",
            }
        )
    result.table = pl.DataFrame(table, schema={
        "model": pl.String, "epoch": pl.Int64, "train_loss": pl.Float64, "loss": pl.Float64,
        "accuracy": pl.Float64, "seconds": pl.Float64, "note": pl.String,
    })  # fmt: skip


def _linear(idx, cfg, data, tr, ev, k, device, rows, result, progress, dyn_idx):
    """Linear classifier on stored embeddings: fit on train (metrics each epoch on eval),
    out-of-fold predictions for train by k-fold cross-fitting, then confident learning."""
    emb = idx.embeddings()
    if len(emb) == 0:
        return None, "no stored embeddings (scan with embeddings on)"
    pos = {int(f): i for i, f in enumerate(emb.file_ids)}
    tr = tr.filter(pl.col("file_id").is_in(list(pos)))
    ev = ev.filter(pl.col("file_id").is_in(list(pos)))
    if tr.height < 2 * k or ev.height == 0:
        return None, f"too few embedded images ({tr.height} train, {ev.height} eval)"
    mat = torch.from_numpy(np.array(emb.matrix, dtype=np.float32))
    x_tr = mat[torch.as_tensor([pos[int(f)] for f in tr["file_id"]])]
    x_ev = mat[torch.as_tensor([pos[int(f)] for f in ev["file_id"]])]
    y_tr, y_ev = (
        torch.as_tensor(tr["y"].to_numpy().copy()),
        torch.as_tensor(ev["y"].to_numpy().copy()),
    )
    # At least MIN_LINEAR_STEPS optimizer steps: a few dozen images make one batch an epoch.
    batch = linear_batch(tr.height, cfg.batch_size)
    per_epoch = -(-tr.height // batch)
    epochs = max(cfg.linear_epochs, -(-MIN_LINEAR_STEPS // per_epoch))
    kw = dict(epochs=epochs, lr=cfg.linear_lr, batch_size=batch, seed=cfg.seed,
              device=device)  # fmt: skip
    res = train_linear(x_tr, y_tr, x_ev, y_ev, k, on_epoch=progress("linear", epochs), **kw)
    oof = cross_fit(x_tr, y_tr, k, folds=cfg.folds, **kw)
    rows.add_predictions("linear", ev, res.eval_probs, True)
    rows.add_predictions("linear", tr, oof, True)
    both = pl.concat([tr, ev])
    probs = np.concatenate([oof, res.eval_probs])
    present = np.bincount(both["y"].to_numpy(), minlength=k)
    if (present > 0).all():
        rows.label_issues = _label_issues(both, probs, data.classes, rows.run_id)
        result.label_issues = int(rows.label_issues["is_issue"].sum())
    else:
        result.notes.append("confident learning skipped: a class has no embedded image")
    _, oof_acc, _, _ = metrics(oof, y_tr.numpy(), k)
    note = f"on {_backbone(emb.model)} embeddings; out-of-fold train accuracy {oof_acc:.1%}"
    return res, note


def _backbone(model: str | None) -> str:
    """The backbone's name from the stored embedding-model description (JSON or plain)."""
    try:
        return str(json.loads(model or "").get("backbone", model))
    except (ValueError, AttributeError):
        return model or "stored"


def _sanity(cfg, k, px_tr, y_tr, px_ev, y_ev, mean, std, device, out_dir) -> SanityReport:
    """The recipe's checks on the tiny ConvNet baseline, fed exactly as the baselines are."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from dataaudit.train import sanity

    m = torch.as_tensor(mean).view(1, -1, 1, 1)
    s = torch.as_tensor(std).view(1, -1, 1, 1)
    norm_tr = (px_tr.float() / 255.0 - m) / s
    norm_ev = (px_ev.float() / 255.0 - m) / s
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(TensorDataset(norm_tr, y_tr), batch_size=cfg.batch_size,
                              shuffle=True, generator=gen)  # fmt: skip
    val_loader = DataLoader(TensorDataset(norm_ev, y_ev), batch_size=cfg.batch_size)
    torch.manual_seed(cfg.seed)
    model = TinyConvNet(k).to(device)
    return sanity.check(
        model, train_loader, nn.CrossEntropyLoss(), val_loader=val_loader,
        optimizer_factory=lambda p: torch.optim.Adam(p, lr=cfg.lr), epochs=cfg.epochs,
        num_classes=k, mean=mean.tolist(), std=std.tolist(), seed=cfg.seed,
        out_dir=out_dir / "sanity" if out_dir else None, steps=cfg.sanity_steps,
    )  # fmt: skip


def _sweep(cfg, idx, tr, ev, k, device, root, rows, result, say) -> dict[int, float]:
    """The same tiny ConvNet at each size (capped at the images' own size): accuracy per size."""
    sizes_in_data = idx.images(columns=["width", "height"]).drop_nulls()
    own = int(min(sizes_in_data["width"].median(), sizes_in_data["height"].median()))
    sizes = sorted({min(s, own) for s in cfg.sweep if s >= 8}, reverse=True)
    accuracy: dict[int, float] = {}
    for size in sizes:
        px_tr, ok_tr = train_data.read_pixels(root, tr["path"].to_list(), size)
        px_ev, ok_ev = train_data.read_pixels(root, ev["path"].to_list(), size)
        t_tr, t_ev = torch.as_tensor(px_tr[ok_tr]), torch.as_tensor(px_ev[ok_ev])
        y_tr = torch.as_tensor(tr["y"].to_numpy()[ok_tr])
        y_ev = torch.as_tensor(ev["y"].to_numpy()[ok_ev])
        scaled = t_tr.float() / 255.0
        prep = _pixels_prep(scaled.mean((0, 2, 3)).numpy(),
                            scaled.std((0, 2, 3)).clamp_min(1e-3).numpy(), device)  # fmt: skip
        seed_everything(cfg.seed)
        res = fit(
            TinyConvNet(k).to(device), t_tr, y_tr, t_ev, y_ev, prep=prep, num_classes=k,
            epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed,
        )  # fmt: skip
        rows.add_history(f"convnet@{size}px", res)
        accuracy[size] = round(res.final.accuracy, 4)
        say(f"resolution sweep: {size:>4} px  accuracy {res.final.accuracy:.1%}")
    if result.out_dir is not None and accuracy:
        ordered = [accuracy[s] for s in sorted(accuracy)]
        title = "accuracy by size " + ", ".join(f"{s}px" for s in sorted(accuracy))
        plots.save_png(plots.curve(ordered, title), result.out_dir / "resolution_sweep.png")
    return accuracy
