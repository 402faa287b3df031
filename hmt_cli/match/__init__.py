"""Strategy plug-ins. Add one: a class with ``name``, ``summary``, ``pair`` and ``ops`` in its own
file, then list an instance in :data:`STRATEGIES`. No entry points, no import-time magic."""

from __future__ import annotations

from ..errors import UsageError
from .base import LayerPair, Pairing, Strategy, TensorOp
from .block import BlockStrategy
from .centre import CentreStrategy
from .initscale import BlockInitScaleStrategy, BlockInitScaleWrittenStrategy
from .isolate import BlockInitScaleAutoStrategy, BlockInitScaleIsolateStrategy
from .paper import PaperStrategy
from .stage import StageStrategy

__all__ = ["STRATEGIES", "get_strategy", "names", "LayerPair", "Pairing", "Strategy", "TensorOp"]

STRATEGIES: list[Strategy] = [
    PaperStrategy(), StageStrategy(), CentreStrategy(), BlockStrategy(), BlockInitScaleStrategy(),
    BlockInitScaleWrittenStrategy(), BlockInitScaleIsolateStrategy(), BlockInitScaleAutoStrategy(),
]


def names() -> list[str]:
    return [s.name for s in STRATEGIES]


def get_strategy(name: str) -> Strategy:
    for strategy in STRATEGIES:
        if strategy.name == name:
            return strategy
    raise UsageError(f"unknown strategy {name!r}; choose one of: {', '.join(names())}")
