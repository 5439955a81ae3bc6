"""Speed of the training module, each against a baseline measured in the same run.

    python bench/bench_train.py                    # all three
    python bench/bench_train.py --only linear --n 100000

* linear: 5-fold cross-fitting of the linear classifier on N stored-size embeddings
  (1280-d float32, 10 classes); target < 60 s on 2 cores at N = 100,000. Baseline:
  scikit-learn LogisticRegression, 5-fold ``cross_val_predict``, on the first 20,000 rows
  (ours is timed on those too, for the ratio).
* convnet: the tiny ConvNet baseline on sample_data (scanned into a temp folder without
  embeddings), 10 epochs at 32 px; target: seconds. Baseline: the input-independent model
  (same network, same steps, zero inputs).
* sanity: ``sanity.check`` on a small ConvNet (32 px, 1,024 images); target < 30 s.
  Baseline: the same number of plain training steps as its two training checks.
Medians of --repeat runs (the linear 100k run once). On a machine shared with other busy
processes, ``--threads 1`` avoids torch's spinning worker threads (see the note).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import dataaudit as da  # noqa: E402
from dataaudit.train.config import TrainConfig  # noqa: E402
from dataaudit.train.linear import cross_fit, linear_batch  # noqa: E402
from dataaudit.train.models import TinyConvNet  # noqa: E402
from dataaudit.train.run import train  # noqa: E402


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def embeddings(n: int, d: int = 1280, k: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    y = rng.integers(0, k, n)
    x = centres[y] * 0.15 + rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return torch.from_numpy(x), torch.from_numpy(y)


def bench_linear(n: int) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, y = embeddings(n)
    sub = 20_000
    kw = dict(folds=5, epochs=10, lr=1e-3, seed=0, device="cpu")
    # As `dataaudit train` sizes it: the batch grows with the data (~100 steps per epoch).
    ours_sub = timed(
        lambda: cross_fit(x[:sub], y[:sub], 10, batch_size=linear_batch(sub * 4 // 5), **kw), 1
    )
    skf = StratifiedKFold(5, shuffle=True, random_state=0)
    start = time.perf_counter()
    cross_val_predict(LogisticRegression(max_iter=100), x[:sub].numpy(), y[:sub].numpy(), cv=skf,
                      method="predict_proba")  # fmt: skip
    sk_sub = time.perf_counter() - start
    print(f"linear 5-fold, {sub:,} x 1280: ours {ours_sub:.1f} s, scikit-learn "
          f"LogisticRegression {sk_sub:.1f} s, ratio {sk_sub / ours_sub:.2f}x")  # fmt: skip
    start = time.perf_counter()
    probs = cross_fit(x, y, 10, batch_size=linear_batch(n * 4 // 5), **kw)
    full = time.perf_counter() - start
    acc = float((probs.argmax(1) == y.numpy()).mean())
    print(f"linear 5-fold, {n:,} x 1280: {full:.1f} s (target < 60 s), out-of-fold "
          f"accuracy {acc:.1%}")  # fmt: skip


def bench_convnet(repeat: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    shutil.copytree(
        REPO / "sample_data", work / "data", ignore=shutil.ignore_patterns(".dataaudit")
    )
    idx = da.scan(work / "data", embed=False, workers=0)
    n = idx.count()

    def run(model: str) -> None:
        train(idx, TrainConfig(models=(model,), epochs=10, size=32, sanity=False))

    conv = timed(lambda: run("convnet"), repeat)
    floor = timed(lambda: run("input_independent"), repeat)
    print(f"tiny ConvNet on sample_data ({n} files), 10 epochs at 32 px: {conv:.1f} s "
          f"(input-independent, same steps: {floor:.1f} s, ratio {conv / floor:.2f})")  # fmt: skip
    shutil.rmtree(work, ignore_errors=True)


def bench_sanity(repeat: int) -> None:
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from dataaudit import sanity

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1024, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (1024,), generator=gen)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, generator=gen)
    steps = 150

    def check() -> None:
        sanity.check(TinyConvNet(10), loader, nn.CrossEntropyLoss(), num_classes=10, steps=steps)

    def plain() -> None:
        model = TinyConvNet(10)
        opt = torch.optim.Adam(model.parameters(), lr=3e-4)
        for i in range(2 * steps):
            xb, yb = x[(i * 64) % 1024 :][:64], y[(i * 64) % 1024 :][:64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()

    t_check = timed(check, repeat)
    t_plain = timed(plain, repeat)
    print(f"sanity.check, small ConvNet, 32 px, batch 64: {t_check:.1f} s (target < 30 s); "
          f"{2 * steps} plain training steps: {t_plain:.1f} s, ratio {t_check / t_plain:.2f}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["linear", "convnet", "sanity"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    if args.only in (None, "linear"):
        bench_linear(args.n)
    if args.only in (None, "convnet"):
        bench_convnet(args.repeat)
    if args.only in (None, "sanity"):
        bench_sanity(args.repeat)


if __name__ == "__main__":
    main()
