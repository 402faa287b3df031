"""Ad-hoc (not part of hmt): is ``block-initscale-auto``'s plan ``block-initscale``'s op for op on arm 1's
13 targets (the resnet18 source), and ``block-initscale-isolate``'s on arm 2's 4 (the CIFAR ResNet-56)?
Extra timm names on the command line are checked as arm-2 targets too.

    python benchmarks/results/quality-full-cpu/auto-2026-11-28/autoeq.py > .../autoeq.txt   # from the repo root
    python benchmarks/results/quality-full-cpu/auto-2026-11-28/autoeq.py resnet10t regnetx_002 \
        > benchmarks/results/quality-full-cpu/dpiat-arm2-2026-11-28/autoeq.txt   # the width-threshold targets
"""

import sys

sys.path.insert(0, ".")

from hmt_cli.match import get_strategy
from hmt_cli.pipeline import analyze
from hmt_cli.plan import make_plan

ARM1 = ["mobilenetv3_large_100", "efficientnet_b0", "resnet50", "regnety_016", "convnext_atto",
        "vit_tiny_patch16_224", "mobilenetv3_small_100", "mobilenetv2_100", "lcnet_100", "mnasnet_100",
        "fbnetc_100", "ghostnet_100", "resnet34"]
ARM2 = ["mobilenetv3_large_100", "efficientnet_b0", "resnet50", "regnety_016", *sys.argv[1:]]


def plan(strategy, s, t):
    return make_plan(get_strategy(strategy), s.graph, s.chain, t.graph, t.chain)


for src, tgts, same in (("resnet18", ARM1, "block-initscale"),
                        ("benchmarks.cifar_resnet:resnet56", ARM2, "block-initscale-isolate")):
    s = analyze(src)
    for tgt in tgts:
        t = analyze(tgt)
        a, b = plan("block-initscale-auto", s, t), plan(same, s, t)
        ok = a.ops == b.ops and a.pairs == b.pairs and a.skipped == b.skipped
        print(f"{src.split(':')[-1]:9} -> {tgt:24} auto == {same}: {ok}  ({len(a.ops)} ops)  note: {a.note}")
