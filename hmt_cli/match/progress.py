"""Stage-aware relative depth: where a layer sits in its network, as a number in [0, 1).

A network's *stages* are the distinct resolutions (``LayerNode.reduction``) its chain runs at.
Chain layer j of n in stage a of m gets ``(a + (j + 0.5) / n) / m``: equal stage counts align
stage to stage; a single-stage network (a ViT) spreads across all of the other's stages. Pure.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

from ..graph import LayerNode

__all__ = ["stages", "progress", "stage_progress", "nearest"]


def stages(layers: Sequence[LayerNode]) -> list[int]:
    return sorted({n.reduction for n in layers})


def progress(layers: Sequence[LayerNode]) -> list[float]:
    levels = stages(layers)
    if not levels:
        return []
    members: dict[int, list[int]] = {r: [] for r in levels}
    for i, node in enumerate(layers):
        members[node.reduction].append(i)
    out = [0.0] * len(layers)
    for a, r in enumerate(levels):
        n = len(members[r])
        for j, i in enumerate(members[r]):
            out[i] = (a + (j + 0.5) / n) / len(levels)
    return out


def stage_progress(reduction: int, levels: Sequence[int]) -> float:
    """Middle of the stage nearest ``reduction`` (for off-chain layers)."""
    if not levels:
        return 0.5
    a = min(bisect_left(list(levels), reduction), len(levels) - 1)
    return (a + 0.5) / len(levels)


def nearest(value: float, candidates: Sequence[float]) -> int:
    """Index of the candidate nearest ``value``; ties go to the earlier one."""
    return min(range(len(candidates)), key=lambda i: (abs(candidates[i] - value), i))
