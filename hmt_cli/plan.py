"""Pairing + rules -> :class:`TransferPlan`: names and shapes only, JSON-ready, no tensor data.

Every op is checked against its rule's shape precondition, so a plan that validates here cannot
fail on shapes later; ops whose rule cannot apply are dropped and listed with the reason.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from math import prod
from typing import Any

from .chain import Chain
from .graph import LayerGraph, LayerNode
from .match import LayerPair, Strategy, TensorOp

__all__ = ["TransferPlan", "make_plan", "head_layers", "head_pairs"]


@dataclass(frozen=True)
class TransferPlan:
    strategy: str
    src_model: str
    tgt_model: str
    src_chain_len: int
    tgt_chain_len: int
    pairs: tuple[LayerPair, ...]
    ops: tuple[TensorOp, ...]
    skipped: tuple[tuple[str, str], ...]  # (target key, why its op was dropped)
    note: str = ""  # the strategy's choice for this pair of networks (``Pairing.note``)

    @property
    def src_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(op.src_key for op in self.ops))

    def numel_written(self) -> int:
        return sum(prod(op.tgt_shape) for op in self.ops)

    def mapping(self) -> list[dict[str, Any]]:
        """The layer mapping stored in the output's metadata: one entry per op."""
        return [
            {"tgt": op.tgt_key, "src": op.src_key, "rule": op.rule, "tgt_shape": list(op.tgt_shape),
             "src_shape": list(op.src_shape)}
            for op in self.ops
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "src_model": self.src_model,
            "tgt_model": self.tgt_model,
            "src_chain_len": self.src_chain_len,
            "tgt_chain_len": self.tgt_chain_len,
            "ops": [asdict(op) for op in self.ops],
            "skipped": [list(s) for s in self.skipped],
            "note": self.note,
        }


def _check(op: TensorOp) -> str | None:
    from .reshape import RuleError, check_rule

    try:
        check_rule(op.rule, op.src_shape, op.tgt_shape, **dict(op.params))
    except RuleError as exc:
        return str(exc)
    return None


def head_layers(graph: LayerGraph) -> list[LayerNode]:
    """The classifier head's layers in execution order."""
    return sorted((graph.layers[i] for i in graph.head), key=lambda n: n.index)


def head_pairs(src_graph: LayerGraph, tgt_graph: LayerGraph) -> tuple[LayerPair, ...]:
    """Head layer i of the target <- head layer i of the source (the caller has checked the label spaces)."""
    return tuple(LayerPair(t, s, note="classifier head (--head transfer)", role="head")
                 for t, s in zip(head_layers(tgt_graph), head_layers(src_graph), strict=False))


def make_plan(
    strategy: Strategy, src_graph: LayerGraph, src_chain: Chain, tgt_graph: LayerGraph, tgt_chain: Chain,
    head: bool = False,
) -> TransferPlan:
    """``head``: also pair the classifier heads, through the strategy's own tensor rules (its channel map
    of the last chain layer's outputs is the one the head's inputs need)."""
    pairing = strategy.pair(src_chain, tgt_chain, src_graph, tgt_graph)
    if head:
        pairing = replace(pairing, pairs=(*pairing.pairs, *head_pairs(src_graph, tgt_graph)))
    ops: list[TensorOp] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    candidates = [op for pair in pairing.pairs for op in strategy.ops(pair, src_graph, tgt_graph)]
    for op in [*candidates, *pairing.extra_ops]:
        if op.tgt_key in seen:  # a shared target tensor is written once, by its first pair
            continue
        problem = _check(op)
        if problem:
            skipped.append((op.tgt_key, problem))
            continue
        seen.add(op.tgt_key)
        ops.append(op)
    return TransferPlan(
        strategy=strategy.name,
        src_model=src_graph.model,
        tgt_model=tgt_graph.model,
        src_chain_len=len(src_chain),
        tgt_chain_len=len(tgt_chain),
        pairs=pairing.pairs,
        ops=tuple(ops),
        skipped=tuple(skipped),
        note=pairing.note,
    )
