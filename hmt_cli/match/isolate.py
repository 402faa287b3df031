"""``block-initscale-isolate``: ``block-initscale``, a narrower source written as a sub-network of the target.

Why: ``centre`` (under ``block``) puts a source narrower than its target in the middle of the target's own
init. Along the *input* axis that leaves each output channel holding source values summing the source's
filter over the source's channels and the target's random init over every other input channel (and a
larger kernel's outer taps). From a much narrower source the random part dominates: arm 2's CIFAR
ResNet-56 (16-64 channels) fills 2-14% of each lifted tensor of the timm targets, and there the transfers
gained -0.3 to +2.3 points over scratch on Fashion-MNIST where the same checkpoint copied into its own
architecture gains +8.2 (docs/quality.md, "The ceiling").

* The rule: each weight of rank >= 2 that ``block-initscale`` writes by ``centre`` takes ``isolate=1``:
  the output channels holding source values are zero outside the source's box
  (:func:`~hmt_cli.reshape.centre.isolate_rows`), so they read only source channels. Every other output
  channel keeps its init and reads all inputs: no channel starts dead, the init's symmetry stays broken.
  A tensor the source fills whole (or crops) is unchanged, so from a source at least as wide as the
  target the plan writes ``block-initscale``'s tensors.
* The lift, biases, norms, running statistics and the signal check: ``block-initscale``'s. The lift's
  whole-tensor factor is measured on the result, zeros included.
* Measured (docs/quality.md, "A narrow source written as a sub-network"; protocol settings on the 2-core
  CPU, not yet the GPU protocol): from arm 2's ResNet-56 ahead of ``block-initscale`` on all five rows
  measured (efficientnet_b0 CIFAR-10 +4.2 and Fashion-MNIST +7.2, regnety_016 Fashion-MNIST +0.5, 9 seeds;
  mobilenetv3_large_100 +1.0 and +2.5, 3 seeds); from arm 1's resnet18 +8.2 on efficientnet_b0 and +1.0
  on regnety_016, but -1.9 on mobilenetv3_large_100 and -0.8 on resnet50 (3 seeds; 2 for resnet50). So
  not the default: where the source mostly fills the target's tensors the isolation costs a little.
"""

from __future__ import annotations

from dataclasses import replace

from ..chain import Chain
from ..graph import LayerGraph
from .base import LayerPair, Pairing, TensorOp
from .initscale import BlockInitScaleStrategy

__all__ = ["BlockInitScaleAutoStrategy", "BlockInitScaleIsolateStrategy", "isolated", "much_narrower"]

# ``block-initscale-auto`` isolates when the target's widest layer is more than this many times the source's.
# Why 4: arm 1's resnet18 (512 channels), where isolating cost on two of four targets, is 1/4 to 2/3 of each
# target's width, so no arm-1 plan is isolated; arm 2's CIFAR ResNet-56 (64), where it gained on every row
# measured, is 1/32 to 1/12; and between them, the ResNet-56 at 1/8 (resnet10t) and 1/5.75 (regnetx_002),
# isolating was ahead on all four rows (pre-registered rule, docs/quality.md). 1/4 itself is not isolated.
NARROW = 4


def isolated(ops: list[TensorOp], weight: str) -> list[TensorOp]:
    """``ops`` with the layer's own ``centre`` weight (rank >= 2) isolated; biases and norms as they are."""
    return [replace(op, params=(*op.params, ("isolate", 1)))
            if op.tgt_key == weight and op.rule == "centre" and len(op.tgt_shape) >= 2 else op for op in ops]


class BlockInitScaleIsolateStrategy(BlockInitScaleStrategy):
    name = "block-initscale-isolate"
    summary = ("block-initscale, each output channel holding a narrower source's values reading only the "
               "source's channels (a sub-network, not a slice in the init); signal check with fallback")

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        return isolated(super().ops(pair, src, tgt), pair.tgt.weight)


def much_narrower(src: LayerGraph, tgt: LayerGraph) -> bool:
    """The source's widest layer (``LayerGraph.widest``) is under 1/:data:`NARROW` of the target's (a CIFAR
    ResNet into an ImageNet network): a whole-network property, so one pair of networks is isolated throughout
    or not at all."""
    return 0 < src.widest * NARROW < tgt.widest


class BlockInitScaleAutoStrategy(BlockInitScaleStrategy):
    """``block-initscale-isolate`` from a source much narrower than the target, else ``block-initscale``.

    Why: isolating the source's channels gained from arm 2's narrow ResNet-56 on every row measured and
    cost where arm 1's resnet18 fills most of a target's tensors (mobilenetv3_large_100 -1.9, resnet50
    -0.8). The switch is the width ratio, :func:`much_narrower`, so every pair on either side of it gets
    one of two measured plans op for op; the report's summary says which.
    """

    name = "block-initscale-auto"
    summary = ("block-initscale-isolate when the source's widest layer is under 1/4 of the target's, else "
               "block-initscale; signal check with fallback")

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing:
        pairing = super().pair(src, tgt, src_graph, tgt_graph)
        ws, wt = src_graph.widest, tgt_graph.widest
        choice = "block-initscale-isolate" if much_narrower(src_graph, tgt_graph) else "block-initscale"
        return replace(pairing, note=f"{choice} (the source's widest layer has {ws} channels, the target's {wt}; "
                                     f"isolated under 1/{NARROW})")

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        ops = super().ops(pair, src, tgt)
        return isolated(ops, pair.tgt.weight) if much_narrower(src, tgt) else ops
