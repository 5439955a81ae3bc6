"""A linear classifier on the stored embeddings, with k-fold cross-fitting.

Every training image gets an out-of-fold prediction (from the fold model that did not see
it), so confident learning can judge training labels honestly.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold
from torch import nn

from dataaudit.train.loop import FitResult, fit
from dataaudit.train.seeding import seed_everything


def linear_batch(n: int, floor: int = 64) -> int:
    """Batch size for the linear probe: the run's batch on small data, ~100 steps per epoch on
    large data (a convex problem; per-step overhead, not the arithmetic, dominates)."""
    return int(min(1024, max(floor, n // 100)))


def standardise(x_train: torch.Tensor, x_eval: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension z-scores with the training rows' mean and std (stored vectors are
    L2-normalised, so raw components are tiny), computed once rather than per batch."""
    mean = x_train.mean(0, keepdim=True)
    std = x_train.std(0, keepdim=True).clamp_min(1e-6)
    return (x_train - mean) / std, (x_eval - mean) / std


def train_linear(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    num_classes: int,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: str,
    on_epoch=None,
) -> FitResult:
    x_train, x_eval = standardise(x_train, x_eval)
    seed_everything(seed)
    model = nn.Linear(x_train.shape[1], num_classes).to(device)
    return fit(
        model, x_train, y_train, x_eval, y_eval, prep=lambda b: b.to(device),
        num_classes=num_classes,
        epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, on_epoch=on_epoch,
    )  # fmt: skip


def cross_fit(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    folds: int,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    device: str,
) -> np.ndarray:
    """Out-of-fold probabilities (n, C) by stratified k-fold; folds capped by the rarest
    class so every fold model sees every class where possible."""
    y_np = y.numpy()
    counts = np.bincount(y_np, minlength=num_classes)
    k = int(max(2, min(folds, counts[counts > 0].min(initial=folds))))
    probs = np.zeros((len(y_np), num_classes), np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a class rarer than k: sklearn warns
        splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y_np, y_np))
    for fold, (tr, ev) in enumerate(splits):
        tr_t, ev_t = torch.as_tensor(tr), torch.as_tensor(ev)
        res = train_linear(
            x[tr_t], y[tr_t], x[ev_t], y[ev_t], num_classes, epochs=epochs, lr=lr,
            batch_size=batch_size, seed=seed + fold, device=device,
        )  # fmt: skip
        probs[ev] = res.eval_probs
    return probs
