"""The paper's strategy (Wang et al. 2021): layer i of the target chain takes layer i of the source.

Truncates at the shorter chain; weights by bilinear kernel interpolation + cyclic channel
stacking; biases cyclically when both layers have one. Norms, off-chain layers and the head keep
the target's init.
"""

from __future__ import annotations

from ..chain import Chain
from ..graph import LayerGraph
from .base import LayerPair, Pairing, TensorOp

__all__ = ["PaperStrategy"]


class PaperStrategy:
    name = "paper"
    summary = "paper-faithful: chain layer i <- source layer i (truncated), bilinear kernels, cyclic channels"
    # Faithful to the paper: no check unless asked (--signal-check report shows it, never acts on it).
    signal_policy = "off"

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing:
        pairs = tuple(
            LayerPair(t, src.layers[i] if i < len(src.layers) else None, note="" if i < len(src.layers) else
                      "beyond the source chain")
            for i, t in enumerate(tgt.layers)
        )
        return Pairing(self.name, pairs)

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        s, t = pair.src, pair.tgt
        if s is None:
            return []
        ops = [TensorOp(t.weight, s.weight, "paper", t.shape, s.shape, t.path, s.path)]
        if t.bias and s.bias:
            ops.append(TensorOp(t.bias, s.bias, "cyclic", tgt.param_shapes[t.bias], src.param_shapes[s.bias],
                                t.path, s.path))
        return ops
