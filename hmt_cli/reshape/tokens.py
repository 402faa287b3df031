"""Token tensors: absolute position embeddings and class/register tokens, ``(1, N, C)``.

Position grids are resampled with timm's own ``resample_abs_pos_embed`` (bicubic, antialiased,
prefix tokens kept apart), channels stacked cyclically on the last axis. The number of prefix
tokens is what a square grid leaves over: ``N - floor(sqrt(N))**2``.
"""

from __future__ import annotations

import math

import torch

from .cyclic import cyclic_index

__all__ = ["pos_embed", "tokens", "check_tokens", "prefix_tokens"]


def prefix_tokens(n: int) -> int:
    side = math.isqrt(n)
    return n - side * side


def check_tokens(src: tuple[int, ...], tgt: tuple[int, ...]) -> str | None:
    if len(src) != 3 or len(tgt) != 3 or src[0] != 1 or tgt[0] != 1:
        return f"token tensors must be (1, N, C), got {src} -> {tgt}"
    if math.isqrt(src[1] - prefix_tokens(src[1])) == 0 or math.isqrt(tgt[1] - prefix_tokens(tgt[1])) == 0:
        return f"no square position grid in {src} -> {tgt}"
    return None


def _channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    if x.shape[-1] == channels:
        return x
    return x.index_select(-1, cyclic_index(channels, x.shape[-1], x.device))


def pos_embed(src: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    from timm.layers import resample_abs_pos_embed

    n_src, n_tgt = src.shape[1], shape[1]
    pre_src, pre_tgt = prefix_tokens(n_src), prefix_tokens(n_tgt)
    side_src, side_tgt = math.isqrt(n_src - pre_src), math.isqrt(n_tgt - pre_tgt)
    x = _channels(src, shape[2]).float()
    grid = resample_abs_pos_embed(x[:, pre_src:], [side_tgt, side_tgt], [side_src, side_src], num_prefix_tokens=0)
    prefix = x[:, :pre_src]
    if pre_tgt:
        prefix = prefix.index_select(1, cyclic_index(pre_tgt, pre_src, x.device)) if pre_src else grid.mean(1, True)
        prefix = prefix.expand(-1, pre_tgt, -1) if prefix.shape[1] != pre_tgt else prefix
    out = torch.cat([prefix, grid], dim=1) if pre_tgt else grid
    return out.to(src.dtype).contiguous()


def tokens(src: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Class / register / distillation tokens: cyclic over tokens and channels."""
    x = _channels(src, shape[-1])
    if x.shape[1] != shape[1]:
        x = x.index_select(1, cyclic_index(shape[1], x.shape[1], x.device))
    return x.contiguous() if x is not src else x.clone()
