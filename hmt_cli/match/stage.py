"""``stage``: hmt's own strategy. Every target layer gets a source layer, at the same stage-aware depth.

* Pairing: each target chain layer takes the source chain layer nearest in stage-aware relative
  depth (:mod:`.progress`), so stages align and no target layer is left at random init; among
  equally near candidates, one with the same kernel size wins. Off-chain shortcuts and gates take
  the source's off-chain layer of the same role at the nearest depth where one exists.
* Tensors: weights through each side's group structure (:mod:`..reshape.grouped`: depthwise from
  per-channel kernels, not from arbitrary slices), kernels by bilinear interpolation. Norms, layer
  biases and running statistics keep the target's init (see ``ops`` for why).
* Signal health by construction: every transferred weight is rescaled to the standard deviation
  of the target's own init of that tensor, so each layer starts at the scale its architecture
  was designed to train from; the source contributes the *pattern* of the filters. A data-free
  forward pass then checks every chain layer and falls back to init where the signal breaks.
"""

from __future__ import annotations

from ..chain import Chain
from ..graph import LayerGraph, LayerNode
from .base import LayerPair, Pairing, TensorOp
from .progress import nearest, progress, stage_progress, stages

__all__ = ["INPUT_NOTE", "StageStrategy", "input_anchor_pair", "pick_layer"]

# The note on the pair (target input layer <- source input layer): the report prints it, and plan readers
# (benchmarks/variants/ablate.py) select that pair by it.
INPUT_NOTE = "input layer"

_OFF_CHAIN_ROLES = ("shortcut", "gate")
_TOKEN_RULES = {"pos_embed": "pos_embed", "cls_token": "tokens", "reg_token": "tokens", "dist_token": "tokens"}


def _kernel(node: LayerNode) -> tuple[int, ...]:
    return node.shape[2:] if len(node.shape) > 2 else (1,)


def pick_layer(value: float, tgt: LayerNode, cands: list[LayerNode], where: list[float]) -> int:
    """Index of the candidate (at relative depths ``where``) for a target layer at depth ``value``."""
    best = nearest(value, where)
    # A same-kernel neighbour at almost the same depth carries more usable structure.
    window = 0.5 / max(len(cands), 1)
    same = [i for i in range(len(cands)) if _kernel(cands[i]) == _kernel(tgt) and abs(where[i] - value) <= window]
    if _kernel(cands[best]) != _kernel(tgt) and same:
        return min(same, key=lambda i: (abs(where[i] - value), i))
    return best


def _reads_input(node: LayerNode, graph: LayerGraph) -> bool:
    return not any(e.dst == node.index for e in graph.edges)


def _input_anchor(src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> bool:
    """Both chains start at a layer that reads the model input, with as many input channels (RGB).

    Relative depth alone can hand a target's stem a mid-network conv when the two networks split
    their resolutions differently (a CIFAR ResNet's first stage runs at full resolution, a timm
    target's at 1/2): its middle 3 input channels are then read as RGB filters, which they are not.
    """
    s, t = src.layers[0], tgt.layers[0]
    return (len(s.shape) >= 2 and len(t.shape) >= 2 and s.shape[1] * s.groups == t.shape[1] * t.groups
            and _reads_input(s, src_graph) and _reads_input(t, tgt_graph))


def input_anchor_pair(src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> LayerPair | None:
    """The pair (target input layer <- source input layer) when :func:`_input_anchor` holds. The caller keeps
    the source's input layer from every other target layer when the source has others to give: its
    filters are the only ones that read pixels, and its few input channels are no use elsewhere."""
    if _input_anchor(src, tgt, src_graph, tgt_graph):
        return LayerPair(tgt.layers[0], src.layers[0], note=INPUT_NOTE)
    return None


class StageStrategy:
    name = "stage"
    summary = ("every target layer <- source layer at the same stage-aware depth; group-aware channels; "
               "norms at init; init-scale rescaling; signal check with per-layer fallback")
    signal_policy = "fallback"

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing:
        pairs: list[LayerPair] = []
        if src.layers:
            anchor = input_anchor_pair(src, tgt, src_graph, tgt_graph)
            first = 1 if anchor else 0
            skip = first if len(src.layers) > 1 else 0
            cands, where = list(src.layers)[skip:], progress(src.layers)[skip:]
            pairs = [anchor] if anchor else []
            for t, p in zip(tgt.layers[first:], progress(tgt.layers)[first:], strict=True):
                pairs.append(LayerPair(t, cands[pick_layer(p, t, cands, where)], score=1.0))
        else:
            pairs = [LayerPair(t, None, note="empty source chain") for t in tgt.layers]
        pairs += self._off_chain(src, tgt, src_graph, tgt_graph)
        return Pairing(self.name, tuple(pairs), self._embeddings(src_graph, tgt_graph))

    @staticmethod
    def _embeddings(src: LayerGraph, tgt: LayerGraph) -> tuple[TensorOp, ...]:
        """Position embeddings and class/register tokens, matched by name (``pos_embed``, ...)."""
        ops = []
        for key, tshape in tgt.param_shapes.items():
            leaf = key.rsplit(".", 1)[-1]
            rule = _TOKEN_RULES.get(leaf)
            if rule is None or key not in src.param_shapes or len(tshape) != 3:
                continue
            owner = key.rsplit(".", 1)[0] if "." in key else key
            ops.append(TensorOp(key, key, rule, tshape, src.param_shapes[key], owner, owner, scale="init_std"))
        return tuple(ops)

    def _off_chain(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> list[LayerPair]:
        src_levels, tgt_levels = stages(src.layers), stages(tgt.layers)
        out: list[LayerPair] = []
        for role in _OFF_CHAIN_ROLES:
            cands = [src_graph.layer(o.path) for o in src.off_chain if o.reason == role]
            where = [stage_progress(n.reduction, src_levels) for n in cands]
            for o in tgt.off_chain:
                if o.reason != role:
                    continue
                t = tgt_graph.layer(o.path)
                if not cands:
                    out.append(LayerPair(t, None, note=f"source has no {role}", role=role))
                    continue
                s = cands[pick_layer(stage_progress(t.reduction, tgt_levels), t, cands, where)]
                out.append(LayerPair(t, s, role=role))
        return out

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        s, t = pair.src, pair.tgt
        if s is None:
            return []
        params = (("src_groups", s.groups), ("tgt_groups", t.groups))
        # Weights only. Norm gains/biases keep the target's init: copying a ResNet's trained gains
        # (small where timm zero-inits the last norm of a residual block) into other positions
        # froze test_efficientnet at chance in our measurement (docs/transfer.md); at init every
        # channel carries signal and the rescaled weights set the pattern.
        return [TensorOp(t.weight, s.weight, "grouped", t.shape, s.shape, t.path, s.path, params, "init_std")]
