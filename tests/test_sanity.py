"""``dataaudit.sanity.check`` against deliberately broken pipelines.

Each broken pipeline must be flagged by the check named for it; correct pipelines (plain,
with BatchNorm, imbalanced with a log-prior bias, with a learning-rate warm-up) must pass
every check. Data: 16-px RGB images of a soft blob whose quadrant is the class, on a smooth
background, so that a tiny ConvNet learns it in a hundred steps.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader, Sampler, TensorDataset  # noqa: E402

from dataaudit import sanity  # noqa: E402
from dataaudit.errors import DataAuditError  # noqa: E402

SIZE, C = 16, 4
STEPS = 60  # short training budget; Adam at 3e-3 learns the blobs well within it


pytestmark = pytest.mark.usefixtures("torch_one_thread")


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def blobs(n: int, priors=None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, SIZE, SIZE) float images in [0, 1] and their class (the blob's quadrant)."""
    rng = np.random.default_rng(seed)
    y = rng.choice(C, size=n, p=priors)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    images = np.empty((n, 3, SIZE, SIZE), np.float32)
    for i, k in enumerate(y):
        cy, cx = (0.25 if k < 2 else 0.75), (0.25 if k % 2 == 0 else 0.75)
        cy, cx = cy + rng.normal(0, 0.05), cx + rng.normal(0, 0.05)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.02)
        bg = rng.uniform(0.1, 0.4) + rng.uniform(-0.2, 0.2) * xx + rng.uniform(-0.2, 0.2) * yy
        colour = rng.uniform(0.5, 1.0, size=3)
        img = bg[None] * rng.uniform(0.7, 1.0, (3, 1, 1)) + blob[None] * colour[:, None, None]
        images[i] = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return images, y


def normalise(x: np.ndarray, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> np.ndarray:
    m = np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, -1, 1, 1)
    return (x - m) / s


class TinyNet(nn.Module):
    def __init__(self, batchnorm: bool = False, out_scale: float = 1.0) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batchnorm else (lambda c: nn.Identity())
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), norm(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), norm(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )  # fmt: skip
        self.head = nn.Linear(64, C)
        if out_scale != 1.0:
            with torch.no_grad():
                self.head.weight.mul_(out_scale)
                self.head.bias.mul_(out_scale)

    def forward(self, x):
        return self.head(self.features(x))


class MixesBatch(TinyNet):
    """Reads (N, D) features as (D, N) with ``view`` and turns them back with ``t()``."""

    def forward(self, x):
        h = self.features(x)
        n, d = h.shape
        h = h.view(d, n).t()  # the bug: transposing by view interleaves examples
        return self.head(h)


class LeaksBatch(TinyNet):
    """Adds 0.003 of the batch mean to every example: a tiny cross-example leak."""

    def forward(self, x):
        return super().forward(x + 0.003 * x.mean(0, keepdim=True))


class SoftmaxTwice(TinyNet):
    def forward(self, x):
        return torch.softmax(super().forward(x), dim=1)


class UnseededSampler(Sampler):
    """Shuffles with a fresh, unseeded NumPy generator every epoch."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __iter__(self):
        return iter(np.random.default_rng().permutation(self.n).tolist())

    def __len__(self) -> int:
        return self.n


def loader(x: np.ndarray, y: np.ndarray, **kw) -> DataLoader:
    ds = TensorDataset(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y))
    kw.setdefault("batch_size", 32)
    if "sampler" not in kw:
        kw.setdefault("shuffle", True)
        kw.setdefault("generator", torch.Generator().manual_seed(0))
    return DataLoader(ds, **kw)


def run(model=None, x=None, y=None, *, val=True, **kw) -> sanity.SanityReport:
    torch.manual_seed(0)
    if x is None:
        x, y = blobs(256)
        x = normalise(x)
    model = model if model is not None else TinyNet()
    kw.setdefault("mean", IMAGENET_MEAN)
    kw.setdefault("steps", STEPS)
    kw.setdefault("optimizer_factory", lambda params: torch.optim.Adam(params, lr=3e-3))
    kw.setdefault("std", IMAGENET_STD)
    train = kw.pop("train_loader", None) or loader(x, y)
    val_loader = None
    if val:
        xv, yv = blobs(128, seed=1)
        val_loader = loader(normalise(xv), yv, shuffle=False, generator=None)
    return sanity.check(
        model, train, nn.CrossEntropyLoss(), val_loader=val_loader, num_classes=C, **kw
    )


def assert_all_pass(report: sanity.SanityReport) -> None:
    assert [r.name for r in report.results] == list(sanity.CHECKS)
    bad = [(r.name, r.verdict, r.measured, r.detail) for r in report.results if r.verdict != "pass"]
    assert not bad, report.to_markdown()
    assert report.ok and report.failed == []


# ---------------------------------------------------------------------------------------
# correct pipelines: no check may flag them


def test_correct_pipeline_passes_every_check(tmp_path):
    report = run(out_dir=tmp_path, epochs=5)
    assert_all_pass(report)
    init = report["loss_at_init"]
    assert abs(float(init.measured) - math.log(C)) < 0.15 * math.log(C)
    for name in ("overfit_batch.png", "batch_before_net.png"):
        assert (tmp_path / name).stat().st_size > 100
    assert "| loss_at_init | pass |" in report.to_markdown()


def test_correct_pipeline_with_batchnorm_passes():
    report = run(TinyNet(batchnorm=True))
    assert_all_pass(report)
    assert "BatchNorm" in report["batch_independence"].detail


def test_imbalanced_data_with_log_prior_bias_passes():
    priors = np.array([0.7, 0.1, 0.1, 0.1])
    x, y = blobs(256, priors=priors)
    model = TinyNet()
    with torch.no_grad():
        model.head.bias.copy_(torch.log(torch.as_tensor(priors, dtype=torch.float32)))
    report = run(model, normalise(x), y, val=False)
    assert_all_pass(report)
    assert "log-prior" in report["loss_at_init"].detail
    sample = np.bincount(y, minlength=C) / len(y)
    entropy = -(sample * np.log(sample)).sum()
    assert abs(float(report["loss_at_init"].measured) - entropy) < 0.15 * entropy


def test_learning_rate_warm_up_passes():
    def warm_up(opt):
        return torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=40)

    report = run(scheduler_factory=warm_up, scheduler_interval="step", epochs=10)
    assert_all_pass(report)
    assert "peak 0.003 at step 40" in report["lr_schedule"].measured


def test_user_state_is_left_alone():
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = blobs(64)
    train = loader(normalise(x), y)
    gen_state = train.generator.get_state()
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    sanity.check(model, train, nn.CrossEntropyLoss(), checks=["determinism", "overfit_batch"])
    assert torch.equal(torch.rand(1), expected_next)
    assert torch.equal(train.generator.get_state(), gen_state)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------
# broken pipelines: the right check must flag each


def test_labels_shuffled_against_inputs():
    x, y = blobs(256)
    report = run(x=normalise(x), y=np.random.default_rng(5).permutation(y))
    assert "input_independent" in report.failed, report.to_markdown()


def test_view_instead_of_permute_mixes_the_batch():
    report = run(MixesBatch())
    r = report["batch_independence"]
    assert r.verdict == "fail" and float(r.measured.split()[0]) > 0.1, report.to_markdown()


def test_a_leak_of_a_few_thousandths_is_caught():
    report = run(LeaksBatch(), checks=["batch_independence"])
    r = report["batch_independence"]
    assert r.verdict == "fail"
    assert 1e-4 < float(r.measured.split()[0]) < 0.1


def test_batchnorm_model_that_also_leaks_fails_in_eval_mode():
    report = run(LeaksBatch(batchnorm=True), checks=["batch_independence"])
    assert report.failed == ["batch_independence"]
    assert "in eval mode" in report["batch_independence"].measured


@pytest.mark.parametrize("fill", [0.0, 0.5])
def test_inputs_zeroed_or_constant(fill):
    x, y = blobs(256)
    report = run(x=np.full_like(x, fill), y=y, mean=None, std=None)
    assert "batch_before_net" in report.failed, report.to_markdown()
    assert "constant inputs" in report["batch_before_net"].detail
    assert "input_independent" in report.failed


def test_final_layer_at_huge_scale():
    report = run(TinyNet(out_scale=300.0))
    r = report["loss_at_init"]
    assert r.verdict == "fail" and float(r.measured) > 3 * math.log(C), report.to_markdown()


def test_softmax_before_a_loss_that_applies_it_again():
    report = run(SoftmaxTwice())
    r = report["overfit_batch"]
    assert r.verdict == "fail", report.to_markdown()
    assert "softmax" in r.detail
    floor = math.log(1 + (C - 1) / math.e)  # best cross-entropy with outputs in [0, 1]
    assert float(r.measured.split()[1].rstrip(",")) > 0.9 * floor


def test_wrong_mean_and_std():
    x, y = blobs(256)
    # mean/std on the 0-255 scale applied to pixels in [0, 1]
    wrong = normalise(x, mean=(123.7, 116.3, 103.5), std=(58.4, 57.1, 57.4))
    report = run(x=wrong, y=y)
    assert "batch_before_net" in report.failed, report.to_markdown()


def test_normalisation_claimed_but_not_applied():
    x, y = blobs(256)
    report = run(x=x, y=y)
    r = report["batch_before_net"]
    assert r.verdict == "fail" and "not applied" in r.detail, report.to_markdown()


def test_channels_last_read_as_channels_first():
    x, y = blobs(256)
    hwc = normalise(x).transpose(0, 2, 3, 1).copy()  # (N, H, W, C) in memory
    scrambled = hwc.reshape(len(x), 3, SIZE, SIZE)  # the bug: view/reshape, not permute
    report = run(x=scrambled, y=y)
    r = report["batch_before_net"]
    assert r.verdict == "fail" and "uncorrelated" in r.detail, report.to_markdown()


def test_per_epoch_scheduler_stepped_per_batch():
    def step_decay(opt):
        return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.1)

    report = run(scheduler_factory=step_decay, scheduler_interval="step", epochs=20)
    r = report["lr_schedule"]
    assert r.verdict == "fail" and "epoch 0" in r.detail, report.to_markdown()
    # The same scheduler stepped per epoch, as meant, is still too fast for 20 epochs...
    report = run(scheduler_factory=step_decay, epochs=20, checks=["lr_schedule"])
    assert report.failed == ["lr_schedule"]
    # ...but a StepLR sized for the run passes.
    ok = run(
        scheduler_factory=lambda o: torch.optim.lr_scheduler.StepLR(o, 8, 0.1),
        epochs=20,
        checks=["lr_schedule"],
    )
    assert ok.ok, ok.to_markdown()


def test_unseeded_sampler():
    x, y = blobs(256)
    train = loader(normalise(x), y, sampler=UnseededSampler(256))
    report = run(train_loader=train)
    r = report["determinism"]
    assert r.verdict == "fail" and "different batches" in r.detail, report.to_markdown()


# ---------------------------------------------------------------------------------------
# misuse


def test_bad_arguments_raise_one_clear_error():
    x, y = blobs(32)
    train = loader(x, y)
    with pytest.raises(DataAuditError, match="unknown sanity check"):
        sanity.check(TinyNet(), train, nn.CrossEntropyLoss(), checks=["overfit"])
    with pytest.raises(DataAuditError, match="scheduler_interval"):
        sanity.check(TinyNet(), train, nn.CrossEntropyLoss(), scheduler_interval="batch")
    with pytest.raises(DataAuditError, match=r"\(x, y\)"):
        sanity.check(TinyNet(), [{"x": 1}], nn.CrossEntropyLoss())


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path):
    import re
    import subprocess
    import sys

    from conftest import REPO, _subprocess_env

    text = (REPO / "README.md").read_text()
    start = text.index("## Training baselines and sanity checks")
    body = text[start : text.index("\n## ", start + 1)]
    (code,) = re.findall(r"```python\n(.*?)```", body, flags=re.S)
    proc = subprocess.run(
        [sys.executable, "-c", "import torch; torch.set_num_threads(1)\n" + code],
        cwd=tmp_path, env=_subprocess_env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| loss_at_init | pass |" in proc.stdout
    assert (tmp_path / "sanity_checks" / "overfit_batch.png").is_file()
