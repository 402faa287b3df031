"""``block``: ``centre``'s tensor rules on a pairing that aligns whole blocks, as DPIAT does.

Why: DPIAT beats ``centre`` on exactly the two arm-1 targets built of bottleneck-like blocks whose layers
``centre`` pairs across block boundaries (``resnet50``, ``efficientnet_b0``; docs/quality.md). Marking every
source conv and reading back where DPIAT put it shows a block-to-block map: a target block takes one source
block, and its layers take that block's layers in order (resnet18 -> resnet50: ``conv1 <- conv1``,
``conv2 <- conv2``). ``centre`` instead spreads all chain layers by stage-aware relative depth, so a target
block's three layers take e.g. ``layer1.0.conv2``, ``layer1.1.conv1``, ``layer1.1.conv2``, and a norm that
closes a target block can take the gain of a source norm that does not close one (an undamped branch).

* *Units*: a chain is cut into residual blocks (:func:`~benchmarks.variants.surplus.residual_blocks`: a run
  of bypassed layers ended by the one whose output joins an add) and, between them, runs of cut layers
  split where the module's block prefix changes (``blocks.1.0`` | ``blocks.1.1``: a non-skip inverted
  residual is a cut run of three layers, one unit).
* *Unit pairing*: each target unit takes the source unit nearest in stage-aware relative depth (the mean
  of its layers' :func:`~hmt_cli.match.progress.progress`), so stages still align; the input layer
  anchor is ``centre``'s.
* *Within a unit pair*: when both units close a residual, the target's closing layer takes the source's
  (the source's trained branch scale goes where a branch closes) and every other target layer takes the
  source unit's layer at the same relative position among its other layers; a cut run spreads over all
  of the source unit's layers. A same-kernel neighbour is preferred (``stage``'s pick).
* Tensors, norms, the damping-gain rule, off-chain layers and the signal check: ``centre``'s.

Measured on CPU only so far (docs/quality.md, "Variants"); not part of ``hmt``.
"""

from __future__ import annotations

from hmt_cli.chain import Chain
from hmt_cli.graph import LayerGraph, LayerNode
from hmt_cli.match import STRATEGIES, LayerPair, Pairing, names
from hmt_cli.match.centre import CentreStrategy
from hmt_cli.match.progress import nearest, progress
from hmt_cli.match.stage import _pick, input_anchor_pair

from .surplus import residual_blocks

__all__ = ["block_prefix", "units", "BlockStrategy"]


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
            last = None  # a closing layer ends its unit even if the next block has the same number
    return out


class BlockStrategy(CentreStrategy):
    name = "block"
    summary = "centre's tensor rules; target blocks take whole source blocks, closing layer from closing layer"

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing:
        if not src.layers:
            return super().pair(src, tgt, src_graph, tgt_graph)
        anchor = input_anchor_pair(src, tgt, src_graph, tgt_graph) if len(src.layers) > 1 else None
        first = 1 if anchor else 0
        pairs: list[LayerPair] = [anchor] if anchor else []
        s_layers, t_layers = list(src.layers)[first:], list(tgt.layers)[first:]
        s_pos, t_pos = progress(src.layers)[first:], progress(tgt.layers)[first:]
        s_units, t_units = units(s_layers, src, src_graph), units(t_layers, tgt, tgt_graph)
        s_mid = [sum(s_pos[i] for i in u) / len(u) for u in s_units]
        for tu in t_units:
            su = s_units[nearest(sum(t_pos[i] for i in tu) / len(tu), s_mid)]
            pairs += self._within([t_layers[i] for i in tu], [s_layers[i] for i in su], src_graph, tgt_graph)
        pairs += self._off_chain(src, tgt, src_graph, tgt_graph)
        return Pairing(self.name, tuple(pairs), self._embeddings(src_graph, tgt_graph))

    @staticmethod
    def _within(tu: list[LayerNode], su: list[LayerNode], src: LayerGraph, tgt: LayerGraph) -> list[LayerPair]:
        closing = [s for s in su if s.index in src.closes_residual]
        t_closing = [t for t in tu if t.index in tgt.closes_residual]
        # Only a block that closes a residual takes the source's closing layer, on that closing layer; a
        # cut run (a non-skip block) spreads over all the source block's layers.
        role = bool(closing and t_closing)
        inner = [s for s in su if s not in closing] if role else su
        rest = [t for t in tu if t not in t_closing] if role else tu
        inner = inner or su
        where = [(j + 0.5) / len(inner) for j in range(len(inner))]
        out = []
        for t in tu:
            if role and t in t_closing:
                out.append(LayerPair(t, closing[-1], note="block: closing layer"))
            else:
                p = (rest.index(t) + 0.5) / len(rest)
                out.append(LayerPair(t, inner[_pick(p, t, inner, where)]))
        return out

if BlockStrategy.name not in names():
    STRATEGIES.append(BlockStrategy())
