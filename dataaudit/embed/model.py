"""The embedder: images (uint8 arrays) to L2-normalised vectors, in batches.

    from dataaudit.embed.model import Embedder
    emb = Embedder(EmbedSpec())              # efficientnet_lite0, offline weights, auto device
    vecs = emb.embed(batch)                  # batch: uint8 (N, S, S, 3) from prepare_pixels

It assembles the pieces that live in their own modules: the device and precision policy
(:mod:`~dataaudit.embed.device`), weights (:mod:`~dataaudit.embed.weights`) and graph surgery
(:mod:`~dataaudit.embed.surgery`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from dataaudit.embed.device import autocast_dtype, choose_device, resolve_precision

# embed/knn.py still imports the CPU probe from here; its own precision rule should move to
# dataaudit.embed.device.resolve_precision (knn.py belongs to another change in flight).
from dataaudit.embed.spec import EmbedSpec, prepare_pixels
from dataaudit.embed.surgery import EmbedNet, fold_if_exact, strip_head
from dataaudit.embed.weights import resolve_spec


class Embedder:
    """Batched, L2-normalised image embeddings on CPU, CUDA or MPS.

    `precision` "auto" uses bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX) and on
    CUDA GPUs that support it (fp16 otherwise), fp32 elsewhere. `threads` sets torch's CPU
    thread count (default: torch's own, capped at the CPUs this process may use).
    """

    def __init__(
        self,
        spec: EmbedSpec | None = None,
        device: str | None = None,
        precision: str = "auto",
        batch_size: int | None = None,
        threads: int | None = None,
    ) -> None:
        self.device = choose_device(device)
        kind = self.device.split(":", 1)[0]
        self.precision = resolve_precision(precision, self.device)
        if kind == "cpu":
            allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
            if threads is not None:
                torch.set_num_threads(max(1, threads))
            elif allowed and torch.get_num_threads() > allowed:
                torch.set_num_threads(allowed)
        if kind == "cuda":
            torch.backends.cudnn.benchmark = True
        self.batch_size = batch_size or (256 if kind == "cuda" else 32)

        model, self.spec = resolve_spec(spec or EmbedSpec())
        assert self.spec.mean is not None and self.spec.std is not None
        net = EmbedNet(strip_head(model), self.spec.mean, self.spec.std).eval()
        net = fold_if_exact(net, self.spec.input_size)
        self._net = net.to(self.device, memory_format=torch.channels_last)
        size = self.spec.input_size
        probe = self._forward(np.zeros((1, size, size, 3), dtype=np.uint8))
        self.dim = int(probe.shape[1])

    def describe(self) -> dict[str, Any]:
        """What to record with the vectors: spec plus device, precision and dimension."""
        return {
            **self.spec.to_dict(),
            "device": self.device,
            "precision": self.precision,
            "dim": self.dim,
        }

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch)
        kind = self.device.split(":", 1)[0]
        if kind == "cuda":
            x = x.pin_memory().to(self.device, non_blocking=True)
        elif kind != "cpu":
            x = x.to(self.device)
        dtype = autocast_dtype(self.precision)
        cast = torch.autocast(kind, dtype=dtype) if dtype else contextlib.nullcontext()
        with torch.inference_mode(), cast:
            feats = self._net(x)
        feats = torch.nn.functional.normalize(feats.float(), dim=1)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) RGB -> float32 (N, dim) unit vectors, in batches."""
        size = self.spec.input_size
        arr = np.asarray(batch)
        if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (size, size, 3):
            raise ValueError(
                f"expected uint8 array of shape (N, {size}, {size}, 3), got {arr.dtype} {arr.shape}"
            )
        if len(arr) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not arr.flags.c_contiguous or not arr.flags.writeable:
            arr = np.array(arr, order="C")  # torch.from_numpy wants a writable, dense array
        parts = [
            self._forward(arr[i : i + self.batch_size]) for i in range(0, len(arr), self.batch_size)
        ]
        return np.concatenate(parts)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Convenience for callers holding PIL images: prepare_pixels, then embed."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed(np.stack([prepare_pixels(im, self.spec) for im in images]))
