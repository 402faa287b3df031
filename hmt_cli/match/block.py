"""``block``: ``centre``'s tensor rules on a pairing that maps whole blocks to whole blocks.

The default before ``block-initscale`` (this, with the written weights at the target init's scale).

Why: DPIAT (the published peer) maps a source block onto a target block, layer after layer (marking every
source weight and reading back where DPIAT put it: resnet18 -> resnet50 gives ``conv1 <- conv1``,
``conv2 <- conv2``; ``benchmarks/peers/dpiat_map.py``). ``centre`` spreads all chain layers by stage-aware
relative depth instead, so one target bottleneck takes layers of two source blocks and a norm that closes a
target block can take the gain of a source norm that closes none (an undamped branch). On the quality
protocol ``block`` gained +4.9 points over scratch on average over arm 1 against ``centre``'s +2.7 in the
same run, and recovered 0.82 of ``resnet50``'s re-pretraining gain (``centre`` 0.54; docs/quality.md).

* *Units*: a chain is cut into residual blocks (:func:`residual_blocks`: a run of bypassed layers ended by
  the one whose output joins an add) and, between them, runs of cut layers split where timm's block prefix
  changes (:func:`block_prefix`: a non-skip inverted residual ``blocks.1.0`` is one unit of three layers).
* *Unit pairing*: each target unit takes the source unit nearest in stage-aware relative depth (the mean
  of its layers' :func:`~.progress.progress`), so stages still align and every target unit is written;
  the input-layer anchor is ``stage``'s.
* *Within a unit pair*: when both units close a residual, the target's closing layer takes the source's
  (the trained branch scale goes where a branch closes) and every other target layer takes the source
  unit's inner layer at the same relative position; a cut run spreads over all of the source unit's
  layers. A same-kernel neighbour is preferred (``stage``'s :func:`~.stage.pick_layer`).
* Tensors, norms, the damping-gain rule, off-chain layers and the signal check: ``centre``'s.
"""

from __future__ import annotations

from ..chain import Chain
from ..graph import LayerGraph, LayerNode
from .base import LayerPair, Pairing
from .centre import CentreStrategy
from .progress import nearest, progress
from .stage import input_anchor_pair, pick_layer

__all__ = ["CLOSING_NOTE", "BlockStrategy", "block_prefix", "residual_blocks", "units"]

# The note on a pair whose target layer closes a residual branch and takes the source's closing layer: the
# report prints it, and what reads a plan (the step variants, the pairing figure) selects those pairs by it.
CLOSING_NOTE = "closing layer"


def residual_blocks(chain: Chain, graph: LayerGraph) -> dict[int, int]:
    """Chain layer index -> residual block number (in chain order); layers on no residual branch are absent."""
    out: dict[int, int] = {}
    block, open_block = 0, False
    for node in chain.layers:
        if node.index not in graph.bypassed:  # a cut of the graph: no block runs through it
            if open_block:
                block += 1
            open_block = False
            continue
        out[node.index] = block
        open_block = True
        if node.index in graph.closes_residual:
            block += 1
            open_block = False
    return out


def block_prefix(path: str) -> str:
    """The module path up to its last numeric component (``blocks.1.0.conv_pw`` -> ``blocks.1.0``), else the
    parent module: what timm names one block."""
    parts = path.split(".")
    digits = [i for i, p in enumerate(parts) if p.isdigit()]
    return ".".join(parts[: digits[-1] + 1]) if digits else ".".join(parts[:-1])


def units(layers: list[LayerNode], chain: Chain, graph: LayerGraph) -> list[list[int]]:
    """Positions in ``layers`` (a contiguous part of ``chain``) grouped into blocks, in order."""
    block = residual_blocks(chain, graph)
    out: list[list[int]] = []
    last: tuple[str, object] | None = None
    for i, node in enumerate(layers):
        key = ("residual", block[node.index]) if node.index in block else ("cut", block_prefix(node.path))
        if key != last:
            out.append([])
        out[-1].append(i)
        last = key
        if node.index in graph.closes_residual:
            last = None  # a closing layer ends its unit even if the next block has the same prefix
    return out


def _mid(unit: list[int], where: list[float]) -> float:
    return sum(where[i] for i in unit) / len(unit)


class BlockStrategy(CentreStrategy):
    name = "block"
    summary = ("centre's tensor rules; each target block takes the nearest whole source block (stage-aware), "
               "closing layer from closing layer; every target layer written; signal check with fallback")

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing:
        if not src.layers:
            return super().pair(src, tgt, src_graph, tgt_graph)
        # With a one-layer source that layer is all there is: it goes everywhere, the input layer too.
        anchor = input_anchor_pair(src, tgt, src_graph, tgt_graph) if len(src.layers) > 1 else None
        first = 1 if anchor else 0
        pairs: list[LayerPair] = [anchor] if anchor else []
        s_layers, t_layers = list(src.layers)[first:], list(tgt.layers)[first:]
        s_pos, t_pos = progress(src.layers)[first:], progress(tgt.layers)[first:]
        s_units, t_units = units(s_layers, src, src_graph), units(t_layers, tgt, tgt_graph)
        s_mid = [_mid(u, s_pos) for u in s_units]
        for tu in t_units:
            su = s_units[nearest(_mid(tu, t_pos), s_mid)]
            pairs += _within([t_layers[i] for i in tu], [s_layers[i] for i in su], src_graph, tgt_graph)
        pairs += self._off_chain(src, tgt, src_graph, tgt_graph)
        return Pairing(self.name, tuple(pairs), self._embeddings(src_graph, tgt_graph))


def _within(tu: list[LayerNode], su: list[LayerNode], src: LayerGraph, tgt: LayerGraph) -> list[LayerPair]:
    """Pair the layers of one target unit with those of its source unit."""
    closing = [s for s in su if s.index in src.closes_residual]
    t_closing = [t for t in tu if t.index in tgt.closes_residual]
    # Only a block that closes a residual takes the source's closing layer, on its own closing layer; a cut
    # run (a block without skip) spreads over all the source block's layers.
    role = bool(closing and t_closing)
    inner = ([s for s in su if s not in closing] if role else su) or su
    rest = [t for t in tu if t not in t_closing] if role else tu
    where = [(j + 0.5) / len(inner) for j in range(len(inner))]
    out = []
    for t in tu:
        if role and t in t_closing:
            out.append(LayerPair(t, closing[-1], note=CLOSING_NOTE))
        else:
            p = (rest.index(t) + 0.5) / len(rest)
            out.append(LayerPair(t, inner[pick_layer(p, t, inner, where)]))
    return out
