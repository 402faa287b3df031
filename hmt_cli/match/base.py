"""What a strategy is: a pairing of chain layers plus the tensor ops each pair implies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..chain import Chain
from ..graph import LayerGraph, LayerNode

__all__ = ["LayerPair", "Pairing", "TensorOp", "Strategy"]


@dataclass(frozen=True)
class LayerPair:
    tgt: LayerNode
    src: LayerNode | None  # None: the target layer keeps its own init
    score: float = 1.0
    note: str = ""


@dataclass(frozen=True)
class Pairing:
    strategy: str
    pairs: tuple[LayerPair, ...]


@dataclass(frozen=True)
class TensorOp:
    """Write ``tgt_key`` from ``src_key`` with rule ``rule`` (a name in ``reshape.RULES``)."""

    tgt_key: str
    src_key: str
    rule: str
    tgt_shape: tuple[int, ...]
    src_shape: tuple[int, ...]
    tgt_layer: str
    src_layer: str


class Strategy(Protocol):
    name: str
    summary: str

    def pair(self, src: Chain, tgt: Chain) -> Pairing: ...

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]: ...
