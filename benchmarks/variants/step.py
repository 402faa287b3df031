"""``block-step`` / ``block-step-sqrt``: ``block``, with a shallower target's residual branches scaled up.

A residual stage is a sequence of steps ``x <- x + g * f(x)``; a trained ResNet's closing-norm gains ``g``
are small (0.03-0.15) because many blocks add up. ``block`` gives a target with fewer blocks per stage than
the source (resnet18's two into ``resnet10t``'s one; a CIFAR ResNet-56's nine) one source block per
target block, so the stage moves the stream by a fraction of what the source's stage did: the one clear
loss of ``block`` against ``centre`` on the CPU profile (``resnet10t``, docs/quality.md). Read as the ODE
view of ResNets (fewer, larger steps cover the same interval), the branch that stands for ``S / T`` source
blocks should be ``S / T`` times larger (``block-step``), or ``sqrt(S / T)`` if the skipped branches add
like independent noise (``block-step-sqrt``). Here ``S`` and ``T`` are the residual blocks of the source
block's stage and of the target block's stage (stages by output resolution); the closing layer's norm gain
and bias (or, without a norm, its weight and bias) are multiplied by the factor. Only ``S > T`` is scaled:
a deeper target keeps ``block``'s plan exactly.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

from hmt_cli.chain import Chain
from hmt_cli.graph import LayerGraph, LayerNode
from hmt_cli.match import STRATEGIES, LayerPair, Pairing, TensorOp, names
from hmt_cli.match.block import CLOSING_NOTE, BlockStrategy, residual_blocks

__all__ = ["BlockStep", "BlockStepSqrt", "blocks_per_stage"]


def blocks_per_stage(chain: Chain, graph: LayerGraph) -> dict[int, int]:
    """Chain layer index -> number of residual blocks in the stage (output resolution) of its block."""
    block = residual_blocks(chain, graph)
    stage_of = {b: n.reduction for n in chain.layers if (b := block.get(n.index)) is not None}
    count = Counter(stage_of.values())
    return {i: count[stage_of[b]] for i, b in block.items()}


class BlockStep(BlockStrategy):
    name = "block-step"
    summary = "block, a shallower target's closing gains scaled by source/target blocks per stage"

    def __init__(self) -> None:
        self._factor: dict[str, float] = {}  # target layer path -> factor, filled by pair() for ops()

    def factor(self, source_blocks: int, target_blocks: int) -> float:
        return source_blocks / target_blocks

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing:
        pairing = super().pair(src, tgt, src_graph, tgt_graph)
        s_count, t_count = blocks_per_stage(src, src_graph), blocks_per_stage(tgt, tgt_graph)
        self._factor = {}
        for p in pairing.pairs:
            if p.note == CLOSING_NOTE and p.src is not None:
                s, t = s_count.get(p.src.index, 1), t_count.get(p.tgt.index, 1)
                if s > t:
                    self._factor[p.tgt.path] = self.factor(s, t)
        return replace(pairing, strategy=self.name)

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        ops = super().ops(pair, src, tgt)
        factor = self._factor.get(pair.tgt.path)
        if factor is None:
            return ops
        scaled = _branch_output_keys(pair.tgt)
        permille = (("scale_permille", round(1000 * factor)),)
        return [replace(op, params=op.params + permille) if op.tgt_key in scaled and op.rule == "centre" else op
                for op in ops]


def _branch_output_keys(node: LayerNode) -> set[str]:
    """What sets the scale of the branch's output: the norm's gain and bias, else the layer's weight and bias."""
    if node.norm:
        return {f"{node.norm}.weight", f"{node.norm}.bias"}
    return {node.weight} | ({node.bias} if node.bias else set())


class BlockStepSqrt(BlockStep):
    name = "block-step-sqrt"
    summary = "block, a shallower target's closing gains scaled by sqrt(source/target blocks per stage)"

    def factor(self, source_blocks: int, target_blocks: int) -> float:
        return math.sqrt(source_blocks / target_blocks)


for _strategy in (BlockStep(), BlockStepSqrt()):
    if _strategy.name not in names():  # imported twice (a shard re-imports): register once
        STRATEGIES.append(_strategy)
