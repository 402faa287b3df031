"""``block-initscale-sqrt``: ``block-initscale`` with half the lift, in log scale (the factor's square root).

On arm 1 with the trained source (docs/quality.md), ``block-initscale``'s full lift to the init's std wins
on ``mobilenetv3_large_100`` (+9.8 over ``block``, 6 of 6 seeds) and loses on ``efficientnet_b0`` (-6.1)
and ``regnety_016`` (-2.6), while lifting only the weights more than 8x below the init kept none of the
mobilenetv3 gain. The effective learning rate ~lr / |w|^2 under ``block`` is c^2 times the target's own,
c the scale gap; under this variant it is c times: a weight 12x below the init (mobilenetv3's 90th
percentile) takes 12x the recipe's steps instead of 144x, one 1.5x below (regnety's median) 1.5x instead
of 2.3x. Exploratory: tried after seeing the two results above.

It registers its scale kind in ``hmt_cli``'s private tables (a variant, not a shipped rule: a shipped
one would be declared in ``health`` and ``match.base.SCALES``).
"""

from __future__ import annotations

from dataclasses import replace

import hmt_cli.match.base as base
from hmt_cli import health
from hmt_cli.graph import LayerGraph
from hmt_cli.match import STRATEGIES, LayerPair, TensorOp, names
from hmt_cli.match.initscale import BlockInitScaleStrategy

__all__ = ["BlockInitScaleSqrt"]

SCALE = "init_std_up_sqrt"
if SCALE not in base.SCALES:
    base.SCALES = (*base.SCALES, SCALE)
    health._MEASURES[SCALE] = health._MEASURES["init_std_up"]
    health._UP_POWER[SCALE] = 0.5


class BlockInitScaleSqrt(BlockInitScaleStrategy):
    name = "block-initscale-sqrt"
    summary = "block-initscale with the square root of its lift (effective learning rate c x, not c^2 x)"

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        return [replace(op, scale=SCALE) if op.scale == "init_std_up" else op for op in super().ops(pair, src, tgt)]


if BlockInitScaleSqrt.name not in names():
    STRATEGIES.append(BlockInitScaleSqrt())
