"""Where DPIAT puts each source layer: ``python -m benchmarks.peers.dpiat_map SRC TGT``.

DPIAT reports no layer mapping. To read one off, every conv/linear weight of the source is filled with a
distinct marker value (1000 + its index), DPIAT transfers that source into a seeded target, and each target
weight is searched for markers: the source layers whose values landed there. A target layer with no
marker kept its init. (The centre crop/pad rule copies values unchanged, so markers survive; a weight
that DPIAT does not write keeps timm's init, whose values are far below 999.)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch
from torch import nn

from .dpiat import dpiat_transfer

__all__ = ["MARK", "dpiat_map", "main"]

MARK = 1000.0
_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def _weighted(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, _LAYERS)]


@torch.no_grad()
def dpiat_map(source: nn.Module, target: nn.Module) -> dict[str, list[str]]:
    """Target layer -> the source layers DPIAT wrote into its weight (in source order). Modifies both."""
    names = []
    for i, (name, module) in enumerate(_weighted(source)):
        module.weight.fill_(MARK + i)
        names.append(name)
    dpiat_transfer(source.eval(), target)
    out = {}
    for name, module in _weighted(target):
        w = module.weight
        found = sorted({int(v) - int(MARK) for v in w[w >= MARK - 0.5].round().unique().tolist()})
        out[name] = [names[i] for i in found if 0 <= i < len(names)]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    import timm

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", help="timm name of the source")
    p.add_argument("tgt", help="timm name of the target")
    p.add_argument("--num-classes", type=int, default=10)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    source = timm.create_model(args.src, num_classes=args.num_classes)
    target = timm.create_model(args.tgt, num_classes=args.num_classes)
    for tgt_layer, src_layers in dpiat_map(source, target).items():
        print(f"{tgt_layer:36s} <- {', '.join(src_layers) if src_layers else '(init)'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
