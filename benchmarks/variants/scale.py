"""``centre-initscale``: ``centre``, with every written weight of a norm-followed layer rescaled to the std of
the target's own init of that tensor.

Behind a BatchNorm a conv's weight scale does not change the forward pass (in training mode the norm
divides it out) but sets the effective learning rate, ~lr / |w|^2. A trained CIFAR ResNet's 3x3 kernels,
their centre taps in 1x1 convs and their diagonal kernels in depthwise convs are several times smaller
than timm's fan-out init of the target, so under the protocol's lr those channels take much larger
relative steps than the architecture was tuned for. Measured on CPU only so far (docs/quality.md).
"""

from __future__ import annotations

from dataclasses import replace

from hmt_cli.graph import LayerGraph
from hmt_cli.match import STRATEGIES, LayerPair, TensorOp, names
from hmt_cli.match.centre import CentreStrategy

__all__ = ["CentreInitScale"]


class CentreInitScale(CentreStrategy):
    name = "centre-initscale"
    summary = "centre, with the written weights of norm-followed layers rescaled to the target init's std"

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        ops = super().ops(pair, src, tgt)
        if not pair.tgt.norm_keys:
            return ops
        return [replace(op, scale="init_std") if op.tgt_key == pair.tgt.weight else op for op in ops]


if CentreInitScale.name not in names():
    STRATEGIES.append(CentreInitScale())
