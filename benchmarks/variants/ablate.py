"""Ablations of ``block`` to find which written layers cost ``mobilenetv3_large_100`` its arm-1 points.

On arm 1 every transfer (``block``, ``centre``, DPIAT) ends below scratch on ``mobilenetv3_large_100`` in two
of three source runs, and the transferred starts end fine-tuning with a *higher* training loss than scratch
(1.2-1.5 against 1.0-1.3): they are harder to optimise, not just worse features. Each variant here changes
one suspect and keeps the rest of ``block``'s plan:

* ``block-nostem``: the input layer (a 7x7 stride-2 source conv centre-cropped into a 3x3 stem) and its
  norm keep the target's init. On ``convnext_atto`` the stem alone cost -2.2 points (docs/quality.md).
* ``block-stemresize``: the stem kernel is resized bilinearly (the paper's rule) instead of centre-cropped,
  its filters and its norm's channels taken cyclically, so a filter keeps its own norm entries.
* ``block-nohead``: the last chain layer keeps its init. In MobileNetV3 that is ``conv_head``, a 1x1 conv
  after the global pool with no norm behind it, which takes a mid-block source conv at the source's scale.
* ``block-balanced``: where a norm gain is written only in part (a wider target takes the source's centre
  channels), the part kept from the target's init (gain 1) is scaled to the mean |gain| of the written part
  (a trained ResNet's 0.3-0.5), so the untrained channels do not start 2-3x louder than the transferred
  ones and drown them. A zero-init gain (timm's residual-closing norms) stays zero.

``block-stemresize`` was not run: ``block-nostem`` showed that the stem's transfer helps. The fifth suspect,
the weights' scale behind a BatchNorm (the effective learning rate), was the one that mattered; it became
the ``block-initscale`` strategy (``hmt_cli/match/initscale.py``). Results: docs/quality.md.
"""

from __future__ import annotations

from dataclasses import replace

import torch

import hmt_cli.reshape
from hmt_cli.chain import Chain
from hmt_cli.graph import LayerGraph
from hmt_cli.match import STRATEGIES, LayerPair, Pairing, TensorOp, names
from hmt_cli.match.block import BlockStrategy
from hmt_cli.match.stage import INPUT_NOTE
from hmt_cli.reshape import CHECKS, RULES, centre, check_centre
from hmt_cli.reshape.centre import centre_slices

__all__ = ["BlockBalanced", "BlockNoHead", "BlockNoStem", "BlockStemResize"]


def centre_balanced(src: torch.Tensor, shape: tuple[int, ...], base: torch.Tensor | None = None,
                    **params: int) -> torch.Tensor:
    """``centre``, then the kept part of a 1-D gain scaled to the written part's mean magnitude."""
    out = centre(src, shape, base=base, **params)
    if out.dim() != 1 or src.shape[0] >= shape[0]:
        return out
    written = torch.zeros(shape[0], dtype=torch.bool, device=out.device)
    written[centre_slices(src.shape[0], shape[0])[1]] = True
    kept = out[~written].abs().mean()
    if kept > 0:
        out[~written] *= out[written].abs().mean() / kept
    return out


# Experimental rule, registered for this benchmark process only (the product's registries are plain dicts).
RULES.setdefault("centre_balanced", centre_balanced)
CHECKS.setdefault("centre_balanced", check_centre)
hmt_cli.reshape.BASED_RULES = hmt_cli.reshape.BASED_RULES | {"centre_balanced"}  # read by apply_rule at call time


def _without(pairing: Pairing, path: str) -> Pairing:
    """``pairing`` with target layer ``path`` left at its init."""
    pairs = tuple(LayerPair(p.tgt, None, note="ablated", role=p.role) if p.tgt.path == path else p
                  for p in pairing.pairs)
    return replace(pairing, pairs=pairs)


class BlockNoStem(BlockStrategy):
    name = "block-nostem"
    summary = "block, the input layer and its norm at the target's init"

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing:
        return _without(super().pair(src, tgt, src_graph, tgt_graph), tgt.layers[0].path)


class BlockStemResize(BlockStrategy):
    name = "block-stemresize"
    summary = "block, the input layer's kernel resized bilinearly and its channels (and norm) taken cyclically"

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        ops = super().ops(pair, src, tgt)
        if pair.note != INPUT_NOTE:
            return ops
        return [replace(op, rule="paper" if op.tgt_key == pair.tgt.weight else "cyclic", params=()) for op in ops]


class BlockNoHead(BlockStrategy):
    name = "block-nohead"
    summary = "block, the last chain layer at the target's init"

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing:
        return _without(super().pair(src, tgt, src_graph, tgt_graph), tgt.layers[-1].path)


class BlockBalanced(BlockStrategy):
    name = "block-balanced"
    summary = "block, the kept-init part of a partly written norm gain scaled to the written part's level"

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        # Chain layers only: a shortcut's norm sets the residual stream's scale, which the branches were
        # trained against; resnet18 -> resnet50 keeps block's plan exactly this way (its chain gains are
        # either fully written or timm's zero-init).
        gains = {k for k in pair.tgt.norm_keys if k.endswith(".weight")} if pair.role == "chain" else set()
        return [replace(op, rule="centre_balanced") if op.tgt_key in gains else op
                for op in super().ops(pair, src, tgt)]


for _strategy in (BlockNoStem(), BlockStemResize(), BlockNoHead(), BlockBalanced()):
    if _strategy.name not in names():
        STRATEGIES.append(_strategy)
