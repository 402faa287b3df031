"""Surplus residual blocks: what a deeper target does with the blocks relative depth only repeats.

``centre`` pairs every target layer by stage-aware relative depth, so resnet18's 8 blocks each land on two
or three of resnet50's 16, and all 16 start active. DPIAT, which beats ``centre`` on that pair in the
protocol, leaves the block-closing ``conv3`` + ``bn3`` of 9 of the 16 blocks at init (docs/quality.md):
timm zero-inits ``bn3``, so those blocks start as the identity, with transferred weights inside.

A *residual block* is a run of chain layers each bypassed by a shortcut, ended by the layer whose output
joins the stream through an add. Walking the target's blocks in order, a block whose layers all pair
with source blocks that earlier target blocks already took is *surplus*.

* ``surplus-identity``: a surplus block keeps the target's init entirely (measured on the protocol,
  2026-11-27: not better than ``centre``; docs/quality.md, "Variants").
* ``surplus-closing``: a surplus block keeps only its closing layer (and that layer's norm) at init; its
  inner layers are written as ``centre`` writes them. DPIAT's mix; measured on the protocol beside
  ``block`` (2026-11-27): arm-1 mean gain +3.6 against ``block``'s +4.9, ``resnet50`` +10.1 against +19.1.

A target with no more residual blocks than the source gets exactly ``centre``'s plan from both.
"""

from __future__ import annotations

from dataclasses import replace

from hmt_cli.chain import Chain
from hmt_cli.graph import LayerGraph
from hmt_cli.match import STRATEGIES, LayerPair, Pairing, names
from hmt_cli.match.block import residual_blocks
from hmt_cli.match.centre import CentreStrategy

__all__ = ["surplus_blocks", "SurplusIdentity", "SurplusClosing"]


def surplus_blocks(pairing: Pairing, src: Chain, tgt: Chain, src_graph: LayerGraph,
                   tgt_graph: LayerGraph) -> tuple[dict[int, int], set[int]]:
    """(target layer -> block, the surplus target blocks) of a pairing."""
    src_block, tgt_block = residual_blocks(src, src_graph), residual_blocks(tgt, tgt_graph)
    used_by: dict[int, set[int]] = {}
    for p in pairing.pairs:
        b = tgt_block.get(p.tgt.index)
        if p.role == "chain" and b is not None and p.src is not None and p.src.index in src_block:
            used_by.setdefault(b, set()).add(src_block[p.src.index])
    taken: set[int] = set()
    surplus: set[int] = set()
    for b in sorted(used_by):
        if used_by[b] <= taken:
            surplus.add(b)
        taken |= used_by[b]
    return tgt_block, surplus


class SurplusIdentity(CentreStrategy):
    name = "surplus-identity"
    summary = "centre, but a deeper target's surplus residual blocks keep the target's init"
    closing_only = False

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing:
        pairing = super().pair(src, tgt, src_graph, tgt_graph)
        tgt_block, surplus = surplus_blocks(pairing, src, tgt, src_graph, tgt_graph)

        def kept_at_init(p: LayerPair) -> bool:
            if p.role != "chain" or tgt_block.get(p.tgt.index) not in surplus:
                return False
            return not self.closing_only or p.tgt.index in tgt_graph.closes_residual

        pairs = tuple(LayerPair(p.tgt, None, note="surplus residual block: target's init", role=p.role)
                      if kept_at_init(p) else p for p in pairing.pairs)
        return replace(pairing, strategy=self.name, pairs=pairs)


class SurplusClosing(SurplusIdentity):
    name = "surplus-closing"
    summary = "centre, but the closing layer of a deeper target's surplus residual blocks keeps its init"
    closing_only = True


for _strategy in (SurplusIdentity(), SurplusClosing()):
    if _strategy.name not in names():  # imported twice (a shard re-imports): register once
        STRATEGIES.append(_strategy)
