"""``block-initscale`` (the default's plan unless the source is much narrower than the target): ``block``, with
each written weight behind a BatchNorm at least at the
target init's scale.

Why: behind a BatchNorm a weight's scale is not part of the function (in training mode the norm divides
it out) but it sets the effective learning rate, ~lr / |w|^2. A resnet18 trained with weight decay,
written into a MobileNetV3 by ``block``, lands 2.3x below timm's fan-out init there at the median and up
to 35x (``benchmarks/scale_gap.py``), so under a recipe tuned for the target those layers take up to
~1,000x larger relative steps: the transferred filters are scrambled in the first epochs and the start
trains worse than scratch. Writing them at the init's scale keeps the pattern and gives the target's own
effective learning rate.

Measured on the quality benchmark's GPU protocol (docs/quality.md, "``block-initscale`` on the
protocol"): the one strategy ahead of scratch on all six timm-to-timm targets of arm 1, +6.2 points on
average (``block`` +4.9, DPIAT +2.2), ``resnet50`` recovery 0.80, and +7.0 on seven held-out targets
(``block`` +2.2), far ahead on the MobileNet family, where ``block`` trails scratch. From arm 2's CIFAR
ResNet-56, a narrow source that fills 2-14% of each lifted tensor, its whole-tensor factors are
1.01-1.08x at the median, so it lifts little and ends below ``block`` on seven of eight rows (a little
below scratch on three); ``block`` stays the strategy for such a source. No data-free rule measured so
far tells a target's side in advance. The factor is measured over the whole written tensor, init part
included; ``block-initscale-written`` (below) measures the source's slice alone.

* Pairing and tensor rules: ``block``'s.
* For a chain layer whose output goes straight into a BatchNorm: the written weight is scaled up to the
  std of the target's own init of it when it is smaller (``init_std_up``), and its bias by the same
  factor (``layer``). In training mode, as fine-tuning runs, the result computes ``block``'s function (up
  to the norm's eps, which the larger scale makes matter less). A weight already larger than the init
  keeps its scale: scaled down it would take larger steps than the source left it to (a CIFAR
  ResNet-56's stem is 3x timm's init). Measured, the version that also scaled down is level with this
  one (arm-2 ``mobilenetv3_large_100`` on Fashion-MNIST: 66.0 against 65.8; docs/quality.md).
* The norm's running statistics stay the source's, unscaled. They describe the source's activations,
  not the target's, either way, and fine-tuning re-estimates them (momentum 0.1: ~50 steps). Scaled by
  ``c`` and ``c^2`` (up to ~1,200x on a depthwise conv) they would be a stale prior that washes out
  ``c^2`` times slower: measured on ``mobilenetv3_large_100`` (arm 1), evaluation after 10 epochs sat at
  chance on 4 of 5 seeds that way (docs/quality.md). So in eval mode, before fine-tuning, the result is
  not ``block``'s function.
* Pre-norm layers (a transformer's ``qkv`` after its LayerNorm) and layers behind a LayerNorm or
  GroupNorm keep ``block``'s tensors: there a scale is part of the function (pre-norm) or, for a ConvNeXt
  block, not measured.
"""

from __future__ import annotations

from dataclasses import replace

from ..graph import LayerGraph, LayerNode
from .base import LayerPair, TensorOp
from .block import BlockStrategy

__all__ = ["BlockInitScaleStrategy", "BlockInitScaleWrittenStrategy", "behind_batchnorm"]


def behind_batchnorm(node: LayerNode) -> bool:
    """The layer's output goes straight into a BatchNorm (running statistics: not a LayerNorm/GroupNorm)."""
    return node.norm_follows and any(k.endswith(".running_var") for k in node.norm_keys)


class BlockInitScaleStrategy(BlockStrategy):
    name = "block-initscale"
    summary = ("block, with each written weight behind a BatchNorm scaled up to the target init's std where "
               "smaller (the same function, the target's effective learning rate); signal check with fallback")

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        ops = super().ops(pair, src, tgt)
        t = pair.tgt
        if not behind_batchnorm(t):
            return ops
        scales = {t.weight: "init_std_up", t.bias: "layer"}
        return [replace(op, scale=scales[op.tgt_key]) if op.tgt_key in scales else op for op in ops]


class BlockInitScaleWrittenStrategy(BlockInitScaleStrategy):
    """``block-initscale`` with its lift measured on, and applied to, the source's values only.

    ``block`` writes a narrow source into a wider layer by centre crop/pad: the written tensor is then a
    slice of source values inside the target's own init. ``block-initscale`` measures its factor over
    the whole tensor, where the init part dominates the std, so the source slice stays far below the init's
    scale (arm 1's trained resnet18 into efficientnet_b0: 11x at the median, lifted by 1.34x) and the init
    part is pushed above it. Here the factor is the init's std over the std of the elements that hold
    source values, and only those are multiplied (``init_std_up_written``); a tensor the source fills
    whole gets ``block-initscale``'s factor.
    """

    name = "block-initscale-written"
    summary = ("block-initscale with the lift measured on, and applied to, the elements the source wrote "
               "(not the init around a narrow source's slice)")

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        return [replace(op, scale="init_std_up_written") if op.scale == "init_std_up" else op
                for op in super().ops(pair, src, tgt)]
