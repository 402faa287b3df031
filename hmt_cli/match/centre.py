"""``centre``: stage-aware full coverage (as ``stage``) with DPIAT's centre crop/pad tensor rule.

* Pairing: exactly :class:`~.stage.StageStrategy`'s: every target chain layer takes the source
  layer at the nearest stage-aware relative depth; shortcuts and gates from their source roles.
* Tensors: the weight, the bias and, when both norms are of one kind (the same tensor names: BatchNorm
  to BatchNorm), the attached norm's tensors (affine and running statistics; not the gain of a
  residual-closing source norm onto a norm every signal passes, see ``ops``) are written by
  :mod:`..reshape.centre`: the centred overlap of the source goes
  into the middle of the target's own init, the rest keeps that init. Source values keep their
  trained scale and nothing is duplicated. Because the overlap of two given widths is always the
  same slice, every layer that reads or writes a residual stream of one width maps its channels
  the same way, and a layer's norm uses its layer's channel map.
* Signal health: the data-free check runs on the result and falls back to the target's init per
  layer where the signal collapses, explodes or turns non-finite.
"""

from __future__ import annotations

from ..graph import LayerGraph, LayerNode
from .base import LayerPair, TensorOp
from .stage import StageStrategy

__all__ = ["CentreStrategy"]

_SKIP = ("num_batches_tracked",)


def _by_leaf(keys: tuple[str, ...]) -> dict[str, str]:
    return {k.rsplit(".", 1)[-1]: k for k in keys if not k.endswith(_SKIP)}


class CentreStrategy(StageStrategy):
    name = "centre"
    summary = ("stage-aware pairing of every target layer; weights, biases and norms by centre crop/pad into "
               "the target's init (source scale kept, no duplicated channels); signal check with fallback")
    signal_policy = "fallback"

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        s, t = pair.src, pair.tgt
        if s is None:
            return []
        src_norm, tgt_norm = _by_leaf(s.norm_keys), _by_leaf(t.norm_keys)
        with_norm = set(src_norm) == set(tgt_norm)  # norms of one kind only: BatchNorm to BatchNorm
        # A depthwise target from a full conv takes the source's per-channel (diagonal) kernels.
        depthwise = t.kind == "depthwise" and s.groups == 1 and len(s.shape) == len(t.shape) >= 3
        ops = [self._op(t.weight, s.weight, t, s, tgt, src, (("diagonal", 1),) if depthwise else ())]
        if t.bias and s.bias:
            ops.append(self._op(t.bias, s.bias, t, s, tgt, src))
        if not with_norm:
            return ops
        # A gain trained to damp a residual branch (a ResNet's block-final norm: ~0.02-0.07) must not
        # land on a layer every signal passes (a cut of the graph, e.g. an inverted-residual block
        # without skip): there it damps the gradient to everything before it ~50x. Its gain stays at init.
        damping = s.index in src.closes_residual and t.index not in tgt.bypassed
        for leaf, key in tgt_norm.items():
            if leaf == "weight" and damping:
                continue
            if leaf in src_norm and len(tgt.param_shapes[key]) == len(src.param_shapes[src_norm[leaf]]):
                params = (("keep_zero", 1),) if leaf == "weight" else ()  # an untrained zero-init gain
                ops.append(self._op(key, src_norm[leaf], t, s, tgt, src, params))
        return ops

    @staticmethod
    def _op(tgt_key: str, src_key: str, t: LayerNode, s: LayerNode, tgt: LayerGraph, src: LayerGraph,
            params: tuple[tuple[str, int], ...] = ()) -> TensorOp:
        return TensorOp(tgt_key, src_key, "centre", tuple(tgt.param_shapes[tgt_key]),
                        tuple(src.param_shapes[src_key]), t.path, s.path, params)
