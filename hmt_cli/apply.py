"""Plan + source tensors -> the target's state dict. The only tensor arithmetic in hmt.

Each op reads one source tensor (lazily), checks it is finite, runs its rule on ``device`` and
stores the result on the CPU in the output dtype. Nothing here loops over channels.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from math import prod

import torch

from .errors import InvalidValues
from .io import WeightSource
from .plan import TransferPlan
from .reshape import apply_rule, written_region

__all__ = ["Written", "apply_plan", "check_finite", "single_thread"]


def _all_finite(tensor: torch.Tensor) -> bool:
    """One fused min/max reduction: NaN propagates into both, +-Inf lands in one of them.

    ``torch.isfinite(t).all()`` allocates a bool tensor and runs several passes: about 20x slower
    on CPU (264 ms vs 12 ms for 25M floats), which made the finiteness checks most of apply's time.
    """
    if tensor.numel() == 0:
        return True
    try:
        low, high = torch.aminmax(tensor)
    except (RuntimeError, NotImplementedError):  # dtypes without an aminmax kernel (e.g. float8)
        return bool(torch.isfinite(tensor).all())
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def check_finite(name: str, tensor: torch.Tensor, where: str) -> None:
    if tensor.is_floating_point() and not _all_finite(tensor):
        bad = int((~torch.isfinite(tensor)).sum())  # the slow count only on the error path
        raise InvalidValues(f"{where} tensor {name} has {bad} NaN/Inf values", hint="check the source checkpoint")


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the ops on one intra-op thread, restoring the caller's setting afterwards.

    Apply is gathers, copies, small interpolations and min/max scans: memory-bound ops where a
    second thread gains little, and all exact (no reduction whose order depends on the thread
    count), so the output is bitwise the same. With the cores shared, each of the hundreds of
    OpenMP regions waits for a descheduled worker: on a 2-core machine at load ~5, 2 threads made
    apply 3-9x slower (resnet50->mnv3 1.06 s vs 0.12 s; vit_huge->vit_large 8.8 s vs 3.0 s).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _fetch(source: WeightSource, key: str, device: torch.device) -> torch.Tensor:
    # Check on the device: on a GPU the reduction is free next to the copy; on the CPU it is a no-op move.
    src = source.get(key).to(device, non_blocking=True)
    check_finite(key, src, "source")
    return src


def _store(target: MutableMapping[str, torch.Tensor], key: str, out: torch.Tensor) -> None:
    """Write ``out`` into the target's tensor in place (it may be the model's own parameter, which
    then stops holding the init: one copy of the target in memory, not two); a new tensor otherwise."""
    current = target[key]
    if current.shape == out.shape and current.dtype == out.dtype and current.device.type == "cpu":
        current.copy_(out)
    else:
        target[key] = out.cpu()


@dataclass(frozen=True)
class Written:
    """What ``apply_plan`` wrote: per target key, how many elements hold source values (a rule that writes
    a narrow source into a wider tensor, centre crop/pad, leaves the rest at the init), and for the keys
    asked for (those a rescale measures) where, as a box of slices; a key without one is the source's whole."""

    from_source: Mapping[str, int]
    regions: Mapping[str, tuple[slice, ...]]


def apply_plan(
    plan: TransferPlan,
    source: WeightSource,
    target: MutableMapping[str, torch.Tensor],
    device: torch.device,
    progress: Callable[[int], None] | None = None,
    keep_regions: Collection[str] = (),
) -> Written:
    """Write every op of ``plan`` into ``target``'s tensors in place; see :class:`Written`."""
    with single_thread():
        return _apply(plan, source, target, device, progress, frozenset(keep_regions))


def _apply(
    plan: TransferPlan,
    source: WeightSource,
    target: MutableMapping[str, torch.Tensor],
    device: torch.device,
    progress: Callable[[int], None] | None,
    keep_regions: frozenset[str],
) -> Written:
    cache: dict[str, torch.Tensor] = {}
    last_use = {op.src_key: step for step, op in enumerate(plan.ops)}
    counts: dict[str, int] = {}
    regions: dict[str, tuple[slice, ...]] = {}
    for step, op in enumerate(plan.ops):
        src = cache.get(op.src_key)
        if src is None:
            src = cache[op.src_key] = _fetch(source, op.src_key, device)
        # op.params as plan.check_rule validated them (group counts); cast before checking and
        # moving: an overflow of a narrower output dtype is caught, and only target-sized data
        # crosses to the CPU.
        # target[op.tgt_key] is still the target's init here: apply_rule hands it to the rules that write into it.
        base = target[op.tgt_key]
        out = apply_rule(op.rule, src, op.tgt_shape, base, **dict(op.params)).to(base.dtype)
        check_finite(op.tgt_key, out, "transferred")
        _store(target, op.tgt_key, out)
        region = written_region(op.rule, src, op.tgt_shape, **dict(op.params))  # from shapes: no pass over out
        counts[op.tgt_key] = out.numel() if region is None else prod(s.stop - s.start for s in region)
        if region is not None and op.tgt_key in keep_regions:
            regions[op.tgt_key] = region
        if progress:
            progress(step + 1)
        if last_use[op.src_key] == step:  # a source feeding several targets stays only while needed
            del cache[op.src_key]
    return Written(counts, regions)
