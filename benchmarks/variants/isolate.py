"""``block-isolate``: ``block`` with ``block-initscale-isolate``'s rule, without the lift.

``block-initscale-isolate`` (``hmt_cli/match/isolate.py``) writes a narrower source as a sub-network of the
target: the output channels holding source values read only source channels (``centre``'s ``isolate=1``).
This variant applies the same rule to ``block``'s plan, to tell the isolation's share from the lift's.

Exploratory (2026-11-28), the lead recorded in docs/quality.md after the ceiling measurement, measured
together with ``block-initscale-isolate`` on arm 2's three rows where the default is level with scratch
(CPU seeds 0-5; ``benchmarks/results/quality-full-cpu/isolate-2026-11-28/``): efficientnet_b0 CIFAR-10
20.5 (``block-initscale-isolate`` 22.1), Fashion-MNIST 63.0 (62.1), regnety_016 Fashion-MNIST 75.7 (75.5):
+3.0, +8.3 and +0.4 over scratch. Not measured on arm 1, so not shipped.

Both were first measured through this module's own copy of the rule (a ``centre_isolate`` rule added to
``hmt_cli.reshape``'s tables); the shipped ``isolate`` parameter writes the same tensors bit for bit
(efficientnet_b0, regnety_016 and mobilenetv3_large_100 from the ResNet-56, checked before the copy was
removed), so the recorded runs stand.
"""

from __future__ import annotations

from hmt_cli.graph import LayerGraph
from hmt_cli.match import STRATEGIES, LayerPair, TensorOp, names
from hmt_cli.match.block import BlockStrategy
from hmt_cli.match.isolate import isolated

__all__ = ["BlockIsolate"]


class BlockIsolate(BlockStrategy):
    name = "block-isolate"
    summary = "block, each output channel holding source values reading only the source's channels and taps"

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        return isolated(super().ops(pair, src, tgt), pair.tgt.weight)


if BlockIsolate.name not in names():
    STRATEGIES.append(BlockIsolate())
