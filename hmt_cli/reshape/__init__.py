"""Tensor rules: tensor in, tensor out, dtype preserved; raise ``RuleError`` on shapes they can't handle.

Mechanism apart from policy: a rule never decides *whether* a tensor should be transferred, only
how; the planner picks rules by name from :data:`RULES` and the applier calls them.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .centre import centre_into, centre_region, diagonal_kernels, isolate_rows
from .cyclic import cyclic_stack
from .grouped import check_grouped, grouped_map
from .kernel import adapt_rank, resize_kernel
from .tokens import check_tokens, pos_embed, tokens

__all__ = [
    "RULES", "CHECKS", "RuleError", "apply_rule", "check_rule", "cyclic_stack", "resize_kernel", "adapt_rank",
    "paper_weight", "BASED_RULES", "written_region",
]


class RuleError(ValueError):
    """The rule cannot map this source shape onto this target shape."""


def copy(src: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    if tuple(src.shape) != tuple(shape):
        raise RuleError(f"copy needs equal shapes, got {tuple(src.shape)} -> {tuple(shape)}")
    return src.clone()


def cyclic(src: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Channels only (biases, norm vectors, and same-kernel weights)."""
    if src.dim() != len(shape):
        raise RuleError(f"cyclic needs equal ranks, got {tuple(src.shape)} -> {tuple(shape)}")
    if src.shape[2:] != torch.Size(shape[2:]):
        raise RuleError(f"cyclic keeps kernel sizes, got {tuple(src.shape)} -> {tuple(shape)}")
    return cyclic_stack(src, shape)


def paper_weight(src: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The HMT paper's rule: kernels by bilinear interpolation, channels by cyclic stacking.

    Linear weights count as 1x1 convs, so conv <-> linear pairs work in both directions.
    """
    if src.dim() < 2 or len(shape) < 2:
        raise RuleError(f"weights need rank >= 2, got {tuple(src.shape)} -> {tuple(shape)}")
    x = adapt_rank(src, len(shape))
    # Interpolating is per (out, in) slice, so do the cheap step first: shrink before resizing.
    if x.shape[0] * x.shape[1] > shape[0] * shape[1]:
        return resize_kernel(cyclic_stack(x, (*shape[:2], *x.shape[2:])), shape[2:])
    return cyclic_stack(resize_kernel(x, shape[2:]), shape)


def _check_nonempty(rule: str, src: tuple[int, ...], tgt: tuple[int, ...]) -> None:
    # Cyclic stacking takes indices modulo the source's sizes: an empty axis has nothing to stack.
    if any(s <= 0 for s in src) or any(s <= 0 for s in tgt):
        raise RuleError(f"{rule} needs non-empty axes, got {src} -> {tgt}")


def check_paper(src: tuple[int, ...], tgt: tuple[int, ...]) -> None:
    if len(src) < 2 or len(tgt) < 2 or len(tgt) > 5 or len(src) > 5:
        raise RuleError(f"paper needs weights of rank 2 to 5, got {src} -> {tgt}")
    _check_nonempty("paper", src, tgt)


def check_cyclic(src: tuple[int, ...], tgt: tuple[int, ...]) -> None:
    if len(src) != len(tgt) or src[2:] != tgt[2:]:
        raise RuleError(f"cyclic needs equal ranks and kernel sizes, got {src} -> {tgt}")
    _check_nonempty("cyclic", src, tgt)


def check_copy(src: tuple[int, ...], tgt: tuple[int, ...]) -> None:
    if src != tgt:
        raise RuleError(f"copy needs equal shapes, got {src} -> {tgt}")


def grouped(src: torch.Tensor, shape: tuple[int, ...], src_groups: int = 1, tgt_groups: int = 1) -> torch.Tensor:
    """Kernels by bilinear interpolation, channels cyclically through each side's group structure."""
    problem = check_grouped(tuple(src.shape), tuple(shape), src_groups, tgt_groups)
    if problem:
        raise RuleError(problem)
    return grouped_map(src, shape, src_groups, tgt_groups)


def _check_grouped(src: tuple[int, ...], tgt: tuple[int, ...], src_groups: int = 1, tgt_groups: int = 1) -> None:
    problem = check_grouped(src, tgt, src_groups, tgt_groups)
    if problem:
        raise RuleError(problem)
    _check_nonempty("grouped", src, tgt)


def _check_pos_embed(src: tuple[int, ...], tgt: tuple[int, ...]) -> None:
    _check_tokens(src, tgt)
    problem = check_tokens(src, tgt)
    if problem:
        raise RuleError(problem)


def _check_tokens(src: tuple[int, ...], tgt: tuple[int, ...]) -> None:
    if len(src) != 3 or len(tgt) != 3 or src[0] != 1 or tgt[0] != 1:
        raise RuleError(f"token tensors must be (1, N, C), got {src} -> {tgt}")
    _check_nonempty("tokens", src, tgt)


def _pos_embed(src: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    _check_pos_embed(tuple(src.shape), tuple(shape))
    return pos_embed(src, shape)


def _tokens(src: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    _check_tokens(tuple(src.shape), tuple(shape))
    return tokens(src, shape)


def check_centre(src: tuple[int, ...], tgt: tuple[int, ...], diagonal: int = 0, keep_zero: int = 0,
                 scale_permille: int = 1000, isolate: int = 0) -> None:
    """``diagonal=1``: a full conv source into a depthwise target, through the source's diagonal kernels.
    ``keep_zero=1``: an all-zero source (a norm gain timm zero-initialized and nobody trained) leaves the
    target's init as it is. ``scale_permille``: the source values are multiplied by this / 1000 before
    they are written (the part kept from the target's init is not). ``isolate=1`` (weights only): the
    output channels holding source values are zero outside the source's box (:func:`isolate_rows`)."""
    if diagonal not in (0, 1) or keep_zero not in (0, 1) or isolate not in (0, 1):
        raise RuleError(f"centre: diagonal, keep_zero and isolate must be 0 or 1, got {diagonal}, {keep_zero}, "
                        f"{isolate}")
    if isolate and len(tgt) < 2:
        raise RuleError(f"centre with isolate needs a weight of rank >= 2, got {src} -> {tgt}")
    if not 0 < scale_permille <= 100_000:
        raise RuleError(f"centre: scale_permille must be in 1..100000, got {scale_permille}")
    if diagonal and not (len(src) == len(tgt) and 3 <= len(src) <= 5 and tgt[1] == 1):
        raise RuleError(f"centre with diagonal kernels needs a conv source and a depthwise target, got {src} -> {tgt}")
    same_rank = len(src) == len(tgt) and 1 <= len(src) <= 5
    if not same_rank and not (2 <= len(src) <= 5 and 2 <= len(tgt) <= 5):
        raise RuleError(f"centre needs equal ranks (or two weights of rank 2 to 5), got {src} -> {tgt}")
    _check_nonempty("centre", src, tgt)


def _zero_kept(src: torch.Tensor, keep_zero: int) -> bool:
    # A zero gain is the source's init (timm zero-inits each residual block's last norm), not
    # knowledge; copied onto a norm mid-block it would cut the signal path there.
    return bool(keep_zero) and not bool(src.any())


def _centre_region(src: torch.Tensor, shape: tuple[int, ...], diagonal: int = 0, keep_zero: int = 0,
                   scale_permille: int = 1000, isolate: int = 0) -> tuple[slice, ...] | None:
    """Where :func:`centre` (same arguments) puts source values: shapes only, but for ``keep_zero``'s test."""
    if _zero_kept(src, keep_zero):
        return tuple(slice(0, 0) for _ in shape)  # it wrote the init back
    written = diagonal_kernels(src.to("meta")) if diagonal else src
    return centre_region(tuple(written.shape), shape)


def centre(src: torch.Tensor, shape: tuple[int, ...], base: torch.Tensor | None = None,
           diagonal: int = 0, keep_zero: int = 0, scale_permille: int = 1000, isolate: int = 0) -> torch.Tensor:
    if base is None or tuple(base.shape) != tuple(shape):
        raise RuleError(f"centre writes into the target's init of shape {shape}; got none or another shape")
    if _zero_kept(src, keep_zero):
        return base.to(device=src.device, dtype=src.dtype, copy=True)
    written = diagonal_kernels(src) if diagonal else src
    out = centre_into(written * (scale_permille / 1000) if scale_permille != 1000 else written, base)
    region = centre_region(tuple(written.shape), tuple(shape)) if isolate else None
    return out if region is None else isolate_rows(out, region)


# Shape-only preconditions, so plans validate without touching (even meta) tensors.
CHECKS: dict[str, Callable[..., None]] = {
    "copy": check_copy,
    "cyclic": check_cyclic,
    "paper": check_paper,
    "grouped": _check_grouped,
    "pos_embed": _check_pos_embed,
    "tokens": _check_tokens,
    "centre": check_centre,
}

RULES: dict[str, Callable[..., torch.Tensor]] = {
    "copy": copy,
    "cyclic": cyclic,
    "paper": paper_weight,
    "grouped": grouped,
    "pos_embed": _pos_embed,
    "tokens": _tokens,
    "centre": centre,
}

# Rules that write into the target's own init tensor (passed as ``base``) instead of replacing it.
BASED_RULES = frozenset({"centre"})
# For each of those, the box of the target tensor it fills from the source (None: all of it), given the
# rule's own arguments; every other rule writes the whole tensor.
_REGIONS: dict[str, Callable[..., tuple[slice, ...] | None]] = {"centre": _centre_region}


def written_region(name: str, src: torch.Tensor, shape: tuple[int, ...], **params: int) -> tuple[slice, ...] | None:
    """The part of rule ``name``'s ``shape``-d result that holds ``src``'s values; None: all of it."""
    region = _REGIONS.get(name)
    return None if region is None else region(src, tuple(shape), **params)


def check_rule(name: str, src: tuple[int, ...], tgt: tuple[int, ...], **params: int) -> None:
    """Raise :class:`RuleError` unless rule ``name`` maps shape ``src`` onto ``tgt``."""
    if name not in CHECKS:
        raise RuleError(f"unknown rule {name!r}; known: {', '.join(CHECKS)}")
    CHECKS[name](tuple(src), tuple(tgt), **params)


def apply_rule(name: str, src: torch.Tensor, shape: tuple[int, ...], base: torch.Tensor | None = None,
               **params: int) -> torch.Tensor:
    """Run rule ``name``; ``base`` (the target's init of that tensor) is passed to :data:`BASED_RULES`."""
    try:
        rule = RULES[name]
    except KeyError:
        raise RuleError(f"unknown rule {name!r}; known: {', '.join(RULES)}") from None
    check_rule(name, tuple(src.shape), tuple(shape), **params)  # one precondition for plans and tensors
    out = rule(src, tuple(shape), base=base, **params) if name in BASED_RULES else rule(src, tuple(shape), **params)
    if tuple(out.shape) != tuple(shape):  # post-condition: a rule bug must never reach a file
        raise RuleError(f"rule {name} produced {tuple(out.shape)}, expected {tuple(shape)}")
    return out
