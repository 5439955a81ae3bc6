"""One readable training loop: fixed seed, Adam, the whole evaluation split every epoch.

    result = fit(model, x_train, y_train, x_eval, y_eval, prep=prep, epochs=10, ...)

``prep`` turns a stored batch (uint8 pixels or float features) into the model's input on the
device, so the same loop trains the ConvNet, ResNet-18, the linear classifier and the
input-independent baseline (``zero_inputs``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from dataaudit.train.seeding import seed_everything

Prep = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class EpochMetrics:
    """Evaluation after one epoch, over every evaluation example."""

    epoch: int
    train_loss: float
    loss: float
    accuracy: float
    per_class: list[float]
    confusion: np.ndarray  # rows: label, columns: prediction


@dataclass
class FitResult:
    model: nn.Module
    history: list[EpochMetrics]
    best_epoch: int
    eval_probs: np.ndarray  # (n_eval, C) from the kept (best or last) epoch
    dynamics: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (epoch, probs)
    stopped_early: bool = False

    @property
    def final(self) -> EpochMetrics:
        return self.history[self.best_epoch - 1]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, prep: Prep, batch_size: int = 256) -> np.ndarray:
    """Softmax probabilities for every row of ``x``, in eval mode."""
    model.eval()
    out = [
        F.softmax(model(prep(x[i : i + batch_size])).float(), dim=1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), np.float32)


def metrics(
    probs: np.ndarray, y: np.ndarray, num_classes: int
) -> tuple[float, float, list, np.ndarray]:
    """Cross-entropy, accuracy, per-class accuracy and confusion matrix of probabilities."""
    p = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    pred = probs.argmax(1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (y, pred), 1)
    support = confusion.sum(1)
    per_class = [float(confusion[c, c] / support[c]) if support[c] else float("nan")
                 for c in range(num_classes)]  # fmt: skip
    return float(-np.log(p).mean()), float((pred == y).mean()), per_class, confusion


def fit(
    model: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    *,
    prep: Prep,
    num_classes: int,
    epochs: int,
    lr: float = 3e-4,
    batch_size: int = 64,
    seed: int = 0,
    patience: int | None = None,
    zero_inputs: bool = False,
    dynamics_idx: np.ndarray | None = None,
    on_epoch: Callable[[EpochMetrics], None] | None = None,
) -> FitResult:
    """Train with Adam at a constant learning rate; evaluate on all of ``x_eval`` each epoch."""
    generator = seed_everything(seed)
    feed = (lambda b: torch.zeros_like(prep(b))) if zero_inputs else prep
    device = next(model.parameters()).device
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    y_eval_np = y_eval.numpy()
    history: list[EpochMetrics] = []
    dynamics: list[tuple[int, np.ndarray]] = []
    best_loss, best_epoch, best_state, best_probs = float("inf"), 0, None, None
    stopped = False
    for epoch in range(1, epochs + 1):
        model.train()
        total, n = 0.0, 0
        # The data is already decoded in memory: a seeded permutation per epoch is the
        # whole sampler (no workers, nothing unseeded).
        order = torch.randperm(len(x_train), generator=generator)
        for i in range(0, len(order), batch_size):
            pick = order[i : i + batch_size]
            xb, yb = x_train[pick], y_train[pick].to(device)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(feed(xb)), yb)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(yb)
            n += len(yb)
        probs = predict(model, x_eval, feed)
        loss_v, acc, per_class, confusion = metrics(probs, y_eval_np, num_classes)
        m = EpochMetrics(epoch, total / max(1, n), loss_v, acc, per_class, confusion)
        history.append(m)
        if dynamics_idx is not None and len(dynamics_idx):
            dynamics.append((epoch, probs[dynamics_idx]))
        if on_epoch is not None:
            on_epoch(m)
        if loss_v < best_loss or patience is None:
            best_loss, best_epoch, best_probs = loss_v, epoch, probs
            if patience is not None:
                best_state = copy.deepcopy(model.state_dict())
        elif patience is not None and epoch - best_epoch >= patience:
            stopped = True
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    return FitResult(model, history, best_epoch, best_probs, dynamics, stopped)
