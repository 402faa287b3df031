"""Kernel resizing by interpolation, and rank adaptation between linear, conv1d/2d/3d weights.

Settings (documented in docs/transfer.md): ``F.interpolate(mode="linear"|"bilinear"|"trilinear",
align_corners=False, antialias=False)``, computed in float32 and cast back to the input dtype. With
``align_corners=False`` a 3x3 -> 1x1 resize samples the centre tap exactly, and an odd-sized
kernel keeps its centre on the centre.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["resize_kernel", "adapt_rank"]

_MODES = {1: "linear", 2: "bilinear", 3: "trilinear"}


def resize_kernel(w: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Resize the spatial axes (all after the first two) of a conv weight to ``size``."""
    size = tuple(int(s) for s in size)
    if tuple(w.shape[2:]) == size:
        return w
    if len(size) != w.dim() - 2 or len(size) not in _MODES:
        raise ValueError(f"resize_kernel: cannot resize {tuple(w.shape)} to kernel {size}")
    out_c, in_c = w.shape[:2]
    flat = w.reshape(out_c * in_c, 1, *w.shape[2:]).float()
    resized = F.interpolate(flat, size=size, mode=_MODES[len(size)], align_corners=False, antialias=False)
    return resized.reshape(out_c, in_c, *size).to(w.dtype)


def adapt_rank(w: torch.Tensor, rank: int) -> torch.Tensor:
    """Give a weight ``rank`` axes: add trailing 1-sized kernel axes, or take centre taps to drop them.

    linear (O, I) -> conv (O, I, 1, 1); conv2d (O, I, kh, kw) -> linear takes the centre tap,
    conv3d -> conv2d the centre temporal slice, conv1d -> conv2d becomes (O, I, 1, k).
    """
    while w.dim() < rank:
        w = w.unsqueeze(2) if w.dim() >= 3 else w.unsqueeze(-1)
    while w.dim() > rank:
        w = w.select(2, w.shape[2] // 2)
    return w
