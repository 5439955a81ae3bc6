"""Sanity checks for any image-classification training pipeline, with numbers.

    from dataaudit import sanity
    report = sanity.check(model, train_loader, loss_fn, num_classes=10, out_dir="checks")
    print(report.to_markdown())

Each check trains or probes a deep copy of ``model`` (the user's model, optimizer, loaders'
generators and global random state are left as they were) and reports a verdict ("pass",
"fail", "warn" or "skipped") with what it measured and what it expected:

* ``loss_at_init``: the loss before training is -log(1/C), or the entropy of the class
  priors when the final bias is initialised to the log priors.
* ``input_independent``: the same training with all-zero inputs must end clearly worse on
  held-out data (the validation loader, else a held-out part of the training batches).
* ``overfit_batch``: a handful of examples reach near-zero loss and 100 % accuracy.
* ``loss_decreases``: the training loss falls over the first steps.
* ``batch_independence``: the gradient of a loss on example i reaches only input i
  (BatchNorm in training mode mixes by design: then it is rerun in eval mode).
* ``batch_before_net``: the tensors the model receives: shape, dtype, range, per-channel
  mean/std against the claimed normalisation, and whether neighbouring pixels correlate as
  in natural images; saved as a labelled grid.
* ``lr_schedule``: the learning rate over the planned run must not reach ~0 early.
* ``determinism``: two short runs with the same seed give the same batches and losses.
"""

from __future__ import annotations

import copy
import hashlib
import math
import random
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dataaudit.errors import DataAuditError
from dataaudit.train import plots
from dataaudit.train.seeding import seed_everything

CHECKS = (
    "loss_at_init",
    "input_independent",
    "overfit_batch",
    "loss_decreases",
    "batch_independence",
    "batch_before_net",
    "lr_schedule",
    "determinism",
)
VERDICTS = ("pass", "fail", "warn", "skipped")

# A loss on example i that sends more than this share of its input gradient to other
# examples mixes the batch (exact independence gives 0; float32 noise is far below).
LEAK_TOLERANCE = 1e-5
OVERFIT_EXAMPLES = 8
OVERFIT_MAX_STEPS = 400
POOL_MAX_EXAMPLES = 1024
POOL_MAX_BYTES = 256 * 2**20
DETERMINISM_STEPS = 5
DEFAULT_EPOCHS = 10


@dataclass
class CheckResult:
    """One check's outcome: verdict, what was measured, what was expected, and why."""

    name: str
    verdict: str
    measured: str = ""
    expected: str = ""
    detail: str = ""
    seconds: float = 0.0
    artifact: str | None = None


@dataclass
class SanityReport:
    """All checks of one ``check()`` call, in the order of ``CHECKS``."""

    results: list[CheckResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def failed(self) -> list[str]:
        return [r.name for r in self.results if r.verdict == "fail"]

    @property
    def warned(self) -> list[str]:
        return [r.name for r in self.results if r.verdict == "warn"]

    def __getitem__(self, name: str) -> CheckResult:
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    def to_rows(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.results]

    def to_markdown(self) -> str:
        def cell(text: str) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        lines = [
            "| check | verdict | measured | expected | detail |",
            "|---|---|---|---|---|",
        ]
        for r in self.results:
            lines.append(
                f"| {r.name} | {r.verdict} | {cell(r.measured)} | {cell(r.expected)} "
                f"| {cell(r.detail)} |"
            )
        verdict = "all checks pass" if self.ok else "failed: " + ", ".join(self.failed)
        return "\n".join(lines) + f"\n\n{verdict}\n"


@dataclass
class _Setup:
    """Everything the checks share: the untouched model, data pools and settings."""

    model: nn.Module
    loss_fn: Callable[[Any, Any], torch.Tensor]
    optimizer_factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
    device: torch.device
    seed: int
    steps: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    eval_source: str
    batch_size: int
    num_classes: int | None
    classification: bool
    out_dir: Path | None


def check(
    model: nn.Module,
    train_loader: Iterable,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    val_loader: Iterable | None = None,
    optimizer_factory: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
    scheduler_factory: Callable[[torch.optim.Optimizer], Any] | None = None,
    scheduler_interval: str = "epoch",
    epochs: int | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    checks: Sequence[str] | None = None,
    steps: int = 150,
) -> SanityReport:
    """Run the checks (all, or those named in ``checks``) and return their report.

    ``train_loader``/``val_loader`` yield ``(x, y)``; ``loss_fn(model(x), y)`` is the loss;
    ``optimizer_factory(params)`` (default Adam, lr 3e-4) and ``scheduler_factory(optimizer)``
    build fresh ones; ``scheduler_interval`` is "epoch" or "step"; ``mean``/``std`` are the
    normalisation the pipeline claims to apply; ``steps`` is the short training budget of
    ``input_independent`` and ``loss_decreases``. Figures go to ``out_dir`` when given.
    """
    wanted = list(CHECKS if checks is None else checks)
    unknown = [c for c in wanted if c not in CHECKS]
    if unknown:
        raise DataAuditError(
            f"unknown sanity check(s): {', '.join(unknown)}", "choose from " + ", ".join(CHECKS)
        )
    if scheduler_interval not in ("epoch", "step"):
        raise DataAuditError(
            f"scheduler_interval must be 'epoch' or 'step', not {scheduler_interval!r}",
            "as in Lightning: how often scheduler.step() is called",
        )
    if (mean is None) != (std is None):
        raise DataAuditError("give both mean and std, or neither", "the claimed normalisation")
    optimizer_factory = optimizer_factory or (lambda params: torch.optim.Adam(params, lr=3e-4))
    generators = _loader_generators(train_loader)
    saved = _rng_state(generators)
    try:
        setup = _prepare(
            model, train_loader, loss_fn, val_loader, optimizer_factory, num_classes,
            seed, steps, out_dir,
        )  # fmt: skip
        results: dict[str, CheckResult] = {}
        runners: dict[str, Callable[[], CheckResult]] = {
            "batch_before_net": lambda: _batch_before_net(setup, mean, std),
            "loss_at_init": lambda: _loss_at_init(setup),
            "batch_independence": lambda: _batch_independence(setup),
            "overfit_batch": lambda: _overfit_batch(setup),
            "lr_schedule": lambda: _lr_schedule(
                setup, train_loader, scheduler_factory, scheduler_interval, epochs
            ),
            "determinism": lambda: _determinism(setup, train_loader, generators, saved),
        }
        if "input_independent" in wanted or "loss_decreases" in wanted:
            start = time.perf_counter()
            try:
                pair = _input_independent(setup)
            except Exception as exc:  # a crash in the user's pipeline is a finding
                pair = tuple(_crashed(n, exc) for n in ("input_independent", "loss_decreases"))
            for r in pair:
                r.seconds = round((time.perf_counter() - start) / 2, 3)
                results[r.name] = r
        for name, run in runners.items():
            if name not in wanted:
                continue
            start = time.perf_counter()
            try:
                res = run()
            except Exception as exc:
                res = _crashed(name, exc)
            res.seconds = round(time.perf_counter() - start, 3)
            results[name] = res
    finally:
        _restore_rng(saved, generators)
    return SanityReport([results[n] for n in CHECKS if n in wanted])


def _crashed(name: str, exc: Exception) -> CheckResult:
    return CheckResult(name, "fail", detail=f"raised {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------
# setup: pools of batches, random state


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The torch generators a DataLoader draws its order from (to replay them exactly)."""
    found = []
    candidates = [
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
        getattr(
            getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None
        ),
    ]
    for g in candidates:
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def _rng_state(generators: list[torch.Generator]) -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], generators: list[torch.Generator]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])
    for g, s in zip(generators, state["generators"], strict=True):
        g.set_state(s)


def _split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(batch, (list, tuple)) and len(batch) >= 2:
        x, y = batch[0], batch[1]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            return x, y
    raise DataAuditError(
        "the loader must yield (x, y) batches of tensors",
        f"got {type(batch).__name__}; wrap your loader to yield (inputs, labels)",
    )


def _pool(loader: Iterable) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Up to POOL_MAX_EXAMPLES examples (and POOL_MAX_BYTES) from the loader, on the CPU."""
    xs, ys, n, size, batch_size = [], [], 0, 0, 0
    for batch in loader:
        x, y = _split_batch(batch)
        batch_size = batch_size or len(x)
        xs.append(x.detach().cpu())
        ys.append(y.detach().cpu())
        n += len(x)
        size += x.element_size() * x.nelement()
        if n >= POOL_MAX_EXAMPLES or size >= POOL_MAX_BYTES:
            break
    if not xs:
        raise DataAuditError("the loader yielded no batches", "check the dataset is not empty")
    return torch.cat(xs), torch.cat(ys), batch_size


def _prepare(
    model: nn.Module,
    train_loader: Iterable,
    loss_fn: Callable,
    val_loader: Iterable | None,
    optimizer_factory: Callable,
    num_classes: int | None,
    seed: int,
    steps: int,
    out_dir: str | Path | None,
) -> _Setup:
    seed_everything(seed)
    x, y, batch_size = _pool(train_loader)
    if val_loader is not None:
        x_eval, y_eval, _ = _pool(val_loader)
        x_train, y_train, source = x, y, "validation loader"
    elif len(x) >= 4:
        cut = len(x) - max(2, len(x) // 4)
        x_train, y_train, x_eval, y_eval = x[:cut], y[:cut], x[cut:], y[cut:]
        source = f"{len(x_eval)} held-out training examples"
    else:
        x_train, y_train, x_eval, y_eval, source = x, y, x, y, "the training examples"
    params = list(model.parameters())
    device = params[0].device if params else torch.device("cpu")
    classification = not torch.is_floating_point(y) and y.ndim == 1
    return _Setup(
        model=model,
        loss_fn=loss_fn,
        optimizer_factory=optimizer_factory,
        device=device,
        seed=seed,
        steps=steps,
        x_train=x_train,
        y_train=y_train,
        x_eval=x_eval,
        y_eval=y_eval,
        eval_source=source,
        batch_size=max(1, batch_size),
        num_classes=num_classes,
        classification=classification,
        out_dir=Path(out_dir) if out_dir is not None else None,
    )


def _fresh(setup: _Setup) -> nn.Module:
    m = copy.deepcopy(setup.model)
    m.train()
    return m


def _batches(
    x: torch.Tensor, y: torch.Tensor, size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def _train(
    setup: _Setup,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    zero_inputs: bool = False,
) -> list[float]:
    """``steps`` optimizer steps cycling over (x, y) in the loader's batch size."""
    seed_everything(setup.seed)
    opt = setup.optimizer_factory(model.parameters())
    batches = _batches(x, y, setup.batch_size)
    losses = []
    for s in range(steps):
        xb, yb = batches[s % len(batches)]
        xb, yb = xb.to(setup.device), yb.to(setup.device)
        if zero_inputs:
            xb = torch.zeros_like(xb)
        opt.zero_grad(set_to_none=True)
        loss = setup.loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@torch.no_grad()
def _evaluate(
    setup: _Setup, model: nn.Module, zero_inputs: bool = False
) -> tuple[float, float | None]:
    """Mean loss and accuracy over the whole held-out pool, in eval mode."""
    model.eval()
    total, correct, n = 0.0, 0, 0
    for xb, yb in _batches(setup.x_eval, setup.y_eval, setup.batch_size):
        xb, yb = xb.to(setup.device), yb.to(setup.device)
        if zero_inputs:
            xb = torch.zeros_like(xb)
        out = model(xb)
        total += float(setup.loss_fn(out, yb)) * len(xb)
        if setup.classification and out.ndim == 2:
            correct += int((out.argmax(1) == yb).sum())
        n += len(xb)
    model.train()
    return total / n, (correct / n if setup.classification else None)


# ---------------------------------------------------------------------------------------
# the checks


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _loss_at_init(setup: _Setup) -> CheckResult:
    name = "loss_at_init"
    if not setup.classification:
        return CheckResult(name, "skipped", detail="labels are not class indices")
    model = _fresh(setup)
    x, y = setup.x_train[:256].to(setup.device), setup.y_train[:256].to(setup.device)
    with torch.no_grad():
        out = model(x)
        loss = float(setup.loss_fn(out, y))
    if out.ndim != 2:
        return CheckResult(name, "skipped", detail=f"model output has shape {tuple(out.shape)}")
    c = setup.num_classes or out.shape[1]
    labels = torch.cat([setup.y_train, setup.y_eval]).numpy()
    prior = np.bincount(labels, minlength=c)[:c] / max(1, len(labels))
    uniform, prior_h = math.log(c), _entropy(prior)
    expected = f"{uniform:.3f} = -log(1/{c})"
    targets = [("uniform", uniform)]
    if abs(prior_h - uniform) > 0.02:
        expected += f", or {prior_h:.3f} = entropy of the class priors (log-prior bias init)"
        targets.append(("log-prior", prior_h))
    devs = [(abs(loss - t) / max(t, 0.1), kind, t) for kind, t in targets]
    dev, kind, target = min(devs)
    measured = f"{loss:.3f}"
    if not math.isfinite(loss):
        return CheckResult(name, "fail", measured, expected, "the loss is not finite at init")
    detail = f"{dev:.0%} from the {kind} value {target:.3f}"
    if dev <= 0.15:
        return CheckResult(name, "pass", measured, expected, detail)
    hint = (
        "; the outputs start far from uniform: is the final layer initialised at a large "
        "scale, or a bias set wrongly?"
        if loss > target
        else ""
    )
    verdict = "warn" if dev <= 0.4 else "fail"
    return CheckResult(name, verdict, measured, expected, detail + hint)


def _input_independent(setup: _Setup) -> tuple[CheckResult, CheckResult]:
    real_model, zero_model = _fresh(setup), _fresh(setup)
    losses = _train(setup, real_model, setup.x_train, setup.y_train, setup.steps)
    _train(setup, zero_model, setup.x_train, setup.y_train, setup.steps, zero_inputs=True)
    real_loss, real_acc = _evaluate(setup, real_model)
    zero_loss, zero_acc = _evaluate(setup, zero_model, zero_inputs=True)
    gain = (zero_loss - real_loss) / max(abs(zero_loss), 1e-12)
    acc = (
        f"; accuracy {real_acc:.1%} vs {zero_acc:.1%}"
        if real_acc is not None and zero_acc is not None
        else ""
    )
    measured = f"loss {real_loss:.3f} with real inputs vs {zero_loss:.3f} zeroed{acc}"
    expected = (
        "real inputs at least 10 % lower loss than zeroed ones, or accuracy clearly above "
        "the zeroed one (+10 points and 1.5x)"
    )
    where = f"after {setup.steps} steps, on {setup.eval_source}"
    acc_better = (
        real_acc is not None
        and zero_acc is not None
        and real_acc >= zero_acc + max(0.10, 0.5 * zero_acc)
    )
    if gain >= 0.10 or acc_better:
        ii = CheckResult("input_independent", "pass", measured, expected, where)
    elif gain >= 0.02:
        ii = CheckResult(
            "input_independent", "warn", measured, expected,
            f"{where}: only {gain:.0%} better; the model extracts little from its inputs",
        )  # fmt: skip
    else:
        ii = CheckResult(
            "input_independent", "fail", measured, expected,
            f"{where}: the inputs carry no usable signal for the labels (labels shuffled "
            "against inputs? inputs zeroed or constant?)",
        )  # fmt: skip
    return ii, _loss_decreases(losses)


def _loss_decreases(losses: list[float]) -> CheckResult:
    name = "loss_decreases"
    k = max(3, len(losses) // 10)
    if len(losses) < 2 * k:
        return CheckResult(name, "skipped", detail=f"only {len(losses)} steps")
    early, late = float(np.mean(losses[:k])), float(np.mean(losses[-k:]))
    measured = f"{early:.3f} -> {late:.3f} (mean of the first vs last {k} of {len(losses)} steps)"
    expected = "at least 10 % lower"
    if not all(math.isfinite(v) for v in losses):
        return CheckResult(name, "fail", measured, expected, "the loss became NaN or infinite")
    drop = (early - late) / max(abs(early), 1e-12)
    if drop >= 0.10:
        return CheckResult(name, "pass", measured, expected, f"{drop:.0%} lower")
    verdict = "warn" if drop >= 0.02 else "fail"
    return CheckResult(
        name, verdict, measured, expected,
        f"only {drop:.0%} lower: learning rate too small or zero, frozen or detached "
        "parameters, or a loss that ignores the model's output?",
    )  # fmt: skip


def _overfit_batch(setup: _Setup) -> CheckResult:
    name = "overfit_batch"
    if not setup.classification:
        return CheckResult(name, "skipped", detail="labels are not class indices")
    n = min(OVERFIT_EXAMPLES, len(setup.x_train))
    x, y = setup.x_train[:n].to(setup.device), setup.y_train[:n].to(setup.device)
    model = _fresh(setup)
    seed_everything(setup.seed)
    opt = setup.optimizer_factory(model.parameters())
    history: list[list[int]] = []
    loss_v, acc, step = float("nan"), 0.0, 0
    probs_like = False
    for step in range(1, OVERFIT_MAX_STEPS + 1):
        opt.zero_grad(set_to_none=True)
        out = model(x)
        loss = setup.loss_fn(out, y)
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
        acc = float((out.detach().argmax(1) == y).float().mean())
        if step == 1:
            o = out.detach()
            probs_like = bool(
                (o >= 0).all() and torch.allclose(o.sum(1), torch.ones_like(o[:, 0]), atol=1e-4)
            )
        if step % 10 == 1:
            history.append(out.detach().argmax(1).cpu().tolist())
        if loss_v < 0.05 and acc == 1.0:
            break
    history.append(out.detach().argmax(1).cpu().tolist())
    artifact = None
    if setup.out_dir is not None:
        img = plots.labels_vs_predictions(y.cpu().tolist(), history, out.shape[1])
        artifact = str(plots.save_png(img, setup.out_dir / "overfit_batch.png"))
    measured = f"loss {loss_v:.4f}, accuracy {acc:.0%} after {step} steps on {n} examples"
    expected = "loss < 0.05 and accuracy 100 %"
    if loss_v < 0.05 and acc == 1.0:
        return CheckResult(name, "pass", measured, expected, "", artifact=artifact)
    detail = "cannot fit a handful of examples: a bug between the data, the model and the loss"
    if probs_like:
        detail = (
            "the model's outputs are already probabilities (non-negative, summing to 1): "
            "softmax applied before a loss that applies it again"
        )
    return CheckResult(name, "fail", measured, expected, detail, artifact=artifact)


def _gradient_leak(model: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """Worst share of input gradient that a loss on one example sends to the others."""
    worst, own_total = 0.0, 0.0
    gen = torch.Generator().manual_seed(0)
    for i in sorted({0, len(x) - 1}):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        w = torch.randn(out[i].shape, generator=gen).to(out.device, out.dtype)
        (out[i] * w).sum().backward()
        per = xi.grad.detach().abs().flatten(1).sum(1).double()
        own = float(per[i])
        other = float(per.sum() - per[i])
        own_total += own
        worst = max(worst, other / own if own > 0 else (math.inf if other > 0 else 0.0))
    return worst, own_total


def _batch_independence(setup: _Setup) -> CheckResult:
    name = "batch_independence"
    x = setup.x_train[: min(8, len(setup.x_train))].to(setup.device)
    if len(x) < 2:
        return CheckResult(name, "skipped", detail="needs at least two examples in a batch")
    if not torch.is_floating_point(x):
        return CheckResult(name, "skipped", detail=f"inputs are {x.dtype}: no input gradient")
    model = _fresh(setup)
    expected = f"other examples' share of the input gradient <= {LEAK_TOLERANCE:g}"
    leak, own = _gradient_leak(model, x)
    if own == 0 and leak == 0:
        return CheckResult(
            name, "warn", "no gradient reaches the inputs", expected,
            "the output does not depend on the input (detached or constant?)",
        )  # fmt: skip
    measured = f"{leak:.3g} in training mode"
    if leak <= LEAK_TOLERANCE:
        return CheckResult(name, "pass", measured, expected, f"on a batch of {len(x)}")
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        model.eval()
        leak_eval, _ = _gradient_leak(model, x)
        measured += f", {leak_eval:.3g} in eval mode"
        if leak_eval <= LEAK_TOLERANCE:
            return CheckResult(
                name, "pass", measured, expected,
                f"{len(norms)} BatchNorm layer(s) mix examples in training mode, as expected; "
                "in eval mode each example's output depends on its own input only",
            )  # fmt: skip
    return CheckResult(
        name, "fail", measured, expected,
        "a loss on one example has a gradient on other examples: the model mixes "
        "information across the batch (view/reshape where permute/transpose was needed?)",
    )  # fmt: skip


def _neighbour_correlation(x: np.ndarray) -> tuple[float, float]:
    """Correlation of vertically and horizontally adjacent values, pooled over the batch."""
    a = x - x.mean(axis=(2, 3), keepdims=True)

    def corr(p: np.ndarray, q: np.ndarray) -> float:
        den = math.sqrt(float((p * p).sum()) * float((q * q).sum()))
        return float((p * q).sum()) / den if den > 0 else float("nan")

    return corr(a[:, :, :-1, :], a[:, :, 1:, :]), corr(a[:, :, :, :-1], a[:, :, :, 1:])


def _batch_before_net(
    setup: _Setup, mean: Sequence[float] | None, std: Sequence[float] | None
) -> CheckResult:
    name = "batch_before_net"
    xt = setup.x_train[:64]
    labels = setup.y_train[:64]
    shape, dtype = tuple(xt.shape), str(xt.dtype).replace("torch.", "")
    if not torch.is_floating_point(xt):
        return CheckResult(
            name, "fail", f"shape {shape}, dtype {dtype}", "floating-point tensors",
            "the model receives integers: convert to float and scale",
        )  # fmt: skip
    x = xt.double().numpy()
    fails: list[str] = []
    warns: list[str] = []
    if not np.isfinite(x).all():
        fails.append("NaN or infinite values")
        x = np.nan_to_num(x)
    measured = [f"shape {shape}", dtype, f"range [{x.min():.3g}, {x.max():.3g}]"]
    expected = ["finite values"]
    if x.ndim == 4:
        c = x.shape[1]
        if c not in (1, 3, 4) and x.shape[-1] in (1, 3, 4):
            fails.append(f"{c} channels but the last axis has {x.shape[-1]}: channels-last data")
        ch_mean, ch_std = x.mean(axis=(0, 2, 3)), x.std(axis=(0, 2, 3))
        measured.append("channel mean " + "/".join(f"{v:.2f}" for v in ch_mean[:4]))
        measured.append("std " + "/".join(f"{v:.2f}" for v in ch_std[:4]))
        if (ch_std < 1e-6).any():
            fails.append("constant inputs (a channel has zero spread over the batch)")
        decoded = x
        if mean is not None and std is not None:
            m = np.asarray(mean, dtype=np.float64).reshape(1, -1, 1, 1)
            s = np.asarray(std, dtype=np.float64).reshape(1, -1, 1, 1)
            if m.shape[1] not in (1, c):
                fails.append(f"the claimed mean has {m.shape[1]} values for {c} channels")
            else:
                decoded = x * s + m
                lo, hi = np.percentile(decoded, [0.1, 99.9])
                expected.append("per-channel mean ~0 and std ~1 after the claimed normalisation")
                expected.append("undoing it gives pixels in [0, 1]")
                if lo < -0.1 or hi > 1.1:
                    fails.append(
                        f"undoing the claimed normalisation gives pixels in [{lo:.2f}, {hi:.2f}], "
                        "not [0, 1]: wrong mean/std, applied twice, or pixels not scaled to [0, 1]"
                    )
                if x.min() >= 0 and float(np.mean(mean)) > 0.05:
                    fails.append("no negative values: the claimed normalisation was not applied")
                bad = (ch_std < 0.2) | (ch_std > 5) | (np.abs(ch_mean) > 3)
                odd = (ch_std < 0.5) | (ch_std > 2) | (np.abs(ch_mean) > 1.5)
                if bad.any():
                    fails.append(
                        "per-channel mean/std far from 0/1: the mean/std used do not fit "
                        "the data's scale"
                    )
                elif odd.any():
                    warns.append("per-channel mean/std somewhat off 0/1")
        else:
            expected.append("normalised inputs (mean ~0, std ~1) or pixels in [0, 1]")
            if x.max() > 2 or x.min() < -10:
                if x.min() >= 0 and x.max() <= 255:
                    warns.append("raw 0-255 pixel values reach the model: scale and normalise")
                elif (np.abs(ch_mean) > 3).any() or (ch_std > 5).any():
                    warns.append("inputs far from a normalised scale")
        if min(x.shape[2], x.shape[3]) >= 4 and not fails:
            ch, cw = _neighbour_correlation(x)
            measured.append(f"neighbour correlation {ch:.2f} (vertical) / {cw:.2f} (horizontal)")
            expected.append("neighbouring pixels correlated (> 0.5) as in natural images")
            worst = np.nanmin([ch, cw])
            if worst < 0.25:
                fails.append(
                    "neighbouring pixels are uncorrelated: the tensors are not images in the "
                    "layout the model expects (channels-last read as channels-first, or a "
                    "reshape that scrambles pixels?)"
                )
            elif worst < 0.5:
                warns.append("neighbouring pixels only weakly correlated")
        artifact = None
        if setup.out_dir is not None:
            shown = decoded
            if mean is None and (shown.min() < 0 or shown.max() > 1):
                lo = shown.min(axis=(1, 2, 3), keepdims=True)
                hi = shown.max(axis=(1, 2, 3), keepdims=True)
                shown = (shown - lo) / np.maximum(hi - lo, 1e-12)
            grid = plots.image_grid(
                plots.to_uint8_images(shown[:, :3] if c >= 3 else shown[:, :1]),
                [str(int(v)) if setup.classification else f"{float(v):.2g}" for v in labels],
            )
            artifact = str(plots.save_png(grid, setup.out_dir / "batch_before_net.png"))
    else:
        artifact = None
        warns.append(f"inputs have {x.ndim} axes, not (N, C, H, W): image checks skipped")
    verdict = "fail" if fails else ("warn" if warns else "pass")
    return CheckResult(
        name, verdict, ", ".join(measured), "; ".join(expected), "; ".join(fails + warns),
        artifact=artifact,
    )  # fmt: skip


def _lr_schedule(
    setup: _Setup,
    loader: Any,
    scheduler_factory: Callable | None,
    interval: str,
    epochs: int | None,
) -> CheckResult:
    name = "lr_schedule"
    expected = "no decay below 1 % of the peak before half of the run"
    if scheduler_factory is None:
        return CheckResult(name, "pass", "constant learning rate (no scheduler)", expected)
    try:
        per_epoch = len(loader)
    except TypeError:
        per_epoch = None
    if per_epoch is None:
        return CheckResult(
            name, "skipped", detail="the loader has no length: steps per epoch unknown"
        )
    n_epochs = epochs or DEFAULT_EPOCHS
    total = min(n_epochs * per_epoch, 200_000)
    param = nn.Parameter(torch.zeros(1))
    opt = setup.optimizer_factory([param])
    sched = scheduler_factory(opt)
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        return CheckResult(name, "skipped", detail="ReduceLROnPlateau follows the validation loss")
    lrs = np.empty(total)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in range(total):
            lrs[s] = opt.param_groups[0]["lr"]
            opt.step()
            if interval == "step" or (s + 1) % per_epoch == 0:
                sched.step()
    peak_at = int(np.argmax(lrs))
    peak = float(lrs[peak_at])
    half = max(peak_at + 1, total // 2)
    window = lrs[peak_at:half]
    low = float(window.min()) / peak if peak > 0 else 0.0
    below = np.nonzero(lrs[peak_at:] < 0.01 * peak)[0]
    first = peak_at + int(below[0]) if len(below) else None
    artifact = None
    if setup.out_dir is not None:
        artifact = str(
            plots.save_png(plots.curve(lrs, "learning rate per step"), setup.out_dir / "lr.png")
        )
    measured = (
        f"peak {peak:.3g} at step {peak_at}; lowest before half-way {low:.2%} of the peak; "
        f"{total} steps ({n_epochs} epochs x {per_epoch}, stepped per {interval})"
    )
    if epochs is None:
        measured += f"; epochs not given, {DEFAULT_EPOCHS} assumed"
    if peak <= 0:
        return CheckResult(name, "fail", measured, expected, "the learning rate is zero")
    if first is not None and first < total // 2:
        return CheckResult(
            name, "fail", measured, expected,
            f"the learning rate falls below 1 % of its peak at step {first} "
            f"({first / total:.0%} of the run, epoch {first // per_epoch}): a per-epoch "
            "schedule stepped per batch, or decay settings meant for a longer run?",
            artifact=artifact,
        )  # fmt: skip
    early = lrs[peak_at : max(peak_at + 1, total // 4)]
    if early.min() < 0.1 * peak:
        return CheckResult(
            name, "warn", measured, expected,
            "below 10 % of the peak within the first quarter of the run", artifact=artifact,
        )  # fmt: skip
    return CheckResult(name, "pass", measured, expected, "", artifact=artifact)


def _digest(t: torch.Tensor) -> str:
    return hashlib.blake2b(
        t.detach().cpu().contiguous().numpy().tobytes(), digest_size=8
    ).hexdigest()


def _determinism(
    setup: _Setup,
    loader: Iterable,
    generators: list[torch.Generator],
    saved: dict[str, Any],
) -> CheckResult:
    name = "determinism"

    def run() -> tuple[list[str], list[float], list[torch.Tensor]]:
        for g, s in zip(generators, saved["generators"], strict=True):
            g.set_state(s)
        seed_everything(setup.seed)
        model = _fresh(setup)
        opt = setup.optimizer_factory(model.parameters())
        digests, losses = [], []
        for step, batch in enumerate(loader):
            if step >= DETERMINISM_STEPS:
                break
            x, y = _split_batch(batch)
            digests.append(_digest(x) + _digest(y))
            x, y = x.to(setup.device), y.to(setup.device)
            opt.zero_grad(set_to_none=True)
            loss = setup.loss_fn(model(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return digests, losses, [p.detach().clone() for p in model.parameters()]

    d1, l1, p1 = run()
    d2, l2, p2 = run()
    expected = "identical batches, losses and weights"
    n = len(d1)
    same_data = sum(a == b for a, b in zip(d1, d2, strict=False))
    measured = f"{same_data} of {n} batches identical"
    if d1 != d2:
        return CheckResult(
            name, "fail", measured, expected,
            "two runs with the same seed see different batches: an unseeded sampler, "
            "shuffle or augmentation (its own random generator, not seeded from the run's seed)",
        )  # fmt: skip
    diff = max((float((a - b).abs().max()) for a, b in zip(p1, p2, strict=True)), default=0.0)
    diff = max(diff, max((abs(a - b) for a, b in zip(l1, l2, strict=True)), default=0.0))
    measured += f"; largest weight/loss difference {diff:.3g} after {n} steps"
    if diff == 0.0:
        return CheckResult(name, "pass", measured, expected, "")
    verdict = "warn" if diff < 1e-5 else "fail"
    return CheckResult(
        name, verdict, measured, expected,
        "same batches but different training: nondeterministic kernels or an unseeded "
        "random source inside the model",
    )  # fmt: skip


__all__ = ["CHECKS", "CheckResult", "SanityReport", "check"]
