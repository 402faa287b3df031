"""``block-isolate`` / ``block-initscale-isolate``: a narrow source written as a sub-network, not a slice in noise.

``centre`` writes a narrower source into the middle of the target's own init. Along the *input* axis that
leaves each output channel holding source values summing two parts: the source's filter over the source's
channels, and the target's random init over every other input channel. From arm 2's CIFAR ResNet-56 (16-64
channels into timm targets of 16-1,280), the source fills 2-14% of a lifted tensor, so the random part
dominates each such channel's pre-activation and the source's features do not survive past a layer or two.
Yet the knowledge is there: the ResNet-56 itself, copied, gains +8.2 points over its scratch on arm 2's
Fashion-MNIST, where the cross-architecture transfers gain -0.3 to +2.3 (docs/quality.md, "The ceiling").

Here every output channel that holds source values reads *only* source values: after ``centre`` writes the
box, the rest of those output channels (the other input channels, and a larger kernel's outer taps) is set to
zero. The source's channels then form a sub-network of the target that computes from source features alone
(up to what the pairing itself changes), while every other output channel keeps its init and reads all
inputs, so no channel is dead and the symmetry of the init stays broken. Biases and norms are ``centre``'s.

Exploratory (2026-11-28), the lead recorded in docs/quality.md after the ceiling measurement: tried before
any run of it was seen. A variant, never registered in ``hmt`` itself: its rule is added to ``hmt_cli``'s
private rule tables on import.
"""

from __future__ import annotations

from dataclasses import replace

import torch

import hmt_cli.reshape as reshape
from hmt_cli.graph import LayerGraph
from hmt_cli.match import STRATEGIES, LayerPair, TensorOp, names
from hmt_cli.match.block import BlockStrategy
from hmt_cli.match.initscale import BlockInitScaleStrategy

__all__ = ["RULE", "BlockInitScaleIsolate", "BlockIsolate", "centre_isolate"]

RULE = "centre_isolate"


def centre_isolate(src: torch.Tensor, shape: tuple[int, ...], base: torch.Tensor | None = None,
                   diagonal: int = 0, keep_zero: int = 0, scale_permille: int = 1000) -> torch.Tensor:
    """``centre``'s result with every output channel that holds source values zero outside the source's box."""
    out = reshape.centre(src, shape, base=base, diagonal=diagonal, keep_zero=keep_zero,
                         scale_permille=scale_permille)
    region = reshape._centre_region(src, shape, diagonal, keep_zero)
    if region is None or len(shape) < 2 or region[0].stop <= region[0].start:
        return out  # the source fills the tensor (nothing to isolate), or a vector, or keep_zero wrote the init
    rows = out[region[0]]  # a view: the output channels with source values
    box = rows[(slice(None), *region[1:])].clone()
    rows.zero_()
    rows[(slice(None), *region[1:])] = box
    return out


if RULE not in reshape.RULES:
    reshape.RULES[RULE] = centre_isolate
    reshape.CHECKS[RULE] = reshape.CHECKS["centre"]
    reshape._REGIONS[RULE] = reshape._REGIONS["centre"]  # it writes source values exactly where centre does
    reshape.BASED_RULES = reshape.BASED_RULES | {RULE}


def _isolated(ops: list[TensorOp], weight: str) -> list[TensorOp]:
    """The layer's weight op through :data:`RULE`; its bias and norm keep ``centre``."""
    return [replace(op, rule=RULE) if op.tgt_key == weight and op.rule == "centre" and len(op.tgt_shape) >= 2
            else op for op in ops]


class BlockIsolate(BlockStrategy):
    name = "block-isolate"
    summary = "block, each output channel holding source values reading only the source's channels and taps"

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        return _isolated(super().ops(pair, src, tgt), pair.tgt.weight)


class BlockInitScaleIsolate(BlockInitScaleStrategy):
    name = "block-initscale-isolate"
    summary = "block-initscale, each output channel holding source values reading only the source's channels"

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        return _isolated(super().ops(pair, src, tgt), pair.tgt.weight)


for _strategy in (BlockIsolate(), BlockInitScaleIsolate()):
    if _strategy.name not in names():
        STRATEGIES.append(_strategy)
