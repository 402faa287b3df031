"""``LayerGraph`` -> :class:`Chain`: the longest path of weight layers, and why the rest is off it.

Pure (no torch). Definition (docs/chain.md has pictures):

* Candidates are all weight layers except the classifier head.
* The length of a path is its number of weight layers; only ungated edges count, so a
  squeeze-excite branch is a dead end however long it is, and a residual shortcut loses because
  the main branch it bypasses is longer.
* Ties: among equally long predecessors the one executed first wins; among equally long
  chain ends the one executed last wins (the layer nearest the output).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from math import prod

from .graph import LayerGraph, LayerNode

__all__ = ["Chain", "OffChain", "find_chain", "account"]

OFF_CHAIN_REASONS = ("head", "gate", "shortcut", "branch", "dead-end", "unused")


@dataclass(frozen=True)
class OffChain:
    path: str
    reason: str
    numel: int


@dataclass(frozen=True)
class Chain:
    model: str
    extractor: str
    layers: tuple[LayerNode, ...]
    off_chain: tuple[OffChain, ...]

    def __len__(self) -> int:
        return len(self.layers)


def find_chain(graph: LayerGraph) -> Chain:
    gates = _gate_branches(graph)
    order = [n.index for n in graph.layers if n.index not in graph.head and n.index not in gates]
    order_set = set(order)
    preds: dict[int, list[int]] = defaultdict(list)
    for e in graph.edges:
        if not e.gated and e.src in order_set and e.dst in order_set:
            preds[e.dst].append(e.src)
    length: dict[int, int] = {}
    best_pred: dict[int, int | None] = {}
    for v in order:  # layer indices are a topological order: edges only go forward
        best = None
        for u in sorted(preds[v]):
            if best is None or length[u] > length[best]:
                best = u
        best_pred[v] = best
        length[v] = 1 + (length[best] if best is not None else 0)
    if not order:
        return Chain(graph.model, graph.extractor, (), _off_chain(graph, set(), gates))
    end = max(order, key=lambda v: (length[v], v))
    path: list[int] = []
    node: int | None = end
    while node is not None:
        path.append(node)
        node = best_pred[node]
    on_chain = set(path)
    layers = tuple(graph.layers[i] for i in reversed(path))
    return Chain(graph.model, graph.extractor, layers, _off_chain(graph, on_chain, gates))


def _numel(graph: LayerGraph, node: LayerNode) -> int:
    keys = [node.weight, node.bias, *node.norm_keys]
    return sum(prod(graph.param_shapes.get(k, ())) for k in keys if k)


def _gate_branches(graph: LayerGraph) -> set[int]:
    """Layers whose every route onward ends in a gate: squeeze-excite, ECA, attention gates."""
    succs: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for e in graph.edges:
        succs[e.src].append((e.dst, e.gated))
    gate: set[int] = set()
    for node in reversed(graph.layers):  # successors first
        out = succs[node.index]
        if out and node.index not in graph.outputs and all(g or d in gate for d, g in out):
            gate.add(node.index)
    return gate


def _off_chain(graph: LayerGraph, on_chain: set[int], gate: set[int]) -> tuple[OffChain, ...]:
    succs: dict[int, list[int]] = defaultdict(list)
    preds: dict[int, list[int]] = defaultdict(list)
    for e in graph.edges:
        succs[e.src].append(e.dst)
        preds[e.dst].append(e.src)
    result: list[OffChain] = []
    for node in graph.layers:
        i = node.index
        if i in on_chain:
            continue
        if i in graph.head:
            reason = "head"
        elif i in gate:
            reason = "gate"
        elif not succs[i] and i not in graph.outputs:
            reason = "dead-end"
        elif not any(p not in on_chain and succs[p] == [i] for p in preds[i]) and not any(
            d not in on_chain and preds[d] == [i] for d in succs[i]
        ):
            # A single layer beside the main stream (a 1x1 "downsample" projection): no
            # off-chain neighbour that exists only through it, as inside a longer branch.
            reason = "shortcut"
        else:
            reason = "branch"
        result.append(OffChain(node.path, reason, _numel(graph, node)))
    return tuple(result)


def account(graph: LayerGraph, chain: Chain) -> dict[str, str]:
    """Every state-dict key -> ``chain`` or an off-chain reason (``embedding``, ``norm``, ``buffer``...)."""
    owner: dict[str, str] = {}
    reasons = {o.path: o.reason for o in chain.off_chain}
    for node in graph.layers:
        category = reasons.get(node.path, "chain")
        for key in (node.weight, node.bias, *node.norm_keys):
            if key:
                owner[key] = category
    for _path, keys in graph.norms.items():
        for key in keys:
            owner.setdefault(key, "norm")
    layer_paths = {n.path for n in graph.layers}
    for key in graph.param_shapes:
        if key in owner:
            continue
        module = key.rsplit(".", 1)[0]
        if module in layer_paths:  # extra tensors of a layer module (e.g. a conv's buffer)
            owner[key] = reasons.get(module, "chain")
        elif key in graph.params_used:
            # Read directly by an op: per-channel scales (layer scale) or embeddings/tables.
            owner[key] = "scale" if len(graph.param_shapes[key]) <= 1 else "embedding"
        else:
            owner[key] = "unused"
    return owner
