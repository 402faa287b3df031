"""Draw how each strategy pairs source and target chain layers (needs the `bench` extra).

    python docs/figures/make_pairing.py resnet50 mobilenetv3_large_100 docs/figures/pairing.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from hmt_cli.match import get_strategy
from hmt_cli.match.block import CLOSING_NOTE
from hmt_cli.pipeline import analyze
from hmt_cli.plan import make_plan

# `centre` pairs exactly as `stage` does; `block` is the default.
STRATEGIES = ("paper", "stage", "block")
KIND_MARK = {"conv": "s", "depthwise": "D", "grouped": "h", "linear": "o"}


def _column(ax: plt.Axes, x: float, layers: list, levels: list[int]) -> None:
    cmap = plt.get_cmap("viridis", max(len(levels), 2))
    for i, node in enumerate(layers):
        ax.scatter(x, -i, marker=KIND_MARK[node.kind], color=cmap(levels.index(node.reduction)), s=28, zorder=3)


def draw(src_name: str, tgt_name: str, out: Path) -> None:
    src, tgt = analyze(src_name), analyze(tgt_name)
    fig, axes = plt.subplots(1, 3, figsize=(16, 12), sharey=True)
    for ax, strategy in zip(axes, STRATEGIES, strict=True):
        plan = make_plan(get_strategy(strategy), src.graph, src.chain, tgt.graph, tgt.chain)
        s_index = {n.path: i for i, n in enumerate(src.chain.layers)}
        for i, pair in enumerate(p for p in plan.pairs if p.role == "chain"):
            if pair.src is not None and pair.src.path in s_index:
                closing = pair.note == CLOSING_NOTE  # block: a residual's closing layer from a closing layer
                ax.plot([0, 1], [-s_index[pair.src.path], -i], color="tab:red" if closing else "0.6", lw=0.8,
                        zorder=2 if closing else 1)
        src_levels = sorted({n.reduction for n in src.chain.layers})
        tgt_levels = sorted({n.reduction for n in tgt.chain.layers})
        _column(ax, 0, list(src.chain.layers), src_levels)
        _column(ax, 1, list(tgt.chain.layers), tgt_levels)
        written = sum(1 for p in plan.pairs if p.role == "chain" and p.src is not None)
        ax.set_title(f"{strategy}: {written}/{len(tgt.chain)} target chain layers receive a source layer")
        ax.set_xticks([0, 1], [f"{src_name}\n({len(src.chain)} layers)", f"{tgt_name}\n({len(tgt.chain)} layers)"])
        ax.set_yticks([])
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
    fig.suptitle("chain pairing; colour = resolution stage (/2 ... /32), marker = kind "
                 "(square conv, diamond depthwise, hexagon grouped, circle linear); "
                 "red = a residual branch's closing layer from the source's", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


if __name__ == "__main__":
    draw(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
