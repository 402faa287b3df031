"""Centre crop/pad into the target's init: ``out = init``, then the centred overlap comes from the source.

Per axis, a narrower target takes the source's middle ``n`` entries and a wider one receives the
whole source in its middle; everything outside the overlap keeps the target's own init. Nothing
is duplicated, so no two target channels start identical (cyclic stacking's symmetry that
training must first break), and the source values keep their trained scale. Equal sizes on every
axis make it a plain copy. This is DPIAT's tensor rule (Czyzewski et al., 2022), applied here to
every layer a strategy pairs.
"""

from __future__ import annotations

import torch

from .kernel import adapt_rank

__all__ = ["centre_into", "centre_region", "centre_slices", "diagonal_kernels", "isolate_rows"]


def centre_slices(src: int, tgt: int) -> tuple[slice, slice]:
    """(source slice, target slice) of the centred overlap of two axis lengths."""
    if src >= tgt:
        start = (src - tgt) // 2
        return slice(start, start + tgt), slice(0, tgt)
    start = (tgt - src) // 2
    return slice(0, src), slice(start, start + src)


def _overlap(x: torch.Tensor, tgt: tuple[int, ...]) -> tuple[torch.Tensor, list[tuple[slice, slice]]]:
    """``x`` at ``tgt``'s rank (weights through :func:`adapt_rank`: linear <-> 1x1 conv, centre taps) and,
    per axis, the (source, target) slices of their centred overlap."""
    y = adapt_rank(x, len(tgt)) if x.dim() >= 2 and len(tgt) >= 2 else x
    if y.dim() != len(tgt):
        raise ValueError(f"centre: cannot map {tuple(x.shape)} onto {tgt}")
    return y, [centre_slices(a, b) for a, b in zip(y.shape, tgt, strict=True)]


def centre_region(src: tuple[int, ...], tgt: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The box of a ``tgt``-shaped tensor that :func:`centre_into` fills from a ``src``-shaped source (the
    rest keeps the init); None when that is the whole tensor (no axis of the target is the wider)."""
    x, pairs = _overlap(torch.empty(src, device="meta"), tgt)  # shapes only: the centre taps without data
    if all(a >= b for a, b in zip(x.shape, tgt, strict=True)):
        return None
    return tuple(t for _, t in pairs)


def centre_into(src: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """A copy of ``base`` (the target's init) with the centred overlap of ``src`` written into it.

    The result has ``base``'s shape, ``src``'s dtype and device.
    """
    x, pairs = _overlap(src, tuple(base.shape))
    out = base.to(device=x.device, dtype=x.dtype, copy=True)
    out[tuple(t for _, t in pairs)] = x[tuple(s for s, _ in pairs)]
    return out


def diagonal_kernels(w: torch.Tensor) -> torch.Tensor:
    """A full conv's per-channel view: ``(O, I, *k) -> (min(O, I), 1, *k)``, kernel ``c`` = ``w[c, c]``.

    The filter that maps channel ``c`` onto itself is what a depthwise conv computes per channel, so a
    depthwise target takes these, not an arbitrary input-channel slice of each filter.
    """
    n = min(w.shape[0], w.shape[1])
    idx = torch.arange(n, device=w.device)
    return w[idx, idx].unsqueeze(1)


def isolate_rows(out: torch.Tensor, region: tuple[slice, ...]) -> torch.Tensor:
    """``out`` with every output channel (axis 0) of ``region`` zero outside ``region``, in place.

    Centre padding along the input axis leaves an output channel holding source values summing two parts:
    the source's filter over the source's channels and the target's random init over every other input
    (and a larger kernel's outer taps). From a much narrower source the random part dominates and the
    source's features drown; zeroed, the source's channels read only source channels: a sub-network of the
    target. Every other output channel keeps its init and reads all inputs, so no channel starts dead.
    """
    rows = out[region[0]]  # a view
    box = rows[(slice(None), *region[1:])].clone()
    rows.zero_()
    rows[(slice(None), *region[1:])] = box
    return out
