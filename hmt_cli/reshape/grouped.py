"""Channel mapping that respects grouped and depthwise structure on both sides.

A grouped conv is a full conv whose weight is block-diagonal. We index that full weight without
building it: target element ``(o, j)`` reads global input channel ``g(o) * I_pg + j``; the source
element at ``(o mod O_s, that channel mod I_s)`` is its weight if the channel lies in the source
row's group, else 0. Consequences (all one gather, no loops):

* full -> full: plain cyclic stacking (the paper's rule);
* full -> depthwise: channel c takes the source's diagonal kernel ``W[c mod O_s, c mod I_s]``, the
  filter that maps a channel onto itself, instead of an arbitrary slice;
* depthwise -> full: a per-channel (diagonal) full conv;
* depthwise/grouped -> depthwise/grouped: per-channel kernels stay per-channel.
"""

from __future__ import annotations

import torch

from .cyclic import cyclic_stack
from .kernel import adapt_rank, resize_kernel

__all__ = ["grouped_map", "check_grouped"]


def check_grouped(src: tuple[int, ...], tgt: tuple[int, ...], src_groups: int = 1, tgt_groups: int = 1) -> str | None:
    if len(src) < 2 or len(tgt) < 2 or len(tgt) > 5:
        return f"grouped needs weights of rank 2 to 5, got {src} -> {tgt}"
    if src_groups < 1 or tgt_groups < 1 or src[0] % src_groups or tgt[0] % tgt_groups:
        return f"group counts {src_groups} -> {tgt_groups} do not divide the output channels of {src} -> {tgt}"
    return None


def grouped_map(src: torch.Tensor, shape: tuple[int, ...], src_groups: int = 1, tgt_groups: int = 1) -> torch.Tensor:
    x = adapt_rank(src, len(shape))
    if src_groups == 1 and tgt_groups == 1:  # the common case is plain cyclic stacking: two index_selects
        if x.shape[0] * x.shape[1] > shape[0] * shape[1]:
            return resize_kernel(cyclic_stack(x, (*shape[:2], *x.shape[2:])), shape[2:]).contiguous()
        return cyclic_stack(resize_kernel(x, shape[2:]), shape)
    out_s, in_pg_s = x.shape[:2]
    out_t, in_pg_t = shape[:2]
    dev = x.device
    o_t = torch.arange(out_t, device=dev)
    global_in_t = (o_t // (out_t // tgt_groups))[:, None] * in_pg_t + torch.arange(in_pg_t, device=dev)[None, :]
    o_s = (o_t % out_s)[:, None]
    global_in_s = global_in_t % (in_pg_s * src_groups)
    j_s = global_in_s - (o_s // (out_s // src_groups)) * in_pg_s
    valid = (j_s >= 0) & (j_s < in_pg_s)
    gathered = x[o_s.expand_as(j_s), j_s.clamp(0, in_pg_s - 1)]  # (O_t, I_pg_t, *k_s)
    if not bool(valid.all()):
        gathered = gathered * valid.reshape(*valid.shape, *([1] * (x.dim() - 2))).to(gathered.dtype)
    return resize_kernel(gathered.contiguous(), shape[2:]).contiguous()
