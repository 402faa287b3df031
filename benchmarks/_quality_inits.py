"""How each init of the quality benchmark builds its target model (before fine-tuning).

* ``scratch``: ``timm.create_model`` under ``torch.manual_seed(seed)``: timm's own init.
* an hmt strategy (``paper``, ...): :func:`hmt_cli.pipeline.transfer`, the API the CLI calls, into a temp
  safetensors file, loaded strictly into a fresh ``timm.create_model``. What is measured is what ships.
* ``dpiat``: the peer (:mod:`benchmarks.peers.dpiat`), in memory.
* ``upper``: the target pre-trained on the source's task with the source recipe (cached).
* ``<strategy>@untrained``: the control. The strategy, from a random-init copy of the source
  (``torch.manual_seed(0)``, the source's own constructor) instead of the trained one. Against scratch it
  measures what the transfer does *without* knowledge (the init's scales and statistics, the pairing's
  structure); the strategy's gain minus the control's is what the source's training contributed. A trained
  network's transfer that is no better than its untrained copy's transfers conditioning, not knowledge.

Every init then gets the *same* fresh classifier head for a given (target, classes, seed): the head of the
scratch model of that seed. So inits differ only in the body, and the head init is one of the seed's factors.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._quality_config import SourceSpec, TargetSpec

__all__ = [
    "InitResult",
    "create_target",
    "head_state",
    "set_head",
    "build_source",
    "load_state",
    "save_state",
    "recipe_key",
    "hmt_init",
    "dpiat_init",
    "upper_init",
    "slug",
    "UNTRAINED",
    "split_control",
    "untrained_source",
]

UNTRAINED = "@untrained"


def split_control(init: str) -> tuple[str, bool]:
    """``"block@untrained"`` -> ``("block", True)``; any other init -> ``(init, False)``."""
    return (init.removesuffix(UNTRAINED), True) if init.endswith(UNTRAINED) else (init, False)


@dataclass(frozen=True)
class InitResult:
    model: nn.Module
    frac_params_written: float | None
    details: Mapping[str, Any]
    # Of the target's parameters, the fraction that holds source values. Below frac_params_written when a
    # rule pads a narrower source with the target's init inside a written tensor (hmt's centre rule);
    # DPIAT and upper write source values only. None when the init cannot tell.
    frac_params_from_source: float | None = None


def create_target(target: TargetSpec, num_classes: int, seed: int) -> nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model(target.name, num_classes=num_classes, **dict(target.kwargs))


def _head_prefix(model: nn.Module) -> str:
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    for name, module in model.named_modules():
        if module is head:
            return name
    raise ValueError(f"{type(model).__name__} has no classifier module to re-initialize")


def head_state(model: nn.Module) -> dict[str, torch.Tensor]:
    prefix = _head_prefix(model)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if k.startswith(prefix + ".")}


def set_head(model: nn.Module, head: Mapping[str, torch.Tensor]) -> None:
    missing = set(head) - set(model.state_dict())
    if missing:
        raise KeyError(f"head tensors not in the model: {sorted(missing)}")
    model.load_state_dict(dict(head), strict=False)


def _head_numel(model: nn.Module) -> int:
    prefix = _head_prefix(model) + "."
    return sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))


def _factory(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def build_source(spec: SourceSpec, num_classes: int | None = None) -> nn.Module:
    kwargs = dict(spec.kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if ":" in spec.model:
        return _factory(spec.model)(**kwargs)
    import timm

    return timm.create_model(spec.model, **kwargs)


def untrained_source(spec: SourceSpec, num_classes: int | None, path: Path) -> Path:
    """The control's source: the arm's source model at its random init (seed 0), saved at ``path``."""
    torch.manual_seed(0)
    save_state(build_source(spec, num_classes), path, {"origin": "random init, torch.manual_seed(0): the control"})
    return path


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a torch checkpoint (``weights_only``; wrappers and ``module.`` ok)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    blob = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(blob, Mapping) and key in blob and isinstance(blob[key], Mapping):
            blob = blob[key]
    return {k.removeprefix("module."): v for k, v in blob.items() if isinstance(v, torch.Tensor)}


def save_state(model: nn.Module, path: Path, metadata: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"hmt_bench": json.dumps(dict(metadata), sort_keys=True)})
    tmp.replace(path)


def recipe_key(**parts: Any) -> str:
    """Cache key of a pre-trained model: everything that changes its weights, nothing that does not."""
    norm = {k: asdict(v) if hasattr(v, "__dataclass_fields__") else v for k, v in parts.items()}
    blob = json.dumps(norm, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")


_RUN_SPECIFIC = ("out", "seconds")  # temp path and timing: would make results.json differ run to run


def _scalars(report: Any) -> dict[str, Any]:
    # The full per-tensor report is large; results.json keeps its scalar summary.
    data = report.to_dict() if hasattr(report, "to_dict") else {}
    return {
        k: v
        for k, v in data.items()
        if k not in _RUN_SPECIFIC and (isinstance(v, str | int | float | bool) or v is None)
    }


def hmt_init(
    *,
    source: SourceSpec,
    source_weights: Path,
    source_classes: int | None,
    target: TargetSpec,
    num_classes: int,
    strategy: str,
    seed: int,
) -> InitResult:
    from safetensors.torch import load_file

    from hmt_cli.options import TransferOptions
    from hmt_cli.pipeline import transfer

    src_kwargs = dict(source.kwargs)
    if source_classes is not None:
        src_kwargs["num_classes"] = source_classes
    with tempfile.TemporaryDirectory(prefix="hmt-bench-") as tmp:
        out = Path(tmp) / "target.safetensors"
        opts = TransferOptions(
            src=source.model,
            tgt=target.name,
            out=out,
            src_weights=source_weights,
            num_classes=num_classes,
            strategy=strategy,
            seed=seed,
            device="cpu",
            force=True,
            dry_run=False,
            src_kwargs=src_kwargs,
            tgt_kwargs=dict(target.kwargs),
        )
        report = transfer(opts)
        model = create_target(target, num_classes, seed)
        model.load_state_dict(load_file(str(out)), strict=True)
    return InitResult(model, float(report.frac_params_written), _scalars(report), report.frac_params_from_source)


def dpiat_init(source_model: nn.Module, target: TargetSpec, num_classes: int, seed: int) -> InitResult:
    from .peers.dpiat import dpiat_transfer

    model = create_target(target, num_classes, seed)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    stats = dpiat_transfer(source_model, model)
    changed = sum(int((p.detach() != before[n]).sum()) for n, p in model.named_parameters())
    total = sum(p.numel() for p in model.parameters())
    details = stats._asdict() if hasattr(stats, "_asdict") else {}
    # The head is reset to the seed's fresh head afterwards; do not count what IAT wrote there.
    head_changed = sum(
        int((p.detach() != before[n]).sum())
        for n, p in model.named_parameters()
        if n.startswith(_head_prefix(model) + ".")
    )
    # Every element DPIAT changes is a source value it copied (crop/pad leaves the rest as it was).
    frac = (changed - head_changed) / total
    return InitResult(model, frac, details, frac)


def upper_init(pretrained: Path, target: TargetSpec, num_classes: int, seed: int) -> InitResult:
    model = create_target(target, num_classes, seed)
    state = load_state(pretrained)
    head = set(head_state(model))
    # The pre-trained head may have another class count: it is replaced by the fresh head anyway.
    body = {k: v for k, v in state.items() if k not in head}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if set(missing) - head or unexpected:
        raise RuntimeError(
            f"pre-trained {target.name} does not match: missing {missing}, unexpected {unexpected}"
        )
    total = sum(p.numel() for p in model.parameters())
    frac = (total - _head_numel(model)) / total
    return InitResult(model, frac, {"pretrained": pretrained.name}, frac)
