"""Embedding speed on this machine: forward pass, pixel preparation and kNN.

    python bench/bench_embed.py                  # full run (~2-4 min on 2 idle cores)
    python bench/bench_embed.py --quick          # fewer sizes and rounds, 20k-vector kNN
    python bench/bench_embed.py --threads 1      # torch threads (default: torch's own)

Prints medians. Forward-pass configurations are timed in interleaved rounds (every round runs
every configuration once), so load from other processes hits all of them alike; ratios are
against fp32 / 224 px / batch 32 / channels_last measured in the same run. The load average is
printed before and after: on a shared machine, judge the numbers by it.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dataaudit.embed.device import cpu_has_native_bf16  # noqa: E402
from dataaudit.embed.knn import knn  # noqa: E402
from dataaudit.embed.model import Embedder  # noqa: E402
from dataaudit.embed.spec import EmbedSpec, prepare_pixels  # noqa: E402
from dataaudit.embed.weights import resolve_spec  # noqa: E402


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def bench_forward(sizes: list[int], batches: list[int], rounds: int) -> None:
    """Images/s of Embedder's forward pass (uint8 in, unit vectors out) per configuration."""
    rng = np.random.default_rng(0)
    embedders = {
        (size, prec): Embedder(EmbedSpec(input_size=size), device="cpu", precision=prec)
        for size in sizes
        for prec in ("fp32", "bf16")
    }
    inputs = {
        (size, bs): rng.integers(0, 256, (bs, size, size, 3), dtype=np.uint8)
        for size in sizes
        for bs in batches
    }
    # What a naive user runs: fp32, default (NCHW) memory layout, 224 px, batch 32.
    naive_model, _ = resolve_spec(EmbedSpec(input_size=224))
    naive_model.reset_classifier(0)
    naive_x = torch.randn(32, 3, 224, 224)

    def naive() -> None:
        with torch.inference_mode():
            naive_model(naive_x)

    configs: dict[str, tuple[int, object]] = {"naive fp32 NCHW 224 bs32": (32, naive)}
    for (size, prec), emb in embedders.items():
        for bs in batches:
            batch = inputs[(size, bs)]
            configs[f"{prec} {size} bs{bs}"] = (bs, lambda e=emb, b=batch: e._forward(b))
    for _, fn in configs.values():  # warm-up: first calls allocate and pick kernels
        fn()
    times: dict[str, list[float]] = {name: [] for name in configs}
    cpu: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, (_, fn) in configs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
    rate = {name: configs[name][0] / statistics.median(ts) for name, ts in times.items()}
    cpu_ms = {name: 1e3 * statistics.median(ts) / configs[name][0] for name, ts in cpu.items()}
    base_name = "fp32 224 bs32" if 224 in sizes and 32 in batches else next(iter(rate))
    base = rate[base_name]
    print(f"\nforward pass, channels_last, {rounds} rounds, baseline = {base_name}")
    print("CPU ms/img is process CPU time: with --threads 1 it is the cost of an image")
    print("whatever the load, and 2 idle cores give about 2000 / (CPU ms/img) img/s.")
    print(f"{'config':28s} {'img/s':>8s} {'x base':>7s} {'CPU ms/img':>11s}")
    for name, r in rate.items():
        print(f"{name:28s} {r:8.0f} {r / base:7.2f} {cpu_ms[name]:11.2f}")
    for size in sizes:
        best = max(
            ((name, r) for name, r in rate.items() if f" {size} " in f" {name} "),
            key=lambda item: item[1],
        )
        print(f"best at {size:3d} px: {best[0]} ({best[1]:.0f} img/s)")


def _test_jpeg() -> bytes:
    """A 400x300 photo-like JPEG (scikit-learn's sample photo when available)."""
    try:
        from sklearn.datasets import load_sample_image

        img = Image.fromarray(load_sample_image("china.jpg")).resize((400, 300))
    except ImportError:
        rng = np.random.default_rng(0)
        grad = np.linspace(0, 255, 400)[None, :, None] * np.ones((300, 1, 3))
        img = Image.fromarray((grad + rng.normal(0, 20, (300, 400, 3))).clip(0, 255).astype("u1"))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def bench_prepare(sizes: list[int], reps: int) -> None:
    """Per-image cost of draft decode and prepare_pixels from a 400 px JPEG."""
    data = _test_jpeg()
    print(f"\nprepare_pixels from a 400x300 JPEG ({len(data)} bytes), medians of {reps}, in ms")
    print(
        f"{'size':>5s} {'draft decode':>13s} {'prepare':>8s} {'draft total':>12s} "
        f"{'full decode+prepare':>20s}"
    )
    for size in sizes:
        spec = EmbedSpec(input_size=size)
        t_dec, t_prep, t_full = [], [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            img = Image.open(io.BytesIO(data))
            img.draft("RGB", (size, size))
            img.load()
            t1 = time.perf_counter()
            prepare_pixels(img, spec)
            t2 = time.perf_counter()
            full = Image.open(io.BytesIO(data))
            full.load()
            prepare_pixels(full, spec)
            t3 = time.perf_counter()
            t_dec.append(t1 - t0)
            t_prep.append(t2 - t1)
            t_full.append(t3 - t2)
        dec, prep, fl = (statistics.median(t) * 1e3 for t in (t_dec, t_prep, t_full))
        print(f"{size:5d} {dec:13.3f} {prep:8.3f} {dec + prep:12.3f} {fl:20.3f}")


def bench_knn(n: int, n_small: int, dim: int, k: int) -> None:
    """kNN time on random unit vectors: bf16 search + fp32 re-rank vs plain fp32."""
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    print(f"\nkNN, random unit vectors, dim {dim}, k={k} (single runs)")
    results = {}
    for label, size, prec in (
        (f"fp32 N={n_small}", n_small, "fp32"),
        (f"bf16 N={n_small}", n_small, "bf16"),
        (f"bf16 N={n}", n, "bf16"),
    ):
        start = time.perf_counter()
        idx, _ = knn(vecs[:size], k, precision=prec)
        results[label] = (time.perf_counter() - start, idx)
        print(f"{label:18s} {results[label][0]:8.1f} s")
    a, b = results[f"fp32 N={n_small}"][1], results[f"bf16 N={n_small}"][1]
    same_rows = (a == b).all(axis=1).mean()
    ratio = results[f"fp32 N={n_small}"][0] / results[f"bf16 N={n_small}"][0]
    print(
        f"bf16 path speed-up at N={n_small}: {ratio:.2f}x; rows identical to fp32: "
        f"{same_rows:.4%} (others differ only by the order of ties within fp32 rounding)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes, rounds and vectors")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--knn-n", type=int, default=None, help="vectors for the kNN run")
    parser.add_argument("--skip", default="", help="comma list of: forward,prepare,knn")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [224, 128] if args.quick else [224, 192, 160, 128, 112]
    batches = [32] if args.quick else [16, 32, 64]
    skip = set(args.skip.split(",")) if args.skip else set()
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpu "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {cpu_has_native_bf16()}, "
        f"load avg {_load()}"
    )
    if "forward" not in skip:
        bench_forward(sizes, batches, rounds=3 if args.quick else 5)
    if "prepare" not in skip:
        bench_prepare(sizes, reps=100 if args.quick else 300)
    if "knn" not in skip:
        n = args.knn_n or (20_000 if args.quick else 100_000)
        bench_knn(n, n_small=min(n, 10_000 if args.quick else 20_000), dim=1280, k=10)
    print(f"\nload avg at end {_load()}")


if __name__ == "__main__":
    main()
