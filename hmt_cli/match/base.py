"""What a strategy is: a pairing of layers plus the tensor ops each pair implies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..chain import Chain
from ..graph import LayerGraph, LayerNode

__all__ = ["LayerPair", "Pairing", "TensorOp", "Strategy", "SCALES"]

# What ``TensorOp.scale`` may say; ``health.rescale`` implements each. Checked when an op is made: a
# plug-in strategy's typo would otherwise write the source's magnitude without a word.
SCALES = ("none", "init_std", "init_std_up", "init_std_up_written", "layer")


@dataclass(frozen=True)
class LayerPair:
    tgt: LayerNode
    src: LayerNode | None  # None: the target layer keeps its own init
    score: float = 1.0
    note: str = ""
    role: str = "chain"  # chain | shortcut | gate | head: where the target layer sits


@dataclass(frozen=True)
class TensorOp:
    """Write ``tgt_key`` from ``src_key`` with rule ``rule`` (a name in ``reshape.RULES``).

    ``params`` are extra integer arguments of the rule (e.g. group counts). ``scale`` is applied
    after the rule: ``none`` keeps the source's magnitude; ``init_std`` rescales the result to the
    standard deviation of the target's own init of that tensor (signal health by construction);
    ``init_std_up`` matches the std but only scales up; ``init_std_up_written`` does so measuring and
    scaling only the elements the rule wrote from the source (a narrow source's slice of a wider tensor);
    ``layer`` multiplies by the factor of the measured op of the same ``tgt_layer`` (``health.rescale``).
    """

    tgt_key: str
    src_key: str
    rule: str
    tgt_shape: tuple[int, ...]
    src_shape: tuple[int, ...]
    tgt_layer: str
    src_layer: str
    params: tuple[tuple[str, int], ...] = ()
    scale: str = "none"

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ValueError(f"TensorOp {self.tgt_key}: unknown scale {self.scale!r} (one of {', '.join(SCALES)})")


@dataclass(frozen=True)
class Pairing:
    strategy: str
    pairs: tuple[LayerPair, ...]
    extra_ops: tuple[TensorOp, ...] = ()  # tensors outside any layer pair (position embeddings, tokens)
    note: str = ""  # a choice the strategy made for this pair of networks (the report shows it)


class Strategy(Protocol):
    name: str
    summary: str
    signal_policy: str  # what to do when the data-free signal check flags a layer: report | fallback

    def pair(self, src: Chain, tgt: Chain, src_graph: LayerGraph, tgt_graph: LayerGraph) -> Pairing: ...

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]: ...
