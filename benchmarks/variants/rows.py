"""``block-initscale-rows``: ``block-initscale-written``'s lift, applied to whole output channels.

``block-initscale-written`` multiplies only the box of a weight that holds source values. Where a narrow
source is centre-padded along the *input* axis, an output channel then sums lifted source weights and
unlifted init weights, so the lift changes the function the target starts from, not only its effective
learning rate: measured on a noise batch in training mode (arm 1's trained resnet18, pre-logit features
against ``block``'s), ``block-initscale`` keeps the function (cosine 1.000 on all four targets it lifts)
and ``-written`` does not (cosine 0.30 efficientnet_b0, 0.38 mobilenetv3_large_100, 0.71 regnety_016,
0.95 resnet50). This variant separates the two effects: the factor is measured on the source's values
(as ``-written``) and applied to every output channel that holds any (the whole row of the box, init
columns included), with the bias alike. A BatchNorm behind the layer divides a per-channel factor out,
so the start computes ``block``'s function, with the source's values at the init's scale.

Exploratory (2026-11-28): tried after seeing ``-written`` gain +9.4 over ``block-initscale`` on arm-1
efficientnet_b0 and lose 1.2 on regnety_016 (docs/quality.md). Measured on arm 1 (trained CPU source,
protocol settings on the CPU, seeds 0-5; ``benchmarks/results/quality-full-cpu/more-seeds-2026-11-28/``):
efficientnet_b0 38.8 (``block-initscale`` 33.0, ``-written`` 42.4), mobilenetv3_large_100 44.9 (49.8,
50.5), regnety_016 48.5 (50.2, 49.1). It keeps part of ``-written``'s efficientnet gain, loses on
mobilenetv3, and costs regnety_016 as much as ``-written`` does: that loss is the slice's lift, not the
changed function. Not adopted.

It registers its scale kind in ``hmt_cli``'s private tables (a variant, not a shipped rule): measured as
``init_std_up_written``, applied through ``health._APPLIED`` to the rows of the measured box. A layer's
bias follows on its own written region, which is those output channels already.
"""

from __future__ import annotations

from dataclasses import replace

import hmt_cli.match.base as base
from hmt_cli import health
from hmt_cli.graph import LayerGraph
from hmt_cli.match import STRATEGIES, LayerPair, TensorOp, names
from hmt_cli.match.initscale import BlockInitScaleStrategy

__all__ = ["BlockInitScaleRows", "ROWS"]

ROWS = "init_std_up_rows"
if ROWS not in base.SCALES:
    base.SCALES = (*base.SCALES, ROWS)
    health._MEASURES[ROWS] = health._MEASURES["init_std_up_written"]
    health._UP[ROWS] = health._UP["init_std_up_written"]
    health._WRITTEN.add(ROWS)  # measured on the source's values; region_keys() asks apply_plan for them
    health._APPLIED[ROWS] = lambda region: region[:1]  # the box's output channels, every input and tap


class BlockInitScaleRows(BlockInitScaleStrategy):
    name = "block-initscale-rows"
    summary = ("block-initscale-written's factor (measured on the source's values) applied to whole output "
               "channels: block's function, the source's values at the init's scale")

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        return [replace(op, scale=ROWS) if op.scale == "init_std_up" else op for op in super().ops(pair, src, tgt)]


if BlockInitScaleRows.name not in names():
    STRATEGIES.append(BlockInitScaleRows())
