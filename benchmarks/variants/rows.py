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

Registers its scale kind by wrapping ``hmt_cli.health.rescale`` (the pipeline looks it up at call time):
a variant, not a shipped rule.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from dataclasses import replace

import torch

import hmt_cli.match.base as base
from hmt_cli import health
from hmt_cli.graph import LayerGraph
from hmt_cli.match import STRATEGIES, LayerPair, TensorOp, names
from hmt_cli.match.initscale import BlockInitScaleStrategy
from hmt_cli.plan import TransferPlan

__all__ = ["BlockInitScaleRows", "ROWS"]

ROWS = "init_std_up_rows"
if ROWS not in base.SCALES:
    base.SCALES = (*base.SCALES, ROWS)
    health._MEASURES[ROWS] = health._MEASURES["init_std_up_written"]
    health._UP[ROWS] = health._UP["init_std_up_written"]
    health._WRITTEN.add(ROWS)  # so region_keys() asks apply_plan for this kind's regions too


def _rows(region: tuple[slice, ...] | None) -> tuple[slice, ...] | None:
    """The box's output channels, every input channel and kernel position."""
    return None if region is None else region[:1]


def rescale_rows(plan: TransferPlan, sizes: Mapping[str, float], state: MutableMapping[str, torch.Tensor],
                 regions: Mapping[str, tuple[slice, ...]] | None = None) -> list[str]:
    """``health.rescale``, with the ``ROWS`` ops (and their layers' followers) handled here first."""
    regions = regions or {}
    mine = {op.tgt_layer for op in plan.ops if op.scale == ROWS}
    revert: list[str] = []
    factors: dict[str, float | None] = {}
    for op in (op for op in plan.ops if op.scale == ROWS):
        out, region = state[op.tgt_key], regions.get(op.tgt_key)
        size = health._std(out if region is None else out[region])
        ok = sizes[op.tgt_key] > 0.0 and size > 0.0 and torch.isfinite(torch.tensor(size)).item()
        factor = health._up_only(sizes[op.tgt_key] / size) if ok else None
        factors[op.tgt_layer] = factor
        if factor is None:
            revert.append(op.tgt_key)
        else:
            health._multiply(out, factor, _rows(region))
    for op in (op for op in plan.ops if op.scale in health._FOLLOWERS and op.tgt_layer in mine):
        factor = factors.get(op.tgt_layer)
        if factor is None:
            revert.append(op.tgt_key)
        else:  # a bias's written region is its layer's output channels: the rows above
            health._multiply(state[op.tgt_key], factor, _rows(regions.get(op.tgt_key)))
    rest = tuple(op for op in plan.ops if op.tgt_layer not in mine or op.scale not in (ROWS, *health._FOLLOWERS))
    return revert + _ORIGINAL(replace(plan, ops=rest), sizes, state, regions)


_ORIGINAL = health.rescale
if getattr(health.rescale, "__name__", "") != "rescale_rows":
    health.rescale = rescale_rows


class BlockInitScaleRows(BlockInitScaleStrategy):
    name = "block-initscale-rows"
    summary = ("block-initscale-written's factor (measured on the source's values) applied to whole output "
               "channels: block's function, the source's values at the init's scale")

    def ops(self, pair: LayerPair, src: LayerGraph, tgt: LayerGraph) -> list[TensorOp]:
        return [replace(op, scale=ROWS) if op.scale == "init_std_up" else op for op in super().ops(pair, src, tgt)]


if BlockInitScaleRows.name not in names():
    STRATEGIES.append(BlockInitScaleRows())
