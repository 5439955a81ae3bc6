"""The settings of one ``dataaudit train`` run, in one dataclass (recorded in ``runs``)."""

from __future__ import annotations

from dataclasses import dataclass, field

MODELS = ("input_independent", "linear", "convnet", "resnet18")
DEFAULT_MODELS = ("input_independent", "linear", "convnet")


@dataclass
class TrainConfig:
    """Baseline training: simple first, fixed seed, no augmentation, constant Adam 3e-4.

    ``models``: which baselines, simplest first. ``size``: pixel models see size x size
    images. ``folds``: k of the k-fold cross-fitting that gives training images out-of-fold
    predictions (linear classifier). ``patience``: early stopping on the evaluation loss
    after that many epochs without improvement (None: off). ``sweep``: image sizes for the
    resolution sweep of the ConvNet (empty: none). ``exclude``: issue types whose flagged
    images are left out (corrupt images always are).
    """

    models: tuple[str, ...] = DEFAULT_MODELS
    epochs: int = 10
    size: int = 32
    batch_size: int = 64
    lr: float = 3e-4
    linear_lr: float = 1e-3  # standardised embeddings, a convex problem: a larger step is safe
    linear_epochs: int = 10
    folds: int = 5
    seed: int = 0
    device: str = "auto"
    exclude: tuple[str, ...] = ()
    patience: int | None = None
    sweep: tuple[int, ...] = ()
    dynamics_images: int = 16
    sanity: bool = True
    sanity_steps: int = 200
    second_labels: str | None = None
    workers: int = 0
    extra: dict = field(default_factory=dict)

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device
