"""``LayerGraph`` -> :class:`Chain`: the longest path of weight layers, and why the rest is off it.

Pure (no torch). Definition (docs/chain.md has pictures):

* Candidates are all weight layers except the classifier head, gate branches and layers computed
  from parameters alone (position MLPs).
* The length of a path is its number of weight layers; gated edges do not count, so a
  squeeze-excite branch is a dead end however long it is, and a residual shortcut loses because
  the main branch it bypasses is longer. Sibling edges put separate q/k/v on the chain in order.
* The chain ends at a layer that reaches the model output, if any does.
* Ties: among equally long predecessors the one executed first wins; among equally long
  chain ends the one executed last wins (the layer nearest the output).

Every other executed layer gets one reason, first match wins: ``head``, ``embedding``, ``gate``,
``dead-end``, ``shortcut`` (a single layer beside the chain, rejoining it by addition),
``stem-side`` (fed by the input, not by the chain), ``branch``. Modules never executed: ``unused``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from math import prod

from .graph import Edge, LayerGraph, LayerNode

__all__ = ["Chain", "OffChain", "find_chain", "account", "OFF_CHAIN_REASONS"]

OFF_CHAIN_REASONS = ("head", "embedding", "gate", "dead-end", "shortcut", "stem-side", "branch", "unused")


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


def _adjacency(
    graph: LayerGraph, ungated_only: bool = False, skip_merge: str | None = None
) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    succs: dict[int, list[int]] = defaultdict(list)
    preds: dict[int, list[int]] = defaultdict(list)
    for e in graph.edges:
        if not (ungated_only and e.gated) and e.merge != skip_merge:
            succs[e.src].append(e.dst)
            preds[e.dst].append(e.src)
    return succs, preds


def _reaches_output(graph: LayerGraph) -> set[int]:
    succs, _ = _adjacency(graph)
    reach = set(graph.outputs)
    for node in reversed(graph.layers):  # successors first: edges only go forward
        if any(d in reach for d in succs[node.index]):
            reach.add(node.index)
    return reach


def _downstream(graph: LayerGraph, sources: set[int]) -> set[int]:
    """Layers some route from ``sources`` reaches (any edge, gated or not)."""
    _, preds = _adjacency(graph)
    seen = set(sources)
    for node in graph.layers:  # predecessors first
        if any(p in seen for p in preds[node.index]):
            seen.add(node.index)
    return seen


def _gate_branches(graph: LayerGraph) -> set[int]:
    """Layers whose every route onward ends in a gate: squeeze-excite, ECA, attention gates."""
    succs: dict[int, list[tuple[int, bool]]] = defaultdict(list)
    for e in graph.edges:
        succs[e.src].append((e.dst, e.gated))
    gate: set[int] = set()
    for node in reversed(graph.layers):
        out = succs[node.index]
        if out and node.index not in graph.outputs and all(g or d in gate for d, g in out):
            gate.add(node.index)
    return gate


def _longest_path(graph: LayerGraph, candidates: list[int], ends: set[int]) -> list[int]:
    allowed = set(candidates)
    _, preds = _adjacency(graph, ungated_only=True)
    length: dict[int, int] = {}
    best_pred: dict[int, int | None] = {}
    for v in candidates:  # layer indices are a topological order
        best = None
        for u in sorted(p for p in preds[v] if p in allowed):
            if best is None or length[u] > length[best]:
                best = u
        best_pred[v] = best
        length[v] = 1 + (length[best] if best is not None else 0)
    pool = [v for v in candidates if v in ends] or candidates
    node: int | None = max(pool, key=lambda v: (length[v], v))
    path: list[int] = []
    while node is not None:
        path.append(node)
        node = best_pred[node]
    return path[::-1]


def find_chain(graph: LayerGraph) -> Chain:
    gates = _gate_branches(graph) - graph.head - graph.constant
    excluded = graph.head | graph.constant | gates
    candidates = [n.index for n in graph.layers if n.index not in excluded]
    reaching = _reaches_output(graph)
    path = _longest_path(graph, candidates, reaching) if candidates else []
    off = _off_chain(graph, set(path), gates, reaching)
    return Chain(graph.model, graph.extractor, tuple(graph.layers[i] for i in path), off)


def _numel(graph: LayerGraph, node: LayerNode) -> int:
    keys = dict.fromkeys(k for k in (node.weight, node.bias, *node.norm_keys, *node.extra_keys) if k)
    return sum(prod(graph.param_shapes.get(k, ())) for k in keys)


def _components(nodes: set[int], succs: dict[int, list[int]], preds: dict[int, list[int]]) -> list[set[int]]:
    seen: set[int] = set()
    out = []
    for start in sorted(nodes):
        if start in seen:
            continue
        part, stack = set(), [start]
        while stack:
            v = stack.pop()
            if v in part:
                continue
            part.add(v)
            stack.extend(w for w in (*succs[v], *preds[v]) if w in nodes and w not in part)
        seen |= part
        out.append(part)
    return out


def _side_reason(part: set[int], graph: LayerGraph, main: set[int], outgoing: dict[int, list[Edge]],
                 from_chain: bool) -> str:
    """Why a group of off-chain layers beside the chain (joined other than by a sum) is there."""
    exits = {e.merge for v in part for e in outgoing[v] if e.dst in main}
    exits |= {graph.output_merge.get(v, "") for v in part if v in graph.outputs}
    if len(part) == 1 and exits and exits <= {"add"}:
        return "shortcut"  # a projection (1x1 "downsample") added to the main stream
    return "branch" if from_chain else "stem-side"


def _off_chain(graph: LayerGraph, on_chain: set[int], gates: set[int], reaching: set[int]) -> tuple[OffChain, ...]:
    reasons: dict[int, str] = {}
    side: set[int] = set()
    for node in graph.layers:
        i = node.index
        if i in on_chain:
            continue
        if i in graph.head:
            reasons[i] = "head"
        elif i in graph.constant:
            reasons[i] = "embedding"
        elif i in gates:
            reasons[i] = "gate"
        elif i not in reaching:
            reasons[i] = "dead-end"
        else:
            side.add(i)
    # Layers summed into one stream are not one branch: group only by other routes.
    succs, preds = _adjacency(graph, ungated_only=True, skip_merge="add")
    from_chain = _downstream(graph, on_chain)
    outgoing: dict[int, list[Edge]] = defaultdict(list)
    for e in graph.edges:
        outgoing[e.src].append(e)
    for part in _components(side, succs, preds):
        reason = _side_reason(part, graph, on_chain | graph.head, outgoing, bool(part & from_chain))
        reasons.update(dict.fromkeys(part, reason))
    result = [OffChain(graph.layers[i].path, reasons[i], _numel(graph, graph.layers[i])) for i in sorted(reasons)]
    result += [OffChain(n.path, "unused", _numel(graph, n)) for n in graph.unused_layers]
    return tuple(result)


def _loose_category(graph: LayerGraph, key: str) -> str:
    """A tensor no layer owns: what the op that read it says about it."""
    if key in graph.buffers:
        return "buffer"
    op = graph.param_ops.get(key)
    if op is None:
        return "unused"
    if op == "rnn":
        return "recurrent"
    if op == "norm":
        return "norm"
    return "scale" if len(graph.param_shapes[key]) <= 1 else "embedding"


def account(graph: LayerGraph, chain: Chain) -> dict[str, str]:
    """Every state-dict key -> ``chain``, an off-chain reason, or norm | scale | embedding | recurrent | buffer."""
    owner: dict[str, str] = {}
    reasons = {o.path: o.reason for o in chain.off_chain}
    for node in (*graph.layers, *graph.unused_layers):
        category = reasons.get(node.path, "chain")
        for key in (node.weight, node.bias, *node.norm_keys, *node.extra_keys):
            if key and key not in graph.buffers:
                owner.setdefault(key, category)
    for keys in graph.norms.values():
        for key in keys:
            owner.setdefault(key, "buffer" if key in graph.buffers else "norm")
    layer_paths = {n.path for n in (*graph.layers, *graph.unused_layers)}
    for key in graph.param_shapes:
        if key in owner or key in graph.aliases:
            continue
        module = key.rsplit(".", 1)[0]
        if module in layer_paths and key not in graph.buffers:
            owner[key] = reasons.get(module, "chain")  # another parameter of a layer module
        else:
            owner[key] = _loose_category(graph, key)
    for key, first in graph.aliases.items():  # a tied parameter shares its first name's category
        if key in graph.param_shapes:
            owner[key] = owner.get(first, "unused")
    return owner
