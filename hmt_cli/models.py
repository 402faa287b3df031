"""Model names -> :class:`ModelSpec` -> ``nn.Module`` on a chosen device.

A model is a timm name (``resnet50``, ``resnet50.a1_in1k``, ``hf-hub:org/repo``) or a user factory
``package.module:callable`` returning an ``nn.Module``. Only this module and :mod:`hub` know how
models are built; everything downstream sees a module and a spec.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ModelNotFound, UsageError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["ModelSpec", "resolve_model", "build_model", "suggest_names", "classifier_names", "input_size"]

_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_TIMM_PREFIXES = ("hf-hub:", "hf_hub:", "local-dir:")


@dataclass(frozen=True)
class ModelSpec:
    """What we know about a model before building it."""

    name: str
    kind: str  # "timm" | "factory"
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_timm(self) -> bool:
        return self.kind == "timm"


def suggest_names(name: str, limit: int = 5) -> list[str]:
    import timm

    arch = name.split(".")[0]
    names = timm.list_models()
    close = difflib.get_close_matches(arch, names, n=limit, cutoff=0.6)
    if len(close) < limit:  # substring matches catch "mobilenetv3" -> "mobilenetv3_large_100"
        close += [n for n in names if arch.lower() in n and n not in close][: limit - len(close)]
    return close


def resolve_model(name: str, kwargs: Mapping[str, Any] | None = None) -> ModelSpec:
    """Validate a model name without building anything."""
    kwargs = dict(kwargs or {})
    if not name:
        raise UsageError("empty model name")
    if name.startswith(_TIMM_PREFIXES):
        return ModelSpec(name, "timm", kwargs)
    if ":" in name:
        if not _FACTORY.match(name):
            raise ModelNotFound(f"{name!r} is neither a timm name nor a 'package.module:callable' factory")
        _load_factory(name)
        return ModelSpec(name, "factory", kwargs)
    import timm

    arch = timm.models.split_model_name_tag(name)[0] if hasattr(timm.models, "split_model_name_tag") else name
    if not timm.is_model(arch):
        close = suggest_names(name)
        hint = f"did you mean: {', '.join(close)}" if close else "see `hmt models PATTERN`"
        raise ModelNotFound(f"unknown model {name!r}", hint=hint)
    if arch != name:
        _check_tag(name, arch)
    return ModelSpec(name, "timm", kwargs)


def _check_tag(name: str, arch: str) -> None:
    """``resnet18.bogus``: timm would fail later, mid-build, with a RuntimeError; say it now, with the tags."""
    import timm

    tagged = timm.list_pretrained(f"{arch}.*")
    if name not in tagged:
        tags = ", ".join(t.partition(".")[2] for t in tagged[:5])
        hint = f"{arch} has tags: {tags}" if tags else f"{arch} has no pretrained tags; use the bare name"
        raise ModelNotFound(f"unknown pretrained tag in {name!r}", hint=hint)


def _load_factory(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Like `python -m`, resolve user code relative to the working directory.
        cwd = str(Path.cwd())
        if exc.name is None or not module_name.startswith(exc.name) or cwd in sys.path:
            raise ModelNotFound(f"cannot import {module_name!r} for factory {spec!r}: {exc}") from None
        sys.path.insert(0, cwd)
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc2:
            raise ModelNotFound(f"cannot import {module_name!r} for factory {spec!r}: {exc2}") from None
    except Exception as exc:  # user code failing at import is still "cannot resolve the model"
        raise ModelNotFound(f"importing {module_name!r} for factory {spec!r} failed: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ModelNotFound(f"{module_name!r} has no attribute {attr!r} (factory {spec!r})")
    if not callable(obj):
        raise ModelNotFound(f"factory {spec!r} is not callable")
    return obj


# In-place initializers and the arithmetic timm's init helpers chain after them (trunc_normal_:
# uniform_, erfinv_, mul_, add_, clamp_). None of them changes a shape or a dtype.
_INIT_METHODS = frozenset({
    "normal_", "uniform_", "zero_", "fill_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_", "copy_",
    "exponential_", "log_normal_", "bernoulli_", "random_", "cauchy_", "geometric_", "fill_diagonal_",
})


def _skip_meta_init() -> Any:
    """A torch function mode under which in-place init on meta tensors is a no-op.

    Meta tensors hold no values, yet every ``normal_`` on one still runs torch's Python reference
    decomposition: ~0.3 s of a mobilenetv3 build spent initializing nothing. Only meta tensors are
    skipped, so a factory that computes something real on the CPU while building is unaffected.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    class SkipMetaInit(TorchFunctionMode):
        def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
            name = getattr(func, "__name__", "")
            if name in _INIT_METHODS and args and isinstance(args[0], torch.Tensor) and args[0].is_meta:
                return args[0]
            return func(*args, **(kwargs or {}))

    return SkipMetaInit()


def build_model(
    spec: ModelSpec,
    device: str | torch.device = "meta",
    num_classes: int | None = None,
    pretrained: bool = False,
) -> nn.Module:
    """Build the model on ``device`` (``meta`` allocates nothing); timm init uses torch's global RNG."""
    import torch
    from torch import nn

    kwargs = dict(spec.kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    skip_init = _skip_meta_init() if torch.device(device).type == "meta" else contextlib.nullcontext()
    try:
        with torch.device(device), skip_init:
            if spec.is_timm:
                import timm

                model = timm.create_model(spec.name, pretrained=pretrained, **kwargs)
            else:
                model = _load_factory(spec.name)(**kwargs)
    except TypeError as exc:
        raise UsageError(f"cannot build {spec.name!r} with arguments {kwargs}: {exc}") from None
    if not isinstance(model, nn.Module):
        raise ModelNotFound(f"factory {spec.name!r} returned {type(model).__name__}, not an nn.Module")
    return model.eval()


def classifier_names(model: nn.Module) -> tuple[str, ...]:
    """Module paths of the classifier head, from timm's ``pretrained_cfg['classifier']``."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    names = cfg.get("classifier")
    if names:
        return (names,) if isinstance(names, str) else tuple(names)
    get = getattr(model, "get_classifier", None)
    if callable(get):
        head = get()
        for path, module in model.named_modules():
            if module is head and path:
                return (path,)
    return ()


def input_size(model: nn.Module, default: tuple[int, int, int] = (3, 224, 224)) -> tuple[int, ...]:
    """The (C, H, W) a forward pass needs: a patch embedding's fixed size wins over the cfg's.

    Channels come from the model, not the cfg: a model built with ``in_chans=1`` still has
    ``(3, 224, 224)`` in its cfg.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    chans, height, width = tuple(int(s) for s in (cfg.get("input_size") or default))[-3:]
    chans = _in_chans(model, cfg, chans)
    for owner in (getattr(model, "patch_embed", None), model):
        img_size = getattr(owner, "img_size", None)
        if isinstance(img_size, int):
            return (chans, img_size, img_size)
        if isinstance(img_size, (tuple, list)) and len(img_size) == 2:
            return (chans, int(img_size[0]), int(img_size[1]))
    return (chans, height, width)


def _in_chans(model: nn.Module, cfg: Mapping[str, Any], default: int) -> int:
    chans = getattr(model, "in_chans", None)
    if isinstance(chans, int) and chans > 0:
        return chans
    first = cfg.get("first_conv")
    if isinstance(first, str):  # timm names the stem; its in_channels is what the input must have
        try:
            stem = model.get_submodule(first)
        except AttributeError:
            return default
        chans = getattr(stem, "in_channels", None)
        if isinstance(chans, int) and chans > 0:
            return chans
    return default
