"""Plan + source tensors -> the target's state dict. The only tensor arithmetic in hmt.

Each op reads one source tensor (lazily), checks it is finite, runs its rule on ``device`` and
stores the result on the CPU in the output dtype. Nothing here loops over channels.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping

import torch

from .errors import InvalidValues
from .io import WeightSource
from .plan import TransferPlan
from .reshape import apply_rule

__all__ = ["apply_plan", "check_finite"]


def check_finite(name: str, tensor: torch.Tensor, where: str) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise InvalidValues(f"{where} tensor {name} has {bad} NaN/Inf values", hint="check the source checkpoint")


def apply_plan(
    plan: TransferPlan,
    source: WeightSource,
    target: MutableMapping[str, torch.Tensor],
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write every op of ``plan`` into ``target`` in place; returns the number of elements written."""
    cache: dict[str, torch.Tensor] = {}
    last_use = {op.src_key: step for step, op in enumerate(plan.ops)}
    written = 0
    for step, op in enumerate(plan.ops):
        src = cache.get(op.src_key)
        if src is None:
            src = source.get(op.src_key)
            check_finite(op.src_key, src, "source")
            src = cache[op.src_key] = src.to(device, non_blocking=True)
        out = apply_rule(op.rule, src, op.tgt_shape)
        dest = target[op.tgt_key]
        out = out.to("cpu", dest.dtype)
        check_finite(op.tgt_key, out, "transferred")
        target[op.tgt_key] = out
        written += out.numel()
        if progress:
            progress(step + 1)
        if last_use[op.src_key] == step:  # a source feeding several targets stays only while needed
            cache.pop(op.src_key, None)
    return written
